"""The convolution templates: conv2d and its two gradients, each an implicit GEMM.

No im2col buffer is ever written: a GEMM operand tile is gathered from the image at the
coordinates a window reads, the padding bounds folded into the load mask.

    conv2d              rows N*OH*OW (output pixels)  x  cols F   over C*KH*KW
                        A = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw],  B = w[f, c, kh, kw]
    conv2d_input_grad   rows N*H*W   (input pixels)   x  cols C   over F*KH*KW
                        A = g[n, f, oh, ow] where oh*sh = ih + ph - kh*dh (a gather: lanes whose
                        window offset does not land on an output pixel are masked off),
                        B = w[f, c, kh, kw]
    conv2d_weight_grad  rows F  x  cols C*KH*KW  over N*OH*OW
                        A = g[n, f, oh, ow],  B = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]

With G > 1 groups each template is G GEMMs, one per group, of the extents above with C and
F read as C/G and F/G: grid axis 2 walks the groups (`grp`, as a batched matmul's axis 2
walks its batch), which offsets the channels and filters the tiles read and write. A
depthwise convolution (G > 1 groups of one channel each) is no GEMM worth a tl.dot (its K
is KH*KW): kgen/kernels/depthwise.py computes it, and these templates hand it over.

Each tile accumulates in float32; float32 operands use exact products (input_precision=
"ieee"), half-precision ones go to tensor cores, as in the matmul template. The image
coordinates of a gathered tile are Triton values of the kernel (`ih`, `iw`, ...) that the
index expressions use as index variables over the image: that holds wherever the mask is
set, and masked-off lanes load nothing.
"""
from __future__ import annotations

import sympy

from kgen.ir import dtypes, shapes
from kgen.ir.ops_conv import group_gemm, is_depthwise
from kgen.kernels import depthwise
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.matmul import _tile, emit_tile_ids, gemm_resources, gemm_space, gemm_steps
from kgen.kernels.side import SideReduction
from kgen.kernels.splitk import GRID_AXIS, SplitK, splittable
from kgen.kernels.templates import template
from kgen.kernels.window import bounds_mask, define, window_offsets
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import FloorDiv, ModularIndexing, flat_index, index_var


def _interpreted_tiles(m: int, n: int, k: int) -> dict:
    """GEMM tiles for the interpreter: the fewest program x K-step iterations, no tile (or
    gathered index block) over INTERPRETER_MAX_BLOCK elements; ties go to smaller tiles."""
    def sizes(extent):
        top = min(max(next_pow2(extent), 16), INTERPRETER_MAX_BLOCK // 16)
        return [1 << e for e in range(4, top.bit_length())]

    def cost(bm, bn, bk):
        steps = -(-m // bm) * -(-n // bn) * -(-k // bk)
        return steps, bm * bn + bm * bk + bk * bn

    fits = [(bm, bn, bk) for bm in sizes(m) for bn in sizes(n) for bk in sizes(k)
            if max(bm * bn, bm * bk, bk * bn) <= INTERPRETER_MAX_BLOCK]
    bm, bn, bk = min(fits, key=lambda t: cost(*t))
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """Implicit GEMMs of extents m x n over k. On a GPU, exact float32 dots take tiles of at
    most 64x64 with BLOCK_K 16 (see kgen.kernels.matmul), half-precision ones larger tiles."""
    m, n, k = dims["m"], dims["n"], dims["k"]
    if interpreted:
        return _interpreted_tiles(m, n, k)
    if not half_dot:
        return {"BLOCK_M": min(max(next_pow2(m), 16), 64), "BLOCK_N": min(max(next_pow2(n), 16), 64),
                "BLOCK_K": 16, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": min(max(next_pow2(m), 16), 128 if n <= 64 else 64),
            "BLOCK_N": min(max(next_pow2(n), 16), 128), "BLOCK_K": min(max(next_pow2(k), 16), 32),
            "num_warps": 4, "num_stages": 3}


CONV = register(Family("conv", _default, gemm_space, gemm_resources, gemm_steps, gemm=True))


class GemmKernel:
    """The frame shared by the three templates: program ids over row and column tiles, a
    loop over the reduction in BLOCK_K steps, a float32 accumulator and its store."""

    def __init__(self, name: str, root, written: set, names: dict, epilogue=(), side=None):
        self.root = root
        # one group's GEMM extents, from the op table: with one group, its `gemm`, as fusion sees them (E4)
        m, n, k, _, _ = group_gemm(root)
        self.m, self.n, self.k = m, n, k
        self.groups = root.attrs["groups"]
        self.written, self.epilogue = written, tuple(epilogue)
        side_writes = (side[0], *side[1]) if side else ()
        self.w = w = KernelWriter(name, written - {root} - set(epilogue) - set(side_writes), names)
        self.bm, self.bn, self.bk = w.constexpr("BLOCK_M"), w.constexpr("BLOCK_N"), w.constexpr("BLOCK_K")
        self.M, self.N, self.K = w.int_param("M", m), w.int_param("N", n), w.int_param("K", k)
        self.rm, self.rn = index_var("rm", m), index_var("rn", n)
        self.ka, self.kb = index_var("ka", k), index_var("kb", k)
        w.lanes = (self.rm, self.rn)
        self.group = None  # the group's index, a grid axis (None: one group)
        if self.groups > 1:
            w.emit("grp = tl.program_id(2)")
            self.group = index_var("grp", self.groups)
            w.program_vars = (self.group,)  # a load at the group alone (a bias of F/G = 1) is one element
        emit_tile_ids(w, self.M, self.N, self.bm, self.bn)
        self.split = SplitK(w, m, n, self.M, self.N, self.K, self.bm, self.bn, self.bk) \
            if splittable(m, n, k, self.groups) else None
        self.side = None
        if side:  # fusion rule E4 (kgen.kernels.side)
            reduction, side_epilogue, rows = side
            self.side = SideReduction(w, reduction, side_epilogue, rows, self.rm if rows else self.rn,
                                      self.ka if rows else self.kb, self.bm if rows else self.bn, self.bk,
                                      self.M if rows else self.N, self.K, "pid_n" if rows else "pid_m")

    def begin_loop(self) -> None:
        w = self.w
        if self.side:
            self.side.begin()
        w.emit(f"acc = tl.zeros([{self.bm}, {self.bn}], tl.float32)", w.note(self.root))
        loop = self.split.loop_range() if self.split else f"range(0, {self.K}, {self.bk})"
        w.emit(f"for koffset in {loop}:")
        w.indent += 1
        w.emit(f"ka = koffset + tl.arange(0, {self.bk})[None, :]")
        w.emit(f"kb = koffset + tl.arange(0, {self.bk})[:, None]")

    def dot_and_end_loop(self, a_operand, a_coords, a_mask: str, b_operand, b_coords, b_mask: str) -> None:
        """Accumulate the product of the operand tiles (each masked to the reduction's and the
        matrix's bounds plus its own terms), and close the loop over the reduction."""
        w = self.w
        tile_a = _tile(w, a_operand, a_coords, f"(rm < {self.M}) & (ka < {self.K}){a_mask}")
        tile_b = _tile(w, b_operand, b_coords, f"(kb < {self.K}) & (rn < {self.N}){b_mask}")
        if a_operand.dtype in (dtypes.float16, dtypes.bfloat16):  # loads widen halves; dot wants them narrow
            half = f"tl.{a_operand.dtype.triton}"
            w.emit(f"acc = tl.dot({tile_a}.to({half}), {tile_b}.to({half}), acc)", w.note(self.root))
        else:
            w.emit(f'acc = tl.dot({tile_a}, {tile_b}, acc, input_precision="ieee")', w.note(self.root))
        if self.side:
            self.side.accumulate()
        w.end_loop()

    def grouped(self, index, per_group: int):
        """A channel or filter `index` within a group, offset to its group's."""
        return index if self.group is None else self.group * per_group + index

    def finish(self, out_coords, summary: str) -> KernelSource:
        """Store the result (if it is written) and compute the epilogue (fusion rule E1)."""
        w, root = self.w, self.root
        if self.side:
            self.side.collapse()
        if self.split:
            self.split.gather("acc", root, self.side)
        w.computed.append(root)
        offset, mask, block = flat_index(out_coords, root.shape), f"(rm < {self.M}) & (rn < {self.N})", f"[{self.bm}, {self.bn}]"
        if root in self.written:
            w.store(root, offset, "acc", mask, block)
        w.provide(root, out_coords, "acc")
        w.epilogue(root, out_coords, offset, self.epilogue, mask, block)
        side_out = self.side.write(self.written) if self.side else ()
        if self.epilogue:
            summary += f" Then {len(self.epilogue)} elementwise output(s)."
        if self.side:
            summary += f" With the {self.side.root.op} of {shapes.format_shape(self.side.source.shape)} over K."
        if self.split:
            summary += " K may split over SPLIT_K programs per tile (kgen.kernels.splitk)."
        writes = ((root,) if root in self.written else ()) + self.epilogue + side_out
        third = [GRID_AXIS] if self.split else [(self.groups, None)] if self.group is not None else []
        return KernelSource(w.name, "conv", w.function(summary), w.ordered_params(),
                            [(self.m, "BLOCK_M"), (self.n, "BLOCK_N")] + third,
                            writes, w.reads(),
                            tuple(w.computed_in_order()), CONV.name, {"m": self.m, "n": self.n, "k": self.k})


def _describe(name: str, root) -> str:
    a = root.attrs
    operands = " and ".join(shapes.format_shape(i.shape) for i in root.inputs)
    groups = f", {a['groups']} groups" if a["groups"] > 1 else ""
    return (f"kgen {name}: {root.op} of {operands} -> {shapes.format_shape(root.shape)}, stride {a['stride']}, "
            f"padding {a['padding']}, dilation {a['dilation']}{groups}; an implicit GEMM"
            f"{' per group' if groups else ''}.")


def _geometry(root, image, weight, out) -> tuple:
    """A convolution's sizes from the forward conv's `image`, `weight` and `out` (whichever
    of them are `root`'s operands or result): batch, image height and width, window height
    and width, output height and width, stride, padding, dilation."""
    a = root.attrs
    image, weight, out = image.shape, weight.shape, out.shape
    return (image[0], image[2], image[3], weight[2], weight[3], out[2], out[3],
            a["stride"], a["padding"], a["dilation"])


@template("conv2d")
def emit_conv2d(name: str, root, written: set, names: dict, epilogue=(), side=None) -> KernelSource:
    if is_depthwise(root):
        return depthwise.emit_conv2d(name, root, written, names, epilogue)
    x, weight = root.inputs
    batch, height, width, kh_size, kw_size, oh_size, ow_size, (sh, sw), (ph, pw), (dh, dw) = \
        _geometry(root, x, weight, root)
    pixels = oh_size * ow_size
    g = GemmKernel(name, root, written, names, epilogue, side)
    w, rm, rn, ka, kb = g.w, g.rm, g.rn, g.ka, g.kb

    n = define(w, "n", FloorDiv(rm, pixels), batch, "rm")
    oh = define(w, "oh", ModularIndexing(rm, ow_size, oh_size), oh_size, "rm")
    ow = define(w, "ow", ModularIndexing(rm, 1, ow_size), ow_size, "rm")
    g.begin_loop()
    kh, kw = window_offsets(ka, kh_size, kw_size)
    ih = define(w, "ih", oh * sh - ph + kh * dh, height, "rm")
    iw = define(w, "iw", ow * sw - pw + kw * dw, width, "rm")
    channels, filters = weight.shape[1], g.n  # per group
    image = [n, g.grouped(FloorDiv(ka, kh_size * kw_size), channels), ih, iw]
    filt = [g.grouped(rn, filters), FloorDiv(kb, kh_size * kw_size), *window_offsets(kb, kh_size, kw_size)]
    g.dot_and_end_loop(x, image, bounds_mask(("ih", "iw"), (height, width), (ph, pw)), weight, filt, "")
    out = [FloorDiv(rm, pixels), g.grouped(rn, filters), ModularIndexing(rm, ow_size, oh_size),
           ModularIndexing(rm, 1, ow_size)]
    return g.finish(out, _describe(name, root))


@template("conv2d_input_grad")
def emit_conv2d_input_grad(name: str, root, written: set, names: dict, epilogue=(), side=None) -> KernelSource:
    if is_depthwise(root):
        return depthwise.emit_conv2d_input_grad(name, root, written, names, epilogue)
    grad, weight = root.inputs
    batch, height, width, kh_size, kw_size, oh_size, ow_size, (sh, sw), (ph, pw), (dh, dw) = \
        _geometry(root, root, weight, grad)
    g = GemmKernel(name, root, written, names, epilogue, side)
    w, rm, rn, ka, kb = g.w, g.rm, g.rn, g.ka, g.kb

    n = define(w, "n", FloorDiv(rm, height * width), batch, "rm")
    ih = define(w, "ih", ModularIndexing(rm, width, height), height, "rm")
    iw = define(w, "iw", ModularIndexing(rm, 1, width), width, "rm")
    g.begin_loop()
    kh, kw = window_offsets(ka, kh_size, kw_size)
    # The output pixel whose window holds (ih, iw) at offset (kh, kw) is (ih + ph - kh*dh) / sh
    # down and likewise across, where both are whole numbers inside the output.
    coords, mask = [], ""
    for t, o, i, k, stride, pad, dil, size in (("th", "oh", ih, kh, sh, ph, dh, oh_size),
                                               ("tw", "ow", iw, kw, sw, pw, dw, ow_size)):
        span = define(w, t, i + pad - k * dil, sympy.oo, "rm")  # may be negative: masked off below
        coords.append(define(w, o, FloorDiv(span, stride), size, "rm"))
        mask += f" & ({t} >= 0) & ({o} < {size})" + (f" & ({t} % {stride} == 0)" if stride > 1 else "")
    channels, filters = g.n, weight.shape[0] // g.groups  # per group
    out_grad = [n, g.grouped(FloorDiv(ka, kh_size * kw_size), filters), *coords]
    filt = [g.grouped(FloorDiv(kb, kh_size * kw_size), filters), rn, *window_offsets(kb, kh_size, kw_size)]
    g.dot_and_end_loop(grad, out_grad, mask, weight, filt, "")
    out = [FloorDiv(rm, height * width), g.grouped(rn, channels), ModularIndexing(rm, width, height),
           ModularIndexing(rm, 1, width)]
    return g.finish(out, _describe(name, root))


@template("conv2d_weight_grad")
def emit_conv2d_weight_grad(name: str, root, written: set, names: dict, epilogue=(), side=None) -> KernelSource:
    if is_depthwise(root):
        return depthwise.emit_conv2d_weight_grad(name, root, written, names, epilogue)
    x, grad = root.inputs
    batch, height, width, kh_size, kw_size, oh_size, ow_size, (sh, sw), (ph, pw), (dh, dw) = \
        _geometry(root, x, root, grad)
    pixels = oh_size * ow_size
    g = GemmKernel(name, root, written, names, epilogue, side)
    w, rm, rn, ka, kb = g.w, g.rm, g.rn, g.ka, g.kb

    g.begin_loop()
    # the reduction runs over (n, pixel): for the rows of g's tile (ka) and the columns of x's (kb)
    na = define(w, "na", FloorDiv(ka, pixels), batch, "ka")
    pa = define(w, "pa", ModularIndexing(ka, 1, pixels), pixels, "ka")
    nb = define(w, "nb", FloorDiv(kb, pixels), batch, "kb")
    pb = define(w, "pb", ModularIndexing(kb, 1, pixels), pixels, "kb")
    channels, filters = root.shape[1], g.m  # per group
    out_grad = [na, g.grouped(rm, filters), FloorDiv(pa, ow_size), ModularIndexing(pa, 1, ow_size)]
    oh = define(w, "oh", FloorDiv(pb, ow_size), oh_size, "kb")
    ow = define(w, "ow", ModularIndexing(pb, 1, ow_size), ow_size, "kb")
    kh, kw = window_offsets(rn, kh_size, kw_size)
    ih = define(w, "ih", oh * sh - ph + kh * dh, height, "kb")
    iw = define(w, "iw", ow * sw - pw + kw * dw, width, "kb")
    image = [nb, g.grouped(FloorDiv(rn, kh_size * kw_size), channels), ih, iw]
    g.dot_and_end_loop(grad, out_grad, "", x, image, bounds_mask(("ih", "iw"), (height, width), (ph, pw)))
    out = [g.grouped(rm, filters), FloorDiv(rn, kh_size * kw_size), *window_offsets(rn, kh_size, kw_size)]
    return g.finish(out, _describe(name, root))
