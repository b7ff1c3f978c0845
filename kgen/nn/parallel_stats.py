"""What a data-parallel training step costs each rank, worked out from the model's
parameters and its gradient program, without running one (`kgen stats MODEL --train
--world-size K [--zero]`): the bytes a rank sends per step, the collectives, and the
launches, beside the one-process step's figures.

A data-parallel step cannot fuse the optimizer's updates into the kernels that produce the
gradients (each update needs the gradient summed over the ranks first), so it is: the
forward and backward kernels, writing every gradient (`gradient_function`, compiled, its
launches counted), then per bucket of gradients one collective and one update launch.
`data_parallel_stats` takes the forward-and-backward launch count as an argument, so a
data-parallel program that is really built (kgen/nn/distributed.py) can hand in its own.
"""
from __future__ import annotations

from dataclasses import dataclass

from kgen.errors import OptionError
from kgen.function import function
from kgen.ir.autodiff import grad
from kgen.lowering.stats import program_stats
from kgen.nn.train import _inputs

DDP_BUCKET_BYTES = 25 * 1024 * 1024  # torch DDP's default bucket_cap_mb: 25 MiB


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


def buckets(gradients: list, cap: int = DDP_BUCKET_BYTES) -> list:
    """The gradients (their names) in buckets, one collective each, filled as torch DDP fills
    them: in reverse parameter order (the order the backward pass produces them), one dtype
    per bucket, a bucket closed once it holds `cap` bytes or more (so it may pass the cap by
    its last gradient, and a gradient larger than the cap fills one alone). DDP's smaller
    first bucket (1 MiB) and its rebuild by the order gradients arrived in are left out."""
    done, open_ = [], {}  # dtype -> (names, bytes)
    for g in reversed(gradients):
        names, size = open_.get(g.dtype, ([], 0))
        names, size = names + [g.name], size + g.bytes
        if size >= cap:
            done.append(names)
            open_.pop(g.dtype, None)
        else:
            open_[g.dtype] = (names, size)
    return done + [names for names, _ in open_.values()]


def data_parallel_stats(gradients: list, world_size: int, step_launches: int, gradient_launches: int,
                        zero: bool = False, bucket_bytes: int = DDP_BUCKET_BYTES) -> dict:
    """Per rank per step, for `world_size` K ranks each running the step on its own batch:

        G    gradient bytes (sum over `gradients`); P parameter bytes, equal to G (a
             gradient has its parameter's shape and dtype)
        B    buckets (`buckets`, caps of `bucket_bytes`)
        sent ring all-reduce of each bucket (reduce-scatter, then all-gather, each K-1
             steps of a K-th of the bucket): 2 (K-1)/K G;
             ZeRO-1 (`zero`; each rank keeps a K-th of the optimizer state): reduce-scatter
             of the gradients (K-1)/K G, then all-gather of the updated parameters
             (K-1)/K P, the same total as the all-reduce
        collectives B all-reduces; ZeRO-1: B reduce-scatters and B all-gathers
        launches `gradient_launches` (the forward and backward kernels writing the
             gradients) + B (an update launch per bucket, once its collective is done; ZeRO-1:
             on the rank's shard of it); collectives are counted apart

    With K = 1 nothing is sent and the step is the one-process step: `step_launches`, the
    updates fused into the gradient kernels. Bytes are rounded down to whole bytes."""
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise OptionError(f"data_parallel_stats: world_size: expected a positive integer (ranks), got {world_size!r}")
    k, grad_bytes = world_size, sum(g.bytes for g in gradients)
    groups = buckets(gradients, bucket_bytes)
    if k == 1:
        return {"world_size": 1, "zero": zero, "gradient_bytes": grad_bytes, "parameter_bytes": grad_bytes,
                "buckets": 0, "bucket_bytes": bucket_bytes, "collectives": 0, "bytes_sent": 0,
                "launches": step_launches, "gradient_launches": gradient_launches, "update_launches": 0}
    if zero:
        sent = (k - 1) * grad_bytes // k + (k - 1) * grad_bytes // k
    else:
        sent = 2 * (k - 1) * grad_bytes // k
    return {"world_size": k, "zero": zero, "gradient_bytes": grad_bytes, "parameter_bytes": grad_bytes,
            "buckets": len(groups), "bucket_bytes": bucket_bytes, "collectives": len(groups) * (2 if zero else 1),
            "bytes_sent": sent, "launches": gradient_launches + len(groups), "gradient_launches": gradient_launches,
            "update_launches": len(groups)}


def gradient_function(model, loss_fn, x_example, y_example):
    """The forward and backward half of a data-parallel step: a compiled step(x, y) ->
    [loss, *gradients] (one per parameter, in parameter order) with the model's own state
    updates (batch norm's statistics) and no optimizer updates."""
    x, y = _inputs(x_example, y_example)
    model.train()
    loss = loss_fn(model(x), y)
    return function([x, y], [loss] + list(grad(loss, model.parameters())), updates=model.state_updates())


def figures(model, loss_fn, x_example, y_example, world_size: int, step_launches: int, sizes: dict,
            zero=(False,)) -> list:
    """data_parallel_stats for `model` trained on batches like `x_example`, `y_example`,
    once per setting of `zero`, its forward and backward launches counted on its compiled
    gradient_function (compiled only for more than one rank)."""
    gradients = gradients_of(model)
    launches = step_launches
    if world_size > 1:
        launches = program_stats(gradient_function(model, loss_fn, x_example, y_example).program, sizes)["launches"]
    return [data_parallel_stats(gradients, world_size, step_launches, launches, z) for z in zero]
