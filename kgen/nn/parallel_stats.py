"""What a data-parallel training step costs each rank, worked out from the model's
parameters and the step's programs, without running one (`kgen stats MODEL --train
--world-size K [--zero]`): the bytes a rank sends per step, the collectives, and the
launches, beside the one-process step's figures.

A data-parallel step cannot fuse the optimizer's updates into the kernels that produce the
gradients (each update needs the gradient summed over the ranks first), so it is: the
forward and backward kernels, writing every gradient, then per bucket of gradients one
collective and the bucket's update launches. The launches and buckets are the real step's:
`figures` builds kgen.nn.distributed.DataParallelStep as train_step does under a process
group (`nn.train.data_parallel_step`, here with none: the programs do not depend on the
number of ranks) and counts its programs' launches and its buckets; the bytes sent are a
ring's, worked out from the gradients' sizes (`data_parallel_stats`).
"""
from __future__ import annotations

from dataclasses import dataclass

from kgen.errors import OptionError
from kgen.lowering.stats import program_stats
from kgen.nn.distributed import BUCKET_BYTES
from kgen.nn.train import data_parallel_step


@dataclass(frozen=True)
class Gradient:
    """One parameter's gradient as the ranks exchange it (the parameter's shape and dtype)."""
    name: str
    bytes: int
    dtype: str


def gradients_of(model) -> list:
    """A Gradient per trainable parameter of `model`, in parameter order."""
    return [Gradient(name, _numel(p.shape) * max(1, p.dtype.bits // 8), p.dtype.name)
            for name, p in model.named_parameters()]


def _numel(shape) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count


def data_parallel_stats(gradients: list, world_size: int, step_launches: int, launches: list, buckets: int,
                        zero: bool = False, bucket_bytes: int = BUCKET_BYTES) -> dict:
    """Per rank per step, for `world_size` K ranks each running the step on its own batch:

        G    gradient bytes (sum over `gradients`); P parameter bytes, equal to G (a
             gradient has its parameter's shape and dtype)
        B    `buckets`, the gradient buckets of the step (caps of `bucket_bytes`)
        sent ring all-reduce of each bucket (reduce-scatter, then all-gather, each K-1
             steps of a K-th of the bucket): 2 (K-1)/K G;
             ZeRO-1 (`zero`; each rank keeps a K-th of the optimizer state): reduce-scatter
             of the gradients (K-1)/K G, then all-gather of the updated parameters
             (K-1)/K P, the same total as the all-reduce
        collectives B all-reduces; ZeRO-1: B reduce-scatters and B all-gathers
        launches the sum of `launches`, the step's programs' launches: the forward and
             backward kernels writing the gradients first, then the update programs (one per
             bucket, run once its collective is done; ZeRO-1: on the rank's shard of it);
             collectives are counted apart

    With K = 1 nothing is sent and the step is the one-process step: `step_launches`, the
    updates fused into the gradient kernels. Bytes are rounded down to whole bytes."""
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise OptionError(f"data_parallel_stats: world_size: expected a positive integer (ranks), got {world_size!r}")
    k, grad_bytes = world_size, sum(g.bytes for g in gradients)
    if k == 1:
        return {"world_size": 1, "zero": zero, "gradient_bytes": grad_bytes, "parameter_bytes": grad_bytes,
                "buckets": 0, "bucket_bytes": bucket_bytes, "collectives": 0, "bytes_sent": 0,
                "launches": step_launches, "gradient_launches": step_launches, "update_launches": 0}
    if zero:
        sent = (k - 1) * grad_bytes // k + (k - 1) * grad_bytes // k
    else:
        sent = 2 * (k - 1) * grad_bytes // k
    return {"world_size": k, "zero": zero, "gradient_bytes": grad_bytes, "parameter_bytes": grad_bytes,
            "buckets": buckets, "bucket_bytes": bucket_bytes, "collectives": buckets * (2 if zero else 1),
            "bytes_sent": sent, "launches": sum(launches), "gradient_launches": launches[0],
            "update_launches": sum(launches[1:])}


def figures(model, loss_fn, make_optimizer, x_example, y_example, world_size: int, step_launches: int, sizes: dict,
            zero=(False,), bucket_bytes: int = BUCKET_BYTES) -> list:
    """data_parallel_stats for `model` trained on batches like `x_example`, `y_example` with
    the optimizer make_optimizer(parameters) makes, once per setting of `zero`, from the
    data-parallel step train_step builds (built for more than one rank only, each with an
    optimizer of its own: a ZeRO-1 step takes its optimizer's state)."""
    gradients = gradients_of(model)
    rows = []
    for z in zero:
        if world_size == 1:
            rows.append(data_parallel_stats(gradients, 1, step_launches, [step_launches], 0, z, bucket_bytes))
            continue
        step = data_parallel_step(model, loss_fn, make_optimizer(model.parameters()), x_example, y_example,
                                  shard_optimizer=z, bucket_bytes=bucket_bytes)
        launches = [program_stats(p, sizes)["launches"] for p in step.programs]
        rows.append(data_parallel_stats(gradients, world_size, step_launches, launches, len(step.buckets), z,
                                        bucket_bytes))
    return rows
