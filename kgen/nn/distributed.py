"""Data-parallel training steps on torch.distributed (NCCL on GPUs, gloo on CPUs).

A single-process training step is one program: the optimizer's update runs in the epilogue of
the kernel producing each gradient, so gradients never reach memory. Data parallelism needs
them in memory, averaged over the ranks, before any update; so with a process group the step
splits at the gradients into a gradient program and update programs:

1. forward + backward, whose outputs are the loss, the metrics and the gradients of
   `loss * n` (n: this rank's samples, a scalar input). The gradients are written straight
   into flat buckets: each gradient output is given a view of its bucket as its output
   tensor (`Program.run(out=...)`), so the backward kernels write the bucket, no copy. A
   bucket (torch DDP's 25 MiB by default) holds the gradients in the order the kernels
   finish them, and its all-reduce (a sum, async) is issued right after the launch that
   finishes its last gradient (`Program.run(after_launch=...)`): on a GPU the collective runs
   on the communicator's own stream while the rest of the backward runs.
2. the updates, one program per bucket, each run as soon as its bucket is reduced (its
   work handle waited on, the later buckets still in flight): the summed bucket in, each
   gradient a view of it times 1/N (N the global batch's samples, the sum of the ranks' n,
   all-reduced before the backward starts: a scalar input, so a short or empty shard still
   gives the exact global mean), the optimizer's updates of the bucket's parameters applied
   in place. Its pointwise kernels share launches where independent (DESIGN.md L1). A state
   every part shares (Adam's step count) is written by the last one, after all have read it.
   With `clip_grad_norm` (a norm over every gradient) one update program runs after all the
   buckets are reduced.

Loss and metrics: each rank's means weighted by its n, summed in one small all-reduce, over N.

With `shard_optimizer` (ZeRO stage 1) each bucket is padded to a multiple of the world size
and reduce-scattered instead: rank r gets its piece [r*S, (r+1)*S) of the summed bucket. The
bucket's parameters are views of one flat vector of the same layout; each rank runs the
bucket's update over its piece (pointwise kernels) and the parameters are all-gathered
in place, bucket by bucket, while the next bucket's update runs. A rank holds the optimizer's
state of its pieces alone (kgen.nn.zero): 1/world of it. `gather_state()` gathers the whole
state on rank 0, into the optimizer's own state variables, where checkpoints read it (fit
calls it at each epoch's end); a checkpoint loaded into a sharded run is scattered, each rank
taking its slice, before the next step.

Without a process group (or with one rank) nothing here runs: `nn.train_step` compiles the
single program it always did, with its launch counts.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import functools
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
from kgen.nn import zero

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
class Bucket:
    """Gradients reduced together: the optimizer's parameters `members` (indices, in the order
    the backward finishes their gradients), the flat buffer `grads` the backward writes those
    gradients into, and `ready_at`, the launch after which all of them are final. With
    shard_optimizer the buffer is padded to a multiple of the world size and reduce-scattered
    into `reduced`, this rank's piece [lo, lo + piece) of it; the parameters are views of a
    flat buffer `params` of the same layout, and the optimizer's state of them is this rank's
    piece alone (`state`: attribute -> kgen.nn.zero.StateShard)."""

    def __init__(self, members, params, ready_at: int, rank: int, world: int, sharded: bool):
        self.members, self.ready_at = list(members), ready_at
        own = [params[i] for i in self.members]
        used = sum(_numel(p) for p in own)
        self.grads = Flat([_scratch(p) for p in own], -(-used // world) * world if sharded else used)
        self.state = {}
        if sharded:
            self.piece = self.grads.buffer.numel() // world
            self.lo = rank * self.piece
            self.params = Flat(own, self.grads.buffer.numel())
            self.reduced = torch.zeros(self.piece, dtype=self.grads.buffer.dtype, device=self.grads.buffer.device)
            self.local_params = _view_variable("zero_params", self.params.buffer[self.lo:self.lo + self.piece])

    @property
    def nbytes(self) -> int:
        return self.grads.buffer.numel() * self.grads.buffer.element_size()

    def relink_local(self) -> None:
        """This rank's parameters are a view of the flat buffer the all-gather fills; an update
        that did not write in place gave them a new tensor, copied back here."""
        view = self.params.buffer[self.lo:self.lo + self.piece]
        if self.local_params.value.data_ptr() != view.data_ptr():
            view.copy_(self.local_params.value)
            object.__setattr__(self.local_params, "_value", view)


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
        self.state_attrs = [attr for attr, value in vars(optimizer).items()
                            if attr != "params" and zero.is_state(value, params)]
        if self.sharded:
            taken = [getattr(optimizer, attr)[0].name for attr in self.state_attrs
                     if not zero.holds_value(getattr(optimizer, attr)[0])]
            if taken:
                raise OptionError(f"shard_optimizer: the optimizer's state ({', '.join(taken)}, ...) is already "
                                  f"sharded by another data-parallel step; build one sharded step per optimizer")
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
        # ordered by finishing launch, so every rank (an empty shard's too) reduces them in index order
        self.buckets = [Bucket(members, params, max(finished_at[i] for i in members), self.rank, self.world,
                               self.sharded)
                        for members in _buckets(params, finished_at, bucket_bytes or BUCKET_BYTES)]
        self.updates = self._build_sharded() if self.sharded else self._build_updates()
        self.samples = 0

    @property
    def program(self):
        """The forward and backward program (what a caller reads class labels from)."""
        return self.gradients.program

    @property
    def programs(self) -> list:
        """The gradient program, then the update programs in the order they run."""
        return [self.gradients.program] + [fn.program for _, fn in self.updates]

    @property
    def kernels(self) -> list:
        return [k for p in self.programs for k in p.kernels]

    @property
    def bytes_reduced(self) -> int:
        """Bytes each rank sends into collectives per step (gradients, then the ZeRO
        all-gather of parameters, then the sample count, the loss and the metrics)."""
        grads = sum(b.nbytes for b in self.buckets)
        return grads * (2 if self.sharded else 1) + 8 * (1 + self.n_outputs)

    @property
    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state (per parameter: SGD's velocity, Adam's m and v, ...) this rank holds."""
        if self.sharded:
            return sum(s.nbytes for b in self.buckets for s in b.state.values())
        return sum(v.value.numel() * v.value.element_size() for attr in self.state_attrs
                   for v in getattr(self.optimizer, attr))

    # --- building ----------------------------------------------------------------------------
    def _build_updates(self) -> list:
        """One update program per bucket, or, with clip_grad_norm (a norm over every gradient),
        one for all of them: [(bucket indices, kgen Function)]."""
        params, scale = self.optimizer.params, tensor("inverse_samples", (), "float32")
        groups = [list(range(len(self.buckets)))] if self.optimizer.clip_grad_norm is not None else \
            [[k] for k in range(len(self.buckets))]
        updates = []
        for g, ks in enumerate(groups):
            inputs, members, grads = [], [], []
            for k in ks:
                bucket = self.buckets[k]
                inputs.append(tensor(f"bucket{k}", (bucket.grads.buffer.numel(),), bucket.grads.dtype))
                for j, i in enumerate(bucket.members):
                    flat = bucket.grads
                    part = ops.getitem(inputs[-1], slice(flat.offsets[j], flat.offsets[j] + _numel(params[i])))
                    grads.append(ops.reshape(part, params[i].shape) * scale)
                    members.append(i)
            local = _part_of(self.optimizer, [params[i] for i in members],
                             {attr: [getattr(self.optimizer, attr)[i] for i in members] for attr in self.state_attrs})
            pairs = _own_updates(local, local.updates(grads), last=g == len(groups) - 1)
            updates.append((ks, function(inputs + [scale], None, updates=pairs)))
        return updates

    def _build_sharded(self) -> list:
        """Per bucket: this rank's pieces of the optimizer state, and the update program over
        its piece of the parameters (one pointwise kernel)."""
        updates, scale = [], tensor("inverse_samples", (), "float32")
        for k, bucket in enumerate(self.buckets):
            for attr in self.state_attrs:
                state = [getattr(self.optimizer, attr)[i] for i in bucket.members]
                bucket.state[attr] = zero.StateShard(attr, state, bucket.params.offsets, bucket.lo, bucket.piece,
                                                     bucket.grads.buffer.device)
            local = _part_of(self.optimizer, [bucket.local_params],
                             {attr: [s.piece] for attr, s in bucket.state.items()})
            reduced = tensor(f"grad_piece{k}", (bucket.piece,), bucket.grads.dtype)
            pairs = _own_updates(local, local.updates([reduced * scale]), last=k == len(self.buckets) - 1)
            updates.append(([k], function([reduced, scale], None, updates=pairs)))
        return updates

    # --- running -----------------------------------------------------------------------------
    def __call__(self, *args):
        n = len(args[0])
        device = self.buckets[0].grads.buffer.device
        count = torch.tensor([float(n)], dtype=torch.float64, device=device)
        counted = self._collective("the sample count", dist.all_reduce, count)
        if self.sharded:  # parameters or state given new tensors since (set_value, a checkpoint loaded)
            for b in self.buckets:
                b.params.relink()
                for s in b.state.values():
                    s.take()
        reducing = [None] * len(self.buckets)

        def reduce(k):
            reducing[k] = self._reduce(k)
        if n:
            out = {}
            grad_nodes = self.program.graph.outputs[self.n_outputs:]
            for b in self.buckets:
                for j, i in enumerate(b.members):
                    out.setdefault(grad_nodes[i], b.grads.view(j))
            ready = {}
            for k, b in enumerate(self.buckets):
                ready.setdefault(b.ready_at, []).append(k)
            values = _call(self.gradients, list(args) + [np.float32(n)], out,
                           lambda i: [reduce(k) for k in ready.get(i, ())])[:self.n_outputs]
            for b in self.buckets:  # a gradient node shared by two parameters
                for j, i in enumerate(b.members):
                    if out[grad_nodes[i]].data_ptr() != b.grads.view(j).data_ptr():
                        b.grads.view(j).copy_(out[grad_nodes[i]])
        else:  # an empty shard (a global batch smaller than the group): it adds zeros
            for b in self.buckets:
                b.grads.buffer.zero_()
            values = [torch.zeros((), dtype=torch.float32) for _ in range(self.n_outputs)]
        for k in range(len(self.buckets)):
            if reducing[k] is None:
                reduce(k)
        stats = torch.tensor([float(v) * n for v in values], dtype=torch.float64, device=device)
        summed = self._collective("the loss and metrics", dist.all_reduce, stats)
        self._wait([counted])
        self.samples = int(count.item())
        scale = torch.tensor(1.0 / self.samples, dtype=torch.float32, device=device)
        gathering = []
        for ks, fn in self.updates:  # each as soon as its buckets are reduced
            self._wait([reducing[k] for k in ks])
            if self.sharded:
                bucket = self.buckets[ks[0]]
                _call(fn, [bucket.reduced, scale])
                bucket.relink_local()
                gathering.append(self._collective("the parameters", dist.all_gather_single, bucket.params.buffer,
                                                  bucket.local_params.value))
            else:
                _call(fn, [self.buckets[k].grads.buffer for k in ks] + [scale])
        self._wait(gathering + [summed])
        return [torch.tensor(float(s) / self.samples, dtype=torch.float32) for s in stats.cpu()]

    def _reduce(self, k: int):
        bucket = self.buckets[k]
        if self.sharded:
            return self._collective(f"gradient bucket {k}", dist.reduce_scatter_single, bucket.reduced,
                                    bucket.grads.buffer)
        return self._collective(f"gradient bucket {k}", dist.all_reduce, bucket.grads.buffer)

    def gather_state(self) -> None:
        """With shard_optimizer: gather the optimizer's whole state on rank 0 (into the
        optimizer's own state variables, as checkpoints read them); the other ranks keep
        only their pieces. Every rank must call it. The next step frees it again."""
        if not self.sharded:
            return
        to_first = functools.partial(dist.gather, group_dst=0)
        shards = [s for b in self.buckets for s in b.state.values()]
        self._wait([s.gather(lambda piece, pieces, what=f"the optimizer's {s.attr}":
                             self._collective(what, to_first, piece, pieces), self.rank, self.world)
                    for s in shards])
        for s in shards:
            s.placed()

    def state_pieces(self) -> list:
        """With shard_optimizer, what this rank holds of each state: (attribute, parameter
        index, start, stop, values), values being elements [start, stop) of that parameter's
        flattened state."""
        held = []
        for b in self.buckets:
            for attr, s in b.state.items():
                for j, i in enumerate(b.members):
                    where = s.overlaps(j)
                    if where is not None:
                        start, stop, at = where
                        held.append((attr, i, start, stop, s.piece.value[at:at + stop - start]))
        return held

    def _collective(self, what: str, collective, *args):
        return _collective(self.group, "data-parallel step", what, collective, *args)

    def _wait(self, works) -> None:
        _wait(self.group, works)


def _part_of(optimizer, params, state: dict):
    """A copy of `optimizer` over `params` with its per-parameter state lists `state`; it
    shares the hyper-parameters' device scalars and its other state (Adam's step count)."""
    local = copy.copy(optimizer)
    local.params = list(params)
    for attr, value in state.items():
        setattr(local, attr, list(value))
    return local


def _own_updates(local, pairs, last: bool) -> list:
    """`pairs` of a part's update, less the updates of state shared by every part (Adam's step
    count) unless `last`: written once, by the part that runs last, after all have read it."""
    own = {id(v) for v in local.params}
    own.update(id(v) for attr, value in vars(local).items() if attr != "params" and zero.is_state(value, local.params)
               for v in value)
    return [(var, new) for var, new in pairs if last or id(var) in own]


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

