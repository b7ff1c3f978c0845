"""Data-parallel training steps on torch.distributed (NCCL on GPUs, gloo on CPUs).

A single-process training step is one program: the optimizer's update runs in the epilogue of
the kernel producing each gradient, so gradients never reach memory. Data parallelism needs
them in memory, averaged over the ranks, before any update; so with a process group the step
splits at the gradients into two programs:

1. forward + backward, whose outputs are the loss, the metrics and the gradients of
   `loss * n` (n: this rank's samples, a scalar input). The gradients are written straight
   into flat buckets: each gradient output is given a view of its bucket as its output
   tensor (`Program.run(out=...)`), so the backward kernels write the bucket, no copy. A
   bucket (torch DDP's 25 MiB by default) holds the gradients in the order the kernels
   finish them, and its all-reduce (a sum, async) is issued right after the launch that
   finishes its last gradient (`Program.run(after_launch=...)`): on a GPU the collective runs
   on the communicator's own stream while the rest of the backward runs.
2. the update: the summed buckets in, each gradient a view of its bucket times 1/N (N the
   global batch's samples, the sum of the ranks' n: a scalar input, so a short or empty shard
   still gives the exact global mean), the optimizer's updates applied in place. Its
   pointwise kernels, independent, share one launch (DESIGN.md L1).

Loss and metrics: each rank's means weighted by its n, summed in one small all-reduce, over N.

With `shard_optimizer` (ZeRO stage 1) the parameters, the gradients and each per-parameter
optimizer state are laid out in one flat vector each, padded to world * S; the parameters
and the optimizer's own state tensors become views of them. The gradient vector is
reduce-scattered (gloo and NCCL both have it), each rank runs the update over its shard of
S elements (one pointwise kernel: one launch), and the parameters are all-gathered in place.
The optimizer's state outside a rank's shard is stale until `gather_state()` all-gathers it
(fit does at each epoch's end, before checkpoints are written). Every rank still holds the
full-size state buffers, which checkpoints read: the state is sharded in work, not memory.

Without a process group (or with one rank) nothing here runs: `nn.train_step` compiles the
single program it always did, with its launch counts.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import io
import os

import numpy as np
import torch
import torch.distributed as dist

from kgen import ops
from kgen.errors import DistributedError, OptionError
from kgen.function import SharedVariable, function, shared, tensor
from kgen.ir.autodiff import grad
from kgen.kernels.inputs import check_finite_on

BUCKET_BYTES = 25 * 2 ** 20  # torch DDP's bucket_cap_mb
TIMEOUT_S = 600  # `kgen train --nproc`'s group: a rank that fails makes the others fail within it


# --- the process group -----------------------------------------------------------------------
def group_of(process_group=None):
    """The group a step averages over: `process_group`, else the default group when one is
    initialised; None when there is none or it has one rank (the single-process step)."""
    if not dist.is_available() or not dist.is_initialized():
        if process_group is not None:
            raise OptionError("process_group: torch.distributed is not initialised; call "
                              "torch.distributed.init_process_group first (torchrun does it for its workers)")
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def rank_and_world(group) -> tuple:
    return (0, 1) if group is None else (dist.get_rank(group), dist.get_world_size(group))


def is_main() -> bool:
    """Whether this process prints, plots and writes files: rank 0, or no process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def quiet_unless_main():
    """A context in which print() on ranks other than 0 goes nowhere."""
    return contextlib.nullcontext() if is_main() else contextlib.redirect_stdout(io.StringIO())


def shard_bounds(n: int, rank: int, world: int) -> tuple:
    """Rank `rank`'s part [lo, hi) of n samples: contiguous, sizes differing by at most one,
    so the ranks' parts of a global batch are that batch in order."""
    return n * rank // world, n * (rank + 1) // world


def init_from_env(timeout_s: float = TIMEOUT_S) -> None:
    """Join the group torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) describes:
    NCCL with GPUs (each local rank on its own), gloo without."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))


def leave() -> None:
    """Leave the group `init_from_env` joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, entry, *args) -> dict:
    """Run entry(*args) in `nproc` local worker processes through torchrun's machinery (the
    elastic agent, a c10d rendezvous on a free local port, no restarts); each joins the group
    with `init_from_env` itself. Returns rank -> entry's return value; a worker's failure is a
    DistributedError naming it."""
    # at call time: the elastic launcher is only needed here
    import uuid
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"kgen-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        return elastic_launch(config, entry)(*args)
    except ChildFailedError as e:
        failures = "; ".join(f"rank {rank}: {failure.message or f'exit code {failure.exitcode}'}"
                             for rank, failure in sorted(e.failures.items()))
        raise DistributedError(f"data-parallel training in {nproc} processes failed: {failures}") from None


# --- flat layouts ----------------------------------------------------------------------------
class Flat:
    """Shared variables laid out one after another in one flat buffer (padded to `size`), each
    variable's value a view of its part. A variable given a new tensor since (set_value, a
    checkpoint load, a program that did not write in place) is copied back in and made a
    view again by `relink`, so the buffer always holds the values."""

    def __init__(self, variables, size: int = None, device=None):
        self.variables = list(variables)
        dtypes_ = {v.dtype for v in self.variables}
        if len(dtypes_) != 1:
            raise OptionError(f"data-parallel step: a flat buffer holds one dtype, got {sorted(map(str, dtypes_))}")
        self.dtype = self.variables[0].dtype
        self.offsets, total = [], 0
        for v in self.variables:
            self.offsets.append(total)
            total += _numel(v)
        self.used = total
        self.buffer = torch.zeros(size or total, dtype=self.dtype.torch, device=device or self.variables[0].value.device)
        self.relink()

    def view(self, k: int) -> torch.Tensor:
        v = self.variables[k]
        return self.buffer[self.offsets[k]:self.offsets[k] + _numel(v)].view(v.shape)

    def relink(self) -> None:
        for k, var in enumerate(self.variables):
            view = self.view(k)
            if var.value.data_ptr() != view.data_ptr() or var.value.device != view.device:
                view.copy_(var.value)
                object.__setattr__(var, "_value", view)


def _numel(var) -> int:
    return int(np.prod(var.shape, dtype=np.int64))


def _buckets(params, finished_at: list, bucket_bytes: int) -> list:
    """Lists of parameter indices, in the order their gradients are finished (by launch),
    each list of one dtype and at most `bucket_bytes` (a larger gradient is a bucket alone)."""
    order = sorted(range(len(params)), key=lambda i: (finished_at[i], i))
    buckets, current, size = [], [], 0
    for i in order:
        nbytes = _numel(params[i]) * params[i].dtype.bits // 8
        if current and (size + nbytes > bucket_bytes or params[i].dtype != params[current[0]].dtype):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    return buckets + ([current] if current else [])


# --- the step ----------------------------------------------------------------------------------
class DataParallelStep:
    """step(x, y) -> [loss, *metrics], the means over every rank's samples, after one
    averaged optimizer step on every rank (see the module's docstring). `samples` is the
    global batch's size of the last call."""

    def __init__(self, inputs, loss, outputs, optimizer, state_updates, group, shard_optimizer: bool = False,
                 bucket_bytes: int = None):
        self.group, self.optimizer = group, optimizer
        self.rank, self.world = rank_and_world(group)
        self.sharded = bool(shard_optimizer)
        params = optimizer.params
        if self.sharded and optimizer.clip_grad_norm is not None:
            raise OptionError("shard_optimizer: clip_grad_norm needs the norm over every gradient, and each rank "
                              "holds a shard of them; train without sharding to clip")
        count = tensor("rank_samples", (), "float32")
        grads = grad(loss * count, params)
        self.gradients = function(list(inputs) + [count], list(outputs) + list(grads), updates=state_updates)
        self.n_outputs = len(outputs)
        program = self.gradients.program
        grad_nodes = program.graph.outputs[self.n_outputs:]
        end = len(program.kernels)  # after the run: Program.run copies an output no kernel writes into its view
        finished_at = [max((i for i, k in enumerate(program.kernels) for p in k.params
                            if p.kind == "out" and p.node is node), default=end) for node in grad_nodes]
        seen = set()
        for i, node in enumerate(grad_nodes):  # one node, two parameters: the second is copied after the run
            finished_at[i] = end if node in seen else finished_at[i]
            seen.add(node)
        if self.sharded:
            self._build_sharded(params)
        else:
            self._build_buckets(params, finished_at, bucket_bytes or BUCKET_BYTES)
        self.samples = 0

    @property
    def program(self):
        """The forward and backward program (what a caller reads class labels from)."""
        return self.gradients.program

    @property
    def programs(self) -> list:
        return [self.gradients.program, self.update.program]

    @property
    def kernels(self) -> list:
        return [k for p in self.programs for k in p.kernels]

    @property
    def bytes_reduced(self) -> int:
        """Bytes each rank sends into collectives per step (gradients, then the ZeRO
        all-gather of parameters, then the loss and metrics)."""
        grads = sum(b.numel() * b.element_size() for b in self.buckets)
        gathered = self.flat_params.buffer.numel() * self.flat_params.buffer.element_size() if self.sharded else 0
        return grads + gathered + 8 * (1 + self.n_outputs)

    # --- building ----------------------------------------------------------------------------
    def _build_buckets(self, params, finished_at, bucket_bytes) -> None:
        self.layout = _buckets(params, finished_at, bucket_bytes)
        self.flats = [Flat([_scratch(params[i]) for i in members]) for members in self.layout]
        self.buckets = [f.buffer for f in self.flats]
        self.ready_at = [max(finished_at[i] for i in members) for members in self.layout]
        bucket_inputs = [tensor(f"bucket{k}", (f.used,), f.dtype) for k, f in enumerate(self.flats)]
        scale = tensor("inverse_samples", (), "float32")
        grads = [None] * len(params)
        for members, flat, bucket in zip(self.layout, self.flats, bucket_inputs):
            for k, i in enumerate(members):
                part = ops.getitem(bucket, slice(flat.offsets[k], flat.offsets[k] + _numel(params[i])))
                grads[i] = ops.reshape(part, params[i].shape) * scale
        self.update = function(bucket_inputs + [scale], None, updates=self.optimizer.updates(grads))

    def _build_sharded(self, params) -> None:
        total = sum(_numel(p) for p in params)
        self.shard = -(-total // self.world)
        size = self.shard * self.world
        self.layout = [list(range(len(params)))]
        self.flat_params = Flat(params, size)
        self.flats = [Flat([_scratch(p) for p in params], size)]
        self.buckets = [self.flats[0].buffer]
        self.ready_at = [None]  # reduce-scattered after the run
        lo, hi = self.rank * self.shard, (self.rank + 1) * self.shard
        self.grad_shard = torch.zeros(self.shard, dtype=self.flat_params.dtype.torch,
                                      device=self.flat_params.buffer.device)
        local = copy.copy(self.optimizer)  # shares the hyper-parameters' device scalars and the step count
        local.params = [_view_variable("zero_params", self.flat_params.buffer[lo:hi])]
        self.flat_state, self.local_state = {}, []
        for attr, value in vars(self.optimizer).items():
            if attr != "params" and _per_parameter(value, params):
                flat = Flat(value, size)
                self.flat_state[attr] = flat
                piece = _view_variable(f"zero_{attr}", flat.buffer[lo:hi])
                setattr(local, attr, [piece])
                self.local_state.append((flat, piece, lo))
        self.local_params = local.params[0]
        grad_input = tensor("grad_shard", (self.shard,), self.flat_params.dtype)
        scale = tensor("inverse_samples", (), "float32")
        self.update = function([grad_input, scale], None, updates=local.updates([grad_input * scale]))

    # --- running -----------------------------------------------------------------------------
    def __call__(self, *args):
        n = len(args[0])
        if self.sharded:
            self.flat_params.relink()
            for flat in self.flat_state.values():
                flat.relink()
        works = []
        if n:
            out = {}
            grad_nodes = self.program.graph.outputs[self.n_outputs:]
            for members, flat in zip(self.layout, self.flats):
                for k, i in enumerate(members):
                    out.setdefault(grad_nodes[i], flat.view(k))
            issue = {at: k for k, at in enumerate(self.ready_at) if at is not None}
            started = set()

            def after_launch(i):
                k = issue.get(i)
                if k is not None:
                    works.append(self._reduce(k))
                    started.add(k)
            values = _call(self.gradients, list(args) + [np.float32(n)], out, after_launch)[:self.n_outputs]
            for members, flat in zip(self.layout, self.flats):  # a gradient node shared by two parameters
                for k, i in enumerate(members):
                    if out[grad_nodes[i]].data_ptr() != flat.view(k).data_ptr():
                        flat.view(k).copy_(out[grad_nodes[i]])
            rest = [k for k in range(len(self.buckets)) if k not in started]
        else:  # an empty shard (a global batch smaller than the group): it adds zeros
            for b in self.buckets:
                b.zero_()
            values = [torch.zeros((), dtype=torch.float32) for _ in range(self.n_outputs)]
            rest = range(len(self.buckets))
        works += [self._reduce(k) for k in rest]
        stats = torch.tensor([float(n)] + [float(v) * n for v in values], dtype=torch.float64)
        stats = stats.to(self.buckets[0].device)
        works.append(self._collective("the loss and metrics", dist.all_reduce, stats))
        self._wait(works)
        stats = stats.cpu()
        self.samples = int(stats[0])
        scale = torch.tensor(1.0 / self.samples, dtype=torch.float32, device=self.buckets[0].device)
        if self.sharded:
            _call(self.update, [self.grad_shard, scale])
            self._relink_local()
            self._wait([self._collective("the parameters", dist.all_gather_single, self.flat_params.buffer,
                                         self.local_params.value)])
        else:
            _call(self.update, [f.buffer[:f.used] for f in self.flats] + [scale])
        return [torch.tensor(float(s) / self.samples, dtype=torch.float32) for s in stats[1:]]

    def _reduce(self, k: int):
        if self.sharded:
            return self._collective("the gradients", dist.reduce_scatter_single, self.grad_shard, self.buckets[k])
        return self._collective(f"gradient bucket {k}", dist.all_reduce, self.buckets[k])

    def _relink_local(self) -> None:
        """The shard's parameters and state are views of the flat buffers; an update that did
        not write in place gave them new tensors, copied back here."""
        lo, hi = self.rank * self.shard, (self.rank + 1) * self.shard
        pairs = [(self.flat_params, self.local_params)] + [(flat, piece) for flat, piece, _ in self.local_state]
        for flat, var in pairs:
            view = flat.buffer[lo:hi]
            if var.value.data_ptr() != view.data_ptr():
                view.copy_(var.value)
                object.__setattr__(var, "_value", view)

    def gather_state(self) -> None:
        """With shard_optimizer: make every rank's optimizer state whole (all-gather each
        state's shards), as checkpoints read it. Every rank must call it."""
        if not self.sharded:
            return
        lo, hi = self.rank * self.shard, (self.rank + 1) * self.shard
        for attr, flat in self.flat_state.items():
            flat.relink()
            self._wait([self._collective(f"the optimizer's {attr}", dist.all_gather_single, flat.buffer,
                                         flat.buffer[lo:hi])])

    def _collective(self, what: str, collective, *args):
        return _collective(self.group, "data-parallel step", what, collective, *args)

    def _wait(self, works) -> None:
        _wait(self.group, works)


def _collective(group, where: str, what: str, collective, *args) -> tuple:
    """((where, what), the work handle) of collective(*args) started async on `group`; a
    failure is a DistributedError."""
    try:
        return (where, what), collective(*args, group=group, async_op=True)
    except (RuntimeError, ValueError) as e:
        raise _failure(group, (where, what), e) from None


def _wait(group, works) -> None:
    for label, work in works:
        try:
            work.wait()
        except (RuntimeError, ValueError) as e:
            raise _failure(group, label, e) from None


def _failure(group, label: tuple, error) -> DistributedError:
    (where, what), (rank, world) = label, rank_and_world(group)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DistributedError(f"{where} on rank {rank} of {world}: exchanging {what} failed: another rank failed, or "
                            f"did not answer within the process group's timeout ({first})")


def all_reduce_on_host(values: torch.Tensor, group, where: str, what: str) -> None:
    """Sum the small CPU tensor `values` over the ranks, in place (through the GPU for NCCL)."""
    device = torch.device("cuda") if dist.get_backend(group) == "nccl" else values.device
    moved = values.to(device)
    _wait(group, [_collective(group, where, what, dist.all_reduce, moved)])
    values.copy_(moved.cpu())


def _scratch(var) -> SharedVariable:
    """A placeholder variable of `var`'s shape and dtype, for a Flat of gradients."""
    return shared(torch.zeros(var.shape, dtype=var.dtype.torch), name=f"{var.name}_grad", dtype=var.dtype)


def _view_variable(name: str, view: torch.Tensor) -> SharedVariable:
    var = shared(torch.zeros(view.shape, dtype=view.dtype), name=name)
    object.__setattr__(var, "_value", view)
    return var


def _per_parameter(value, params) -> bool:
    """A list of the optimizer's state, one shared value per parameter (kgen.nn.optim)."""
    return (isinstance(value, (list, tuple)) and len(value) == len(params) and len(params) > 0
            and all(isinstance(v, SharedVariable) for v in value))


def _call(fn, args, out=None, after_launch=None) -> list:
    """Run kgen Function `fn` as its __call__ does, writing outputs into `out` (node ->
    tensor) and calling `after_launch` after each kernel; returns its outputs."""
    program = fn.program
    tensors = {node: program.to_tensor(value, node) for node, value in zip(fn.inputs, args)}
    checking = check_finite_on(fn.check_finite)
    tensors.update({s: s.value.clone() if checking else s.value for s in fn.shared})
    results = program.run(tensors, check_finite=checking, out=out, after_launch=after_launch)
    for (var, _), value in zip(fn.updates, results[len(fn.outputs):]):
        object.__setattr__(var, "_value", value)
    return results[:len(fn.outputs)]


def check_shardable(shard_optimizer: bool) -> None:
    if shard_optimizer and not (dist.is_available() and dist.is_initialized()):
        raise OptionError("shard_optimizer=True shards the optimizer over a torch.distributed process group, and "
                          "none is initialised (torchrun, or torch.distributed.init_process_group, starts one)")

