"""Split-K: a GEMM with few output tiles and a long K runs each tile as SPLIT_K programs,
each over one slice of K, so that more of the GPU works on it.

Where it pays: a weight gradient. Its output (a layer's weights) is small and static, and
its K is the batch (times the pixels, for a convolution): cnn's first convolution has a
32 x 9 weight gradient over K = 43264 at batch 64, one 64x64 tile, so without a split one
program walks all of K while the other SMs idle. A GEMM may split (`splittable`) when its
output is static, at most SPLIT_OUTPUT_MAX elements and unbatched, and its K is symbolic
(it grows with the batch) or at least SPLIT_MIN_K. The number of slices is the SPLIT_K
constexpr of the config (1: no split; `split_k` picks the default, the tuner tries
others), and the split is an extra grid axis of SPLIT_K programs.

How a tile's slices become one result, in the one launch (serial split-K):

  1. each program stores its partial sum (and the partial result of a side reduction,
     kgen.kernels.side) to a float32 workspace, slice by slice;
  2. after a barrier, one atomic add (acquire-release, GPU scope) counts the tile's
     finished slices in a counter;
  3. the program that finishes last reads every slice's partial back (volatile loads, in
     slice order: the sum does not depend on which program came last), resets the counter
     to zero, and runs the rest of the kernel (the store and the epilogue) alone.

The workspace and the counters are scratch parameters: the launcher keeps them between
launches (`ScratchBuffers`), the counters zero at first and zero after every launch."""
from __future__ import annotations

import sympy

from kgen.ir import dtypes, shapes
from kgen.kernels.families import next_pow2

SPLIT_OUTPUT_MAX = 1 << 20  # output elements of a GEMM that may split
SPLIT_MIN_K = 1024  # a static K shorter than this never splits
WORKSPACE_MAX = 1 << 22  # float32 elements of a workspace (16 MB): bounds SPLIT_K
MIN_TILE = 16  # the smallest BLOCK_M / BLOCK_N (tl.dot's): bounds the tiles, so the counters
SPLIT_PROGRAMS = 256  # split_k's default aims at this many programs (two waves of an H100's 132 SMs)
SPLIT_MIN_STEPS = 8  # ... with at least this many BLOCK_K steps per slice


def _static(d) -> bool:
    return isinstance(d, int) or (isinstance(d, sympy.Basic) and d.is_Integer)


def splittable(m, n, k, batch) -> bool:
    """Whether a GEMM of extents m x n over k, `batch` times, may split its K (an extent
    is an int or a sympy expression of the sizes)."""
    if not all(_static(d) for d in (m, n, batch)) or int(batch) != 1 or int(m) * int(n) > SPLIT_OUTPUT_MAX:
        return False
    return not _static(k) or int(k) >= SPLIT_MIN_K


def max_split(m: int, n: int) -> int:
    """The most slices a workspace of at most WORKSPACE_MAX elements holds (a power of two)."""
    return 1 << max(0, (WORKSPACE_MAX // max(1, m * n)).bit_length() - 1)


def split_k(dims: dict, config: dict, interpreted: bool) -> int:
    """The default SPLIT_K of a GEMM that may split its K, with tiles `config`: on the
    interpreter 1 (the fewest programs); on a GPU, slices enough to give the GPU
    SPLIT_PROGRAMS programs, each at least SPLIT_MIN_STEPS K steps long, within the
    workspace's bound (a power of two)."""
    if interpreted:
        return 1
    m, n, k = dims["m"], dims["n"], dims["k"]
    tiles = -(-m // config["BLOCK_M"]) * -(-n // config["BLOCK_N"])
    wanted = next_pow2(-(-SPLIT_PROGRAMS // tiles))
    longest = max(1, k // (config["BLOCK_K"] * SPLIT_MIN_STEPS))
    return max(1, min(wanted, 1 << (longest.bit_length() - 1), max_split(m, n)))


GRID_AXIS = (shapes.size_symbol("SPLIT_K"), None)  # the grid axis of the slices: SPLIT_K programs


class SplitK:
    """Emits split-K into a GEMM template's kernel: the slice's K range, and after the
    loop the gathering of the slices' partial results by the tile's last program."""

    def __init__(self, w, m: int, n: int, M: str, N: str, K: str, bm: str, bn: str, bk: str):
        self.w, self.M, self.N, self.K, self.bm, self.bn, self.bk = w, M, N, K, bm, bn, bk
        self.split = w.constexpr("SPLIT_K")
        self.m, self.n = int(m), int(n)
        self.ws = w.scratch_param("split_ws", dtypes.float32, self.m * self.n, per="SPLIT_K")
        tiles = -(-self.m // MIN_TILE) * -(-self.n // MIN_TILE)
        self.counters = w.scratch_param("split_counters", dtypes.int32, tiles, zeroed=True)

    def loop_range(self) -> str:
        """The K loop's range for this program's slice (all of K when SPLIT_K is 1)."""
        w = self.w
        w.emit("split = tl.program_id(2)")
        w.emit(f"kslice = tl.cdiv(tl.cdiv({self.K}, {self.split}), {self.bk}) * {self.bk}")
        return f"range(split * kslice, tl.minimum(split * kslice + kslice, {self.K}), {self.bk})"

    def gather(self, acc: str, root, side=None) -> None:
        """After the loop: with SPLIT_K > 1, publish this slice's `acc` (the partial sum of
        the GEMM node `root`; and the collapsed partial of the side reduction `side`,
        kgen.kernels.side), and let the tile's last program combine them. The rest of the
        kernel is emitted inside `if last:`, which this leaves open."""
        w, split = self.w, self.split
        mask = f"(rm < {self.M}) & (rn < {self.N})"
        at, size = "(rm * {} + rn)".format(self.n), self.m * self.n
        w.emit("last = True")
        w.emit(f"if {split} > 1:  # split-K: the tile's last program combines the slices' partial sums")
        w.indent += 1
        w.emit(f"tl.store({self.ws} + split * {size} + {at}, {acc}, mask={mask})")
        if side:
            extent = self.m if side.rows else self.n
            side_ws = w.scratch_param("split_side_ws", dtypes.float32, extent, per="SPLIT_K")
            lane, side_mask = side.lane.name, side.store_mask()
            w.emit(f"tl.store({side_ws} + split * {extent} + {lane}, {side.result}, mask={side_mask})")
        w.emit("tl.debug_barrier()  # every lane's partial stored before the count")
        w.emit("tile = pid_m * tiles_n + pid_n")
        w.emit(f'done = tl.atomic_add({self.counters} + tile, 1, sem="acq_rel", scope="gpu")')
        w.emit(f"last = done == {split} - 1")
        w.emit("if last:")
        w.indent += 1
        w.emit(f"{acc} = tl.load({self.ws} + {at}, mask={mask}, other=0.0, volatile=True)", w.note(root))
        if side:
            w.emit(f"{side.result} = tl.load({side_ws} + {lane}, mask={side_mask}, other=0.0, volatile=True)",
                   w.note(side.root))
        w.emit(f"for s in range(1, {split}):")
        w.indent += 1
        w.emit(f"{acc} += tl.load({self.ws} + s * {size} + {at}, mask={mask}, other=0.0, volatile=True)", w.note(root))
        if side:
            partial = f"tl.load({side_ws} + s * {extent} + {lane}, mask={side_mask}, other=0.0, volatile=True)"
            w.emit(f"{side.result} = {side.combine(side.result, partial)}", w.note(side.root))
        w.indent -= 1
        w.emit(f"tl.atomic_xchg({self.counters} + tile, 0)  # ready for the next launch")
        w.indent -= 2
        w.emit("if last:")
        w.indent += 1


class ScratchBuffers:
    """The scratch buffers of a program's kernels, kept between launches: a counter buffer
    must hold zeros at launch, and the kernels leave it so. One per kernel and parameter,
    grown (never shrunk) to the largest launch's need."""

    def __init__(self, device):
        self.device = device
        self.tensors: dict = {}

    def get(self, kernel: str, name: str, numel: int, dtype, zeroed: bool):
        import torch
        key = (kernel, name)
        tensor = self.tensors.get(key)
        if tensor is None or tensor.numel() < numel:
            tensor = (torch.zeros if zeroed else torch.empty)(max(1, numel), dtype=dtype, device=self.device)
            self.tensors[key] = tensor
        return tensor


def scratch_numel(numel: int, per, config: dict) -> int:
    """Elements of a scratch parameter (`numel`, times constexpr `per`'s value) under `config`."""
    return numel * (config[per] if per else 1)
