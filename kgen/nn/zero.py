"""ZeRO stage 1's optimizer state: each rank holds only its piece.

With `shard_optimizer` a data-parallel step (kgen.nn.distributed) lays each gradient bucket's
parameters out in one flat vector padded to a multiple of the world size; rank r updates
elements [r*S, (r+1)*S) of it. So the optimizer's state of those parameters (SGD's velocity,
Adam's m and v, ...) is needed on rank r for those elements alone, and that is all a rank
keeps: one tensor of S elements per bucket and state (`StateShard.piece`).

The optimizer's own per-parameter state variables (`optimizer.m[i]`, what checkpoints read
and write) then hold no values: each holds a placeholder of its shape on torch's "meta"
device, which takes no memory, so reading it is an error rather than a stale value. They
hold real values only

- on rank 0 after `gather`, which gathers every rank's piece there (a checkpoint is written
  on rank 0 after it), and
- after something sets them (`nn.load` of a checkpoint, `set_value`): `take` copies this
  rank's elements into its piece (each rank takes its slice) and frees them again. The step
  calls it before each run, so a checkpoint loaded into a sharded run, or the state rank 0
  gathered, goes back to pieces before the next update.
"""
from __future__ import annotations

import numpy as np
import torch

from kgen.function import SharedVariable, shared


def placeholder(var) -> torch.Tensor:
    """A tensor of `var`'s shape and dtype holding no memory (and no values)."""
    return torch.empty(var.shape, dtype=var.dtype.torch, device="meta")


def holds_value(var) -> bool:
    return not var.value.is_meta


def _numel(var) -> int:
    return int(np.prod(var.shape, dtype=np.int64))


class StateShard:
    """One optimizer state (`attr`: "m", "velocity", ...) of one bucket's parameters, whose
    state variables `variables` sit at `offsets` of the bucket's flat layout: this rank holds
    elements [lo, lo + size) of it in `piece` (a shared variable the update program reads and
    writes), the variables themselves nothing (see the module's docstring)."""

    def __init__(self, attr: str, variables, offsets, lo: int, size: int, device):
        self.attr, self.variables, self.offsets = attr, list(variables), list(offsets)
        self.lo, self.size = lo, size
        dtype = self.variables[0].dtype
        self.piece = shared(torch.zeros(size, dtype=dtype.torch), name=f"zero_{attr}", dtype=dtype)
        object.__setattr__(self.piece, "_value", self.piece.value.to(device))
        self._gathered = None
        self.take()

    def overlaps(self, k: int):
        """(start, stop, at): elements [start, stop) of variable k's flattened value are held
        at piece[at : at + stop - start]; None when this rank holds none of them."""
        offset = self.offsets[k]
        start, stop = max(offset, self.lo), min(offset + _numel(self.variables[k]), self.lo + self.size)
        return (start - offset, stop - offset, start - self.lo) if start < stop else None

    def take(self) -> None:
        """Copy this rank's elements of every variable holding a value into the piece, and
        free the variable (a placeholder again)."""
        for k, var in enumerate(self.variables):
            if not holds_value(var):
                continue
            held = self.overlaps(k)
            if held is not None:
                start, stop, at = held
                self.piece.value[at:at + stop - start].copy_(var.value.reshape(-1)[start:stop])
            object.__setattr__(var, "_value", placeholder(var))
        self._gathered = None

    def gather(self, collective, rank: int, world: int):
        """Start gathering every rank's piece on rank 0 with `collective(piece, pieces)`
        (torch.distributed.gather's arguments, the group's rank 0 the destination); returns
        its work. `placed` then makes rank 0's variables views of the whole state."""
        self.take()
        whole = torch.empty(self.size * world, dtype=self.piece.value.dtype, device=self.piece.value.device) \
            if rank == 0 else None
        work = collective(self.piece.value, list(whole.chunk(world)) if whole is not None else None)
        self._gathered = whole
        return work

    def placed(self) -> None:
        """After `gather`'s work: on rank 0 each variable a view of the gathered state."""
        if self._gathered is None:
            return
        for var, offset in zip(self.variables, self.offsets):
            view = self._gathered[offset:offset + _numel(var)].view(var.shape)
            object.__setattr__(var, "_value", view)
        self._gathered = None

    @property
    def nbytes(self) -> int:
        return self.piece.value.numel() * self.piece.value.element_size()


def is_state(value, params) -> bool:
    """A list of an optimizer's state, one shared value per parameter (kgen.nn.optim)."""
    return (isinstance(value, (list, tuple)) and len(value) == len(params) and len(params) > 0
            and all(isinstance(v, SharedVariable) for v in value))
