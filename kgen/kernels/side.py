"""Side reductions (fusion rule E4): a reduction over a GEMM's K axis, computed by a matmul
or convolution kernel from the loop that already walks K.

The bias gradient of a linear or conv layer is the sum of the output gradient g over the
batch (and pixels); the weight gradient is a GEMM whose K axis is that same batch (and
pixels), reading g tile by tile. The sum rides along: each program keeps an accumulator
block beside its tile loads, indexed by its rows (a reduction kept over the GEMM's M) or
its columns (over N), and the programs of the first column (row) tile store it, then run
its epilogue (the bias's optimizer update). The value summed is the reduction's own input
at its own coordinates, so the result is right whatever the operands are; when the input
is the operand's buffer at the same coordinates, the load is the tile's own (the writer
computes each (node, coordinates) pair once): so in the matmul template. The convolution
weight gradient spells g's coordinates differently and loads the tile again for the sum,
a hit in L1; handing it the tile's own load keeps that live past the dot, and made cnn's
second weight gradient spill on sm_90 (Triton 3.9), so it does not.
"""
from __future__ import annotations

from kgen.kernels.reduction import finish
from kgen.kernels.writer import KernelWriter, compute_type
from kgen.ir.indexing import unflatten


class SideReduction:
    def __init__(self, w: KernelWriter, root, epilogue, rows: bool, lane, k, block: str, kblock: str,
                 bound: str, kbound: str, other_tile: str):
        self.w, self.root, self.epilogue, self.rows = w, root, tuple(epilogue), rows
        self.lane, self.k = lane, k  # index variables: the kept lane (rm or rn), K's (ka or kb)
        self.block, self.kblock, self.bound, self.kbound = block, kblock, bound, kbound
        self.other_tile = other_tile  # the tile index (pid_m or pid_n) whose first tiles store the result
        (self.source,) = root.inputs
        self.shape = f"[{block}, {kblock}]" if rows else f"[{kblock}, {block}]"

    def begin(self) -> None:
        """Before the K loop: the accumulator block."""
        rule = self.root.opdef.lower
        self.w.emit(f"side = tl.full({self.shape}, {rule.init[self.root.dtype.name]}, "
                    f"{compute_type(self.root.dtype)})", self.w.note(self.root))

    def accumulate(self) -> None:
        """In the K loop: combine the reduction's input at (kept = lane, reduced = K)."""
        w, root = self.w, self.root
        axes = root.attrs["axes"]
        kept = [d for i, d in enumerate(self.source.shape) if i not in axes]
        reduced = [self.source.shape[a] for a in axes]
        kept_coords, reduced_coords = iter(unflatten(self.lane, kept)), iter(unflatten(self.k, reduced))
        coords = [next(reduced_coords) if i in axes else next(kept_coords) for i in range(self.source.ndim)]
        mask = f"({self.lane.name} < {self.bound}) & ({self.k.name} < {self.kbound})"
        w.mask = mask
        value = w.value(self.source, coords)
        w.emit(f"side = tl.where({mask}, {root.opdef.lower.combine.format(acc='side', x=value)}, side)", w.note(root))

    result = "side_result"  # the collapsed reduction's variable

    def collapse(self) -> None:
        """After the loop: collapse the accumulator block into `result`."""
        finish(self.w, self.root, "side", self.result, self.kbound, axis=1 if self.rows else 0)

    def store_mask(self) -> str:
        """The lanes that store the result: in bounds, in the first tiles of the other axis."""
        # (a block compare: the interpreter cannot mask with a block & a scalar bool)
        first = f"({self.lane.name} * 0 + {self.other_tile} == 0)"
        return f"({self.lane.name} < {self.bound}) & {first}"

    def combine(self, a: str, b: str) -> str:
        """Two collapsed partial results of the reduction combined (split-K's slices)."""
        return self.root.opdef.lower.combine.format(acc=a, x=b)

    def write(self, written: set) -> tuple:
        """Store the collapsed result (first tiles of the other axis only) and compute its
        epilogue. Returns the values it writes."""
        w, root = self.w, self.root
        mask = self.store_mask()
        block = f"[{self.block}, 1]" if self.rows else f"[1, {self.block}]"
        if root in written:
            w.store(root, self.lane, self.result, mask, block)
        coords = unflatten(self.lane, root.shape)
        w.provide(root, coords, self.result)
        w.epilogue(root, coords, self.lane, self.epilogue, mask, block)
        return ((root,) if root in written else ()) + self.epilogue
