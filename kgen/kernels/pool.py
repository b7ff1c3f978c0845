"""The pooling templates: one lane per element written, XBLOCK lanes per program, and a
statically unrolled loop over the pooling window (tl.static_range).

    max_pool2d          out[n, c, oh, ow] = max over the window (padding reads -inf)
    max_pool2d_indices  out[n, c, oh, ow] = the window's argmax, as a flat index into the H x W plane
    max_pool2d_gather   out[n, c, oh, ow] = t at the window's argmax in x
    avg_pool2d          out[n, c, oh, ow] = sum over the window / its divisor
    max_pool2d_grad     dx[n, c, ih, iw]  = sum of g over the windows whose argmax is (ih, iw)
    avg_pool2d_grad     dx[n, c, ih, iw]  = sum over the windows holding (ih, iw) of g / divisor

The gradients gather rather than scatter, so they need no atomics and write every element
once: a lane visits the ceil(span/sh) x ceil(span/sw) windows that can hold its pixel (one,
when windows do not overlap; span is the dilated window's extent) and, for max pooling, finds
each one's argmax again. The argmax is the first maximum in window order, a NaN counting as
the maximum, or the first position inside the image when all values there are -inf (the op
table's rule). An average's divisor (kgen/ir/ops_conv.py's avg_divisor) is KH*KW, a
divisor_override, or per window a product of two clipped lengths computed in the kernel.
The options at torch's defaults emit the code they always did: bounds masks only where a
window can leave the image, dilation and per-window divisors only where they are set.

Image coordinates (`ih`, `oh`, ...) are Triton values of the kernel that the index
expressions use as index variables over the image: that holds wherever the mask is set,
and masked-off lanes load nothing.
"""
from __future__ import annotations

from kgen.ir import shapes
from kgen.ir.ops_conv import POOL_OPTIONS, pool_out_hw
from kgen.kernels.conv import define
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.pointwise import lanes_resources, lanes_space
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import FloorDiv, ModularIndexing, index_var, unflatten


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """One lane per element written, a window of loads each: smaller blocks than pointwise's."""
    x = dims["x"]
    if interpreted:
        return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
    return {"XBLOCK": min(max(next_pow2(x), 128), 512), "num_warps": 4}


def _space(dims: dict, tier: str, default: dict):
    """As pointwise, with smaller blocks: each lane loads a whole window."""
    return lanes_space(dims, tier, default, quick_blocks=(128, 512, 2048))


POOL = register(Family("pool", _default, _space, lanes_resources))


class PoolKernel:
    """The frame shared by the templates: lanes over the elements written, each lane's
    (n, c) plane and (row, column) in it, and the store."""

    def __init__(self, name: str, root, written: set, names: dict, epilogue=()):
        self.root, self.written, self.epilogue = root, written, tuple(epilogue)
        self.w = w = KernelWriter(name, written - {root} - set(epilogue), names)
        self.numel = shapes.numel(root.shape)
        self.xindex = xindex = index_var("xindex", self.numel)
        w.lanes = (xindex,)
        block = self.block = w.constexpr("XBLOCK")
        w.emit(f"xindex = tl.program_id(0) * {block} + tl.arange(0, {block})")
        w.emit(f"xmask = xindex < {w.int_param('xnumel', self.numel)}")
        batch, channels, rows, cols = root.shape
        self.loops = set()  # the index variables of tl.static_range loops: scalars
        self.plane = [self.define("n", FloorDiv(xindex, channels * rows * cols), batch),
                      self.define("c", ModularIndexing(xindex, rows * cols, channels), channels)]
        self.kernel_size, self.stride, self.padding = (root.attrs[k] for k in ("kernel_size", "stride", "padding"))
        self.dilation = root.attrs.get("dilation", (1, 1))
        self.span = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    def leaves(self, image_hw) -> tuple:
        """Per axis, whether a window can leave the image: into padding, or over the far
        edge (a ceil_mode window)."""
        out = pool_out_hw(image_hw, self.root.attrs)
        last_end = [(out[i] - 1) * self.stride[i] - self.padding[i] + self.span[i] for i in range(2)]
        return tuple(bool(self.padding[i]) or last_end[i] > image_hw[i] for i in range(2))

    def define(self, name: str, expr, bound):
        return define(self.w, name, expr, bound, "xindex", self.loops)

    def position(self, row: str, col: str) -> tuple:
        """Define `row` and `col`, this lane's coordinates in the output it writes."""
        rows, cols = self.root.shape[2:]
        return (self.define(row, ModularIndexing(self.xindex, cols, rows), rows),
                self.define(col, ModularIndexing(self.xindex, 1, cols), cols))

    def loop(self, var: str, count: int):
        """Open `for var in tl.static_range(count)` and return `var` as an index variable."""
        self.w.emit(f"for {var} in tl.static_range({count}):")
        self.w.indent += 1
        counter = index_var(var, count)
        self.loops.add(counter)
        return counter

    def window(self, image_hw, oh, ow, row: str, col: str, mask: str):
        """Open the loops over the window at output pixel (oh, ow) and define `row`, `col`
        (its image coordinates at window offset kh, kw) and the mask `self.inside` (`mask` and
        inside the image). Returns (row, col, kh, kw) as index variables; the caller closes
        the two loops."""
        (height, width), (kh_size, kw_size) = image_hw, self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        leave_h, leave_w = self.leaves(image_hw)
        kh = self.loop(f"k{row}", kh_size)
        i = self.define(row, oh * sh - ph + kh * dh, height)
        if leave_h:  # a window that never leaves the image needs no mask
            self.w.emit(f"{row}_inside = {mask} & ({row} >= 0) & ({row} < {height})")
            mask = f"{row}_inside"
        kw = self.loop(f"k{col}", kw_size)
        j = self.define(col, ow * sw - pw + kw * dw, width)
        if leave_w:
            self.w.emit(f"inside = {mask} & ({col} >= 0) & ({col} < {width})")
            mask = "inside"
        self.inside = self.w.mask = mask
        return i, j, kh, kw

    def read(self, node, coords) -> str:
        """`node` at `coords` under the current mask, as a block (a value the same in every
        lane, such as a one-element load, is spread over the block)."""
        value = self.w.value(node, coords)
        if value in self.w.uniform:
            value = self.w.assign(f"tl.zeros([{self.block}], tl.float32) + {value}", "u")
        return value

    def end_loops(self, count: int) -> None:
        self.w.indent -= count

    def masked(self, value: str, fill: str) -> str:
        """`value` where the window's mask holds, `fill` elsewhere."""
        if fill == "0.0" and value in self.w.masked_loads:  # a masked load reads 0.0 there already
            return value
        return self.w.assign(f"tl.where({self.inside}, {value}, {fill})", "t")

    def argmax_window(self, x, image_hw, oh, ow, mask: str, gather=None, flat=False) -> None:
        """Loop over the window at (oh, ow), keeping in `best` its maximum and in `arg` the
        argmax's window offset (kh*KW + kw); with `gather` also `picked`, that operand there;
        with `flat` also `position`, the argmax's flat index into the image (int64).
        Each of these is a step of computing the root, and says so."""
        w, note = self.w, self.w.note(self.root)
        if flat:
            w.emit(f"position = tl.zeros([{self.block}], tl.int64)", note)
        w.emit(f"best = tl.full([{self.block}], float('-inf'), tl.float32)", note)
        w.emit(f"arg = tl.zeros([{self.block}], tl.int32)", note)
        w.emit(f"found = tl.zeros([{self.block}], tl.int32)", note)  # 1 once a position inside the image is seen
        if gather is not None:
            w.emit(f"picked = tl.zeros([{self.block}], tl.float32)", note)
        i, j, kh, kw = self.window(image_hw, oh, ow, "jh", "jw", mask)
        value = self.read(x, self.plane + [i, j])
        # the first maximum; a NaN beats any number; the first position inside if all are -inf
        w.emit(f"take = {self.inside} & ((found == 0) | (~({value} <= best) & (best == best)))")
        w.emit(f"best = tl.where(take, {value}, best)", note)
        w.emit(f"arg = tl.where(take, {w.index(kh * self.kernel_size[1] + kw)}, arg)", note)
        if gather is not None:
            w.emit(f"picked = tl.where(take, {self.read(gather, self.plane + [i, j])}, picked)", note)
        if flat:
            w.emit(f"position = tl.where(take, {w.index(i * image_hw[1] + j)}, position)", note)
        w.emit(f"found = tl.where({self.inside}, 1, found)", note)
        self.end_loops(2)

    def covering_windows(self, ih, iw, out_hw):
        """Open the loops over the output pixels (oh, ow) whose windows can hold (ih, iw)
        and define them, the pixel's offset (dh, dw) in that window, and `covers` (xmask and
        the window holds the pixel). The caller closes the two loops."""
        w = self.w
        (sh, sw), (ph, pw) = self.stride, self.padding
        terms, coords = [], []
        (kh_span, kw_span), (dh, dw) = self.span, self.dilation
        for o, d, c, i, size, k, s, p, step in (("oh", "dh", "ch", ih, out_hw[0], kh_span, sh, ph, dh),
                                                ("ow", "dw", "cw", iw, out_hw[1], kw_span, sw, pw, dw)):
            back = self.loop(c, -(-k // s))  # windows start every s pixels: ceil(span / s) of them hold a pixel
            coords.append(self.define(o, FloorDiv(i + p, s) - back, size))
            w.emit(f"{d} = {w.index(i + p)} - {o} * {s}")
            terms += [f"({o} >= 0)", f"({o} < {size})", f"({d} < {k})"]
            if step > 1:  # a dilated window holds every step-th pixel of its span
                terms.append(f"({d} % {step} == 0)")
        w.emit("covers = xmask & " + " & ".join(terms))
        w.mask = "covers"
        return coords

    def finish(self, value: str, summary: str) -> KernelSource:
        """Store the result (if it is written) and compute the epilogue (fusion rule E1)."""
        w, root, block = self.w, self.root, f"[{self.block}]"
        w.computed.append(root)
        if root in self.written:
            w.store(root, self.xindex, value, "xmask", block)
        coords = unflatten(self.xindex, root.shape)
        w.provide(root, coords, value)
        w.epilogue(root, coords, self.xindex, self.epilogue, "xmask", block)
        if self.epilogue:
            summary += f" Then {len(self.epilogue)} elementwise output(s)."
        writes = ((root,) if root in self.written else ()) + self.epilogue
        return KernelSource(w.name, "pool", w.function(summary), w.ordered_params(), [(self.numel, "XBLOCK")],
                            writes, w.reads(), tuple(w.computed_in_order()), POOL.name, {"x": self.numel})

    def divisor(self, image_hw, oh, ow):
        """What the average of the window at (oh, ow) divides by: an int (KH*KW or the
        divisor_override), or the name of a value computed here, the product of the
        window's two lengths clipped as avg_divisor says (only where a clip can apply)."""
        attrs = self.root.attrs
        if attrs.get("divisor_override") is not None:
            return attrs["divisor_override"]
        include, out = attrs.get("count_include_pad", True), pool_out_hw(image_hw, attrs)
        lengths = []
        for o, size, k, s, p, n in zip((oh, ow), image_hw, self.kernel_size, self.stride, self.padding, out):
            reach = (n - 1) * s - p + k  # where the last window ends
            if not (reach > size + p if include else p or reach > size):
                lengths.append(str(k))  # no window of this axis is clipped
                continue
            start, stop = self.w.index(o * s - p), self.w.index(o * s - p + k)
            lengths.append(f"(tl.minimum({stop}, {size + p}) - ({start}))" if include else
                           f"(tl.minimum({stop}, {size}) - tl.maximum({start}, 0))")
        if all(length.isdigit() for length in lengths):
            return int(lengths[0]) * int(lengths[1])
        return self.w.assign(" * ".join(lengths), "d", self.w.note(self.root))


def _describe(name: str, root) -> str:
    a = root.attrs
    operands = " and ".join(shapes.format_shape(i.shape) for i in root.inputs)
    options = "".join(f", {k.replace('_', ' ')} {a[k]}" for k in POOL_OPTIONS if k in a)
    return (f"kgen {name}: {root.op} of {operands} -> {shapes.format_shape(root.shape)}, kernel "
            f"{a['kernel_size']}, stride {a['stride']}, padding {a['padding']}{options}.")


@template("max_pool2d")
def emit_max_pool2d(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (x,) = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    oh, ow = p.position("oh", "ow")
    p.w.emit(f"acc = tl.full([{p.block}], float('-inf'), tl.float32)", p.w.note(root))
    i, j, _, _ = p.window(x.shape[2:], oh, ow, "ih", "iw", "xmask")
    value = p.read(x, p.plane + [i, j])
    if any(p.leaves(x.shape[2:])):  # padding and the far side of the edge read -inf
        value = p.masked(value, "float('-inf')")
    p.w.emit(f"acc = tl.maximum(acc, {value}, propagate_nan=tl.PropagateNan.ALL)", p.w.note(root))
    p.end_loops(2)
    return p.finish("acc", _describe(name, root))


@template("max_pool2d_indices")
def emit_max_pool2d_indices(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (x,) = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    oh, ow = p.position("oh", "ow")
    p.argmax_window(x, x.shape[2:], oh, ow, "xmask", flat=True)
    return p.finish("position", _describe(name, root))


@template("max_pool2d_gather")
def emit_max_pool2d_gather(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    t, x = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    oh, ow = p.position("oh", "ow")
    p.argmax_window(x, x.shape[2:], oh, ow, "xmask", gather=t)
    return p.finish("picked", _describe(name, root))


@template("avg_pool2d")
def emit_avg_pool2d(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (x,) = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    oh, ow = p.position("oh", "ow")
    p.w.emit(f"acc = tl.zeros([{p.block}], tl.float32)", p.w.note(root))
    i, j, _, _ = p.window(x.shape[2:], oh, ow, "ih", "iw", "xmask")
    p.w.emit(f"acc += {p.masked(p.read(x, p.plane + [i, j]), '0.0')}", p.w.note(root))
    p.end_loops(2)
    divisor = p.divisor(x.shape[2:], oh, ow)
    return p.finish(p.w.assign(f"acc / {divisor}", "r", p.w.note(root)), _describe(name, root))


@template("max_pool2d_grad")
def emit_max_pool2d_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    grad, x = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    ih, iw = p.position("ih", "iw")
    p.w.emit(f"acc = tl.zeros([{p.block}], tl.float32)", p.w.note(root))
    oh, ow = p.covering_windows(ih, iw, grad.shape[2:])
    p.argmax_window(x, x.shape[2:], oh, ow, "covers")
    (dh, dw) = (f"(dh // {p.dilation[0]})", f"(dw // {p.dilation[1]})") if max(p.dilation) > 1 else ("dh", "dw")
    p.w.emit(f"mine = covers & (arg == {dh} * {p.kernel_size[1]} + {dw})")
    p.w.mask = "mine"
    p.w.emit(f"acc += tl.where(mine, {p.read(grad, p.plane + [oh, ow])}, 0.0)", p.w.note(root))
    p.end_loops(2)
    return p.finish("acc", _describe(name, root))


@template("avg_pool2d_grad")
def emit_avg_pool2d_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (grad,) = root.inputs
    p = PoolKernel(name, root, written, names, epilogue)
    ih, iw = p.position("ih", "iw")
    p.w.emit(f"acc = tl.zeros([{p.block}], tl.float32)", p.w.note(root))
    oh, ow = p.covering_windows(ih, iw, grad.shape[2:])
    divisor = p.divisor(root.shape[2:], oh, ow)
    value = p.read(grad, p.plane + [oh, ow])
    if isinstance(divisor, str):  # each window has its own divisor
        value = p.w.assign(f"{value} / {divisor}", "t")
    p.w.emit(f"acc += tl.where(covers, {value}, 0.0)", p.w.note(root))
    p.end_loops(2)
    if isinstance(divisor, str):
        return p.finish("acc", _describe(name, root))
    return p.finish(p.w.assign(f"acc / {divisor}", "r", p.w.note(root)), _describe(name, root))
