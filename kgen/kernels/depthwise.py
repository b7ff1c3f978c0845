"""Depthwise convolution: conv2d and its two gradients when each of G > 1 groups holds one
channel (groups == C; F = k*C filters, k the channel multiplier; MobileNet's 3x3 layers),
which kgen/kernels/conv.py's templates hand over here (kgen.ir.ops_conv.is_depthwise).

As an implicit GEMM (kgen/kernels/conv.py) each group would be a GEMM of K = KH*KW (9) and
k (often 1) columns, which tl.dot pads to 16 x 16 tiles: most of every product would be
padding, in C launches' worth of programs. Here there is no dot; a lane loops over the
window's taps (tl.static_range, unrolled) and multiplies and adds, as the pooling
templates do, so the work is the convolution's own 2*KH*KW flops per output and each load
is one element of an image (neighbouring lanes read neighbouring pixels; the weights they
read are the same few elements, cached):

    conv2d              one lane per output out[n, f, oh, ow]:
                        sum over taps of x[n, f // k, oh*sh - ph + kh*dh, ...] * w[f, 0, kh, kw]
    input gradient      one lane per dx[n, c, ih, iw]: sum over the c's k filters f and the
                        taps whose window holds (ih, iw) (oh*sh = ih + ph - kh*dh, a whole
                        number inside the output) of g[n, f, oh, ow] * w[f, 0, kh, kw]
    weight gradient     dw[f, 0, kh, kw] = sum over (n, oh, ow) of g[n, f, oh, ow] *
                        x[n, f // k, oh*sh - ph + kh*dh, ...]: a reduction kernel, XBLOCK
                        taps per program, RBLOCK of the N*OH*OW products per loop step

The first two configure as lanes (the `depthwise` family), the weight gradient as the
reduction kernel it is in shape (kgen.kernels.reduction's family). Image coordinates are
Triton values that index expressions use as index variables, as in kgen/kernels/conv.py.
"""
from __future__ import annotations

import sympy

from kgen.ir import shapes
from kgen.ir.indexing import FloorDiv, ModularIndexing, index_var, unflatten
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.pointwise import lanes_resources, lanes_space
from kgen.kernels.reduction import REDUCTION
from kgen.kernels.window import bounds_mask, define
from kgen.kernels.writer import KernelSource, KernelWriter


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """One lane per element written, a window of loads each (as pooling)."""
    x = dims["x"]
    if interpreted:
        return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
    return {"XBLOCK": min(max(next_pow2(x), 128), 512), "num_warps": 4}


def _space(dims: dict, tier: str, default: dict):
    return lanes_space(dims, tier, default, quick_blocks=(128, 512, 2048))


DEPTHWISE = register(Family("depthwise", _default, _space, lanes_resources))


class _Lanes:
    """The frame of the two lane kernels: XBLOCK lanes over the elements written, their
    coordinates, loops over taps, and the store with its epilogue (fusion rule E1)."""

    def __init__(self, name: str, root, written: set, names: dict, epilogue, coords: tuple):
        self.root, self.written, self.epilogue = root, written, tuple(epilogue)
        self.w = w = KernelWriter(name, written - {root} - set(epilogue), names)
        self.numel = shapes.numel(root.shape)
        self.xindex = xindex = index_var("xindex", self.numel)
        w.lanes = (xindex,)
        self.block = block = w.constexpr("XBLOCK")
        w.emit(f"xindex = tl.program_id(0) * {block} + tl.arange(0, {block})")
        w.emit(f"xmask = xindex < {w.int_param('xnumel', self.numel)}")
        self.loops = set()  # loop counters: scalars
        batch, channels, rows, cols = root.shape
        self.coords = [self.define(a, e, b) for a, e, b in zip(coords, (
            FloorDiv(xindex, channels * rows * cols), ModularIndexing(xindex, rows * cols, channels),
            ModularIndexing(xindex, cols, rows), ModularIndexing(xindex, 1, cols)), root.shape)]
        w.emit(f"acc = tl.zeros([{block}], tl.float32)", w.note(root))

    def define(self, name: str, expr, bound):
        return define(self.w, name, expr, bound, "xindex", self.loops)

    def loop(self, var: str, count: int, static: bool = True):
        """Open a loop of `count` steps (unrolled if `static`) and return its counter."""
        self.w.emit(f"for {var} in {'tl.static_range' if static else 'range'}({count}):")
        self.w.indent += 1
        counter = index_var(var, count)
        self.loops.add(counter)
        return counter

    def add_product(self, a, a_coords, b, b_coords, mask: str) -> None:
        """acc += a * b at the coordinates, where `mask` holds."""
        self.w.mask = mask
        _accumulate(self.w, self.root, self.w.value(a, a_coords), self.w.value(b, b_coords), mask)

    def finish(self, summary: str) -> KernelSource:
        w, root, block = self.w, self.root, f"[{self.block}]"
        w.computed.append(root)
        if root in self.written:
            w.store(root, self.xindex, "acc", "xmask", block)
        coords = unflatten(self.xindex, root.shape)
        w.provide(root, coords, "acc")
        w.epilogue(root, coords, self.xindex, self.epilogue, "xmask", block)
        if self.epilogue:
            summary += f" Then {len(self.epilogue)} elementwise output(s)."
        writes = ((root,) if root in self.written else ()) + self.epilogue
        return KernelSource(w.name, "depthwise", w.function(summary), w.ordered_params(), [(self.numel, "XBLOCK")],
                            writes, w.reads(), tuple(w.computed_in_order()), DEPTHWISE.name, {"x": self.numel})


def _accumulate(w: KernelWriter, root, a: str, b: str, mask: str) -> None:
    """acc += a * b where `mask` holds (loads under it are 0.0 elsewhere already)."""
    product = w.assign(f"{a} * {b}", "t")
    if not {a, b} <= w.masked_loads:
        product = w.assign(f"tl.where({mask}, {product}, 0.0)", "t")
    w.emit(f"acc += {product}", w.note(root))


def _describe(name: str, root) -> str:
    a = root.attrs
    operands = " and ".join(shapes.format_shape(i.shape) for i in root.inputs)
    return (f"kgen {name}: {root.op} of {operands} -> {shapes.format_shape(root.shape)}, stride {a['stride']}, "
            f"padding {a['padding']}, dilation {a['dilation']}, {a['groups']} groups of one channel; "
            f"depthwise, a loop over the window's taps.")


def emit_conv2d(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    x, weight = root.inputs
    multiplier = root.shape[1] // root.attrs["groups"]
    (sh, sw), (ph, pw), (dh, dw) = (root.attrs[k] for k in ("stride", "padding", "dilation"))
    height, width = x.shape[2:]
    lanes = _Lanes(name, root, written, names, epilogue, ("n", "f", "oh", "ow"))
    n, f, oh, ow = lanes.coords
    kh = lanes.loop("kh", weight.shape[2])
    ih = lanes.define("ih", oh * sh - ph + kh * dh, height)
    kw = lanes.loop("kw", weight.shape[3])
    iw = lanes.define("iw", ow * sw - pw + kw * dw, width)
    mask = "xmask" + bounds_mask(("ih", "iw"), (height, width), (ph, pw))
    lanes.add_product(x, [n, FloorDiv(f, multiplier), ih, iw], weight, [f, 0, kh, kw], mask)
    lanes.w.end_loop()
    lanes.w.end_loop()
    return lanes.finish(_describe(name, root))


def emit_conv2d_input_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    grad, weight = root.inputs
    multiplier = weight.shape[0] // root.attrs["groups"]
    (sh, sw), (ph, pw), (dh, dw) = (root.attrs[k] for k in ("stride", "padding", "dilation"))
    lanes = _Lanes(name, root, written, names, epilogue, ("n", "c", "ih", "iw"))
    n, c, ih, iw = lanes.coords
    # the channel's k filters: a loop when k > 1 (not unrolled: k may be large)
    f = c * multiplier + lanes.loop("j", multiplier, static=False) if multiplier > 1 else c
    coords, taps, mask = [], [], "xmask"
    for t, o, i, k_size, stride, pad, dil, size in (("th", "oh", ih, weight.shape[2], sh, ph, dh, grad.shape[2]),
                                                    ("tw", "ow", iw, weight.shape[3], sw, pw, dw, grad.shape[3])):
        k = lanes.loop(f"k{o[1]}", k_size)
        taps.append(k)
        # the output pixel whose window holds the pixel at this tap: (i + pad - k*dil) / stride
        span = lanes.define(t, i + pad - k * dil, sympy.oo)  # may be negative: masked off below
        coords.append(lanes.define(o, FloorDiv(span, stride), size))
        mask += f" & ({t} >= 0) & ({o} < {size})" + (f" & ({t} % {stride} == 0)" if stride > 1 else "")
    lanes.add_product(grad, [n, f, *coords], weight, [f, 0, *taps], mask)
    for _ in range(2 + (multiplier > 1)):
        lanes.w.end_loop()
    return lanes.finish(_describe(name, root))


def emit_conv2d_weight_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    x, grad = root.inputs
    epilogue = tuple(epilogue)
    multiplier = root.shape[0] // root.attrs["groups"]
    (sh, sw), (ph, pw), (dh, dw) = (root.attrs[k] for k in ("stride", "padding", "dilation"))
    filters, _, kh_size, kw_size = root.shape
    batch, _, out_h, out_w = grad.shape
    height, width = x.shape[2:]
    xnumel, rnumel = shapes.numel(root.shape), shapes.numel([batch, out_h, out_w])
    w = KernelWriter(name, written - {root} - set(epilogue), names)
    xindex, rindex = index_var("xindex", xnumel), index_var("rindex", rnumel)
    w.lanes = (xindex,)
    xb, rb = w.constexpr("XBLOCK"), w.constexpr("RBLOCK")
    w.emit(f"xindex = tl.program_id(0) * {xb} + tl.arange(0, {xb})[:, None]")
    w.emit(f"xmask = xindex < {w.int_param('xnumel', xnumel)}")
    f = define(w, "f", FloorDiv(xindex, kh_size * kw_size), filters, "xindex")
    kh = define(w, "kh", ModularIndexing(xindex, kw_size, kh_size), kh_size, "xindex")
    kw = define(w, "kw", ModularIndexing(xindex, 1, kw_size), kw_size, "xindex")
    w.emit(f"acc = tl.zeros([{xb}, {rb}], tl.float32)", w.note(root))
    w.emit(f"for roffset in range(0, {w.int_param('rnumel', rnumel)}, {rb}):")
    w.indent += 1
    w.emit(f"rindex = roffset + tl.arange(0, {rb})[None, :]")
    n = define(w, "n", FloorDiv(rindex, out_h * out_w), batch, "rindex")
    oh = define(w, "oh", ModularIndexing(rindex, out_w, out_h), out_h, "rindex")
    ow = define(w, "ow", ModularIndexing(rindex, 1, out_w), out_w, "rindex")
    ih = define(w, "ih", oh * sh - ph + kh * dh, height, "rindex")
    iw = define(w, "iw", ow * sw - pw + kw * dw, width, "rindex")
    mask = w.mask = f"xmask & (rindex < {w.int_param('rnumel', rnumel)})" + \
        bounds_mask(("ih", "iw"), (height, width), (ph, pw))
    _accumulate(w, root, w.value(grad, [n, f, oh, ow]), w.value(x, [n, FloorDiv(f, multiplier), ih, iw]), mask)
    w.end_loop()
    w.emit("acc = tl.sum(acc, 1)[:, None]", w.note(root))
    w.computed.append(root)
    block = f"[{xb}, 1]"
    if root in written:
        w.store(root, xindex, "acc", "xmask", block)
    coords = unflatten(xindex, root.shape)
    w.provide(root, coords, "acc")
    w.epilogue(root, coords, xindex, epilogue, "xmask", block)
    summary = _describe(name, root) + (f" Then {len(epilogue)} elementwise output(s)." if epilogue else "")
    writes = ((root,) if root in written else ()) + epilogue
    return KernelSource(w.name, "depthwise", w.function(summary), w.ordered_params(), [(xnumel, "XBLOCK")],
                        writes, w.reads(), tuple(w.computed_in_order()), REDUCTION.name, {"x": xnumel, "r": rnumel})
