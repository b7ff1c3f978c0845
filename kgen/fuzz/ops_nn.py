"""Fuzz catalog entries for matmul (every rank combination), convolution and pooling, the
losses (with torch's keyword forms: reduction, class weight, ignore_index, label_smoothing,
probability targets, an extra dimension), embedding, one_hot, dropout and rand, iota and
constants, layer_norm and batch_norm (in training one of its three results, y or a new
running statistic, per step), and scan (a tanh recurrence over a short static axis 0,
forward or reverse). The gradient ops of convolution and
pooling are no kgen.ops functions, so none is drawn alone: every program that takes
gradients of conv2d or a pool builds them, and tests/ir/test_vjp.py checks them alone.
The pools draw torch's options, now and then an unbatched operand, and max pooling's
indices (return_indices) only of exact values, whose float32 compares cannot tie.

A mean loss's batch is never empty, and no mean loss ignores a class (all its rows ignored
would be 0/0); labels and embedding indices are integer inputs whose values lie in
[0, classes) with classes <= the op's class count (the table's rows).
"""
from __future__ import annotations

import math

from kgen.fuzz.catalog import Gen, broadcast, code_shape, float_pred, need, register, want_float
from kgen.fuzz.program import FLOAT, INTS, N, Illegal, Info, dims_equal, like, numel, shape_json, shape_of
from kgen.fuzz.ops_elementwise import partner


def _float(g: Gen, pred=None):
    x = g.pick(lambda i: float_pred(i) and (pred is None or pred(i)))
    if x is None:
        raise Illegal("no operand")
    return x


def pair(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def arg(v) -> str:
    return repr(tuple(v)) if isinstance(v, list) else repr(v)


# --- matmul -----------------------------------------------------------------------------------
def _matmul_infer(step, infos, sizes):
    a, b = infos
    want_float(a), want_float(b)
    need(len(a.shape) >= 1 and len(b.shape) >= 1, "matmul of a scalar")
    a2 = (1,) + a.shape if len(a.shape) == 1 else a.shape
    b2 = b.shape + (1,) if len(b.shape) == 1 else b.shape
    need(dims_equal(a2[-1], b2[-2]), "inner dims differ")
    shape = broadcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(b.shape) == 1:
        shape = shape[:-1]
    if len(a.shape) == 1:
        shape = shape[:-2] + shape[-1:] if len(b.shape) > 1 else shape[:-1]
    m = sizes.high(a2[-1]) * a.mag * b.mag
    return Info(shape, FLOAT, -m, m)


def _matmul_propose(g: Gen):
    if g.chance(0.3):
        a = g.new_input(g.shape(g.rng.randint(1, 4)), "float")
    else:
        a = _float(g, lambda i: len(i.shape) >= 1)
    ashape = g.infos[a].shape
    k = ashape[-1]
    rank = g.rng.randint(1, 4)
    if rank == 1:
        bshape = (k,)
    else:
        abatch = ashape[:-2]
        batch = []
        for j in range(rank - 2):
            at = len(abatch) - (rank - 2) + j
            d = abatch[at] if at >= 0 else g.dim(allow_n=all(isinstance(x, int) for x in ashape))
            batch.append(1 if g.chance(0.2) else d)
        bshape = tuple(batch) + (k, g.dim(allow_n=all(isinstance(x, int) for x in ashape)))
    if sum(1 for d in bshape if d == N) > 1 or not g.fits(bshape):
        raise Illegal("b too large")
    b = g.operand(bshape, shared=0.5)
    g.add("matmul", [a, b], spell=g.choice(["fn", "op"]))


register("matmul", _matmul_propose, _matmul_infer,
         lambda step, args, infos: f"({args[0]} @ {args[1]})" if step.get("spell") == "op" else
         f"ops.matmul({args[0]}, {args[1]})",
         lambda step, args, infos: f"torch.matmul({args[0]}, {args[1]})", weight=2.0)


# --- convolution and pooling ---------------------------------------------------------------------
def _out(size, k, s, p, d=1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_padding(padding, kernel, stride, dilation) -> tuple:
    """The padding summed over both sides of each axis ("same" pads one more after the
    image than before it where the window's span less one is odd, as torch does)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        need(stride == (1, 1), "'same' needs stride 1")
        return tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    return tuple(2 * p for p in pair(padding))


def _nchw(x: Info, layout: str) -> tuple:
    need(len(x.shape) in (3, 4), "a 4-D tensor or an unbatched 3-D one")
    shape = x.shape if len(x.shape) == 4 else (1,) + x.shape  # unbatched: a batch of one
    if layout == "NHWC":
        shape = (shape[0], shape[3], shape[1], shape[2])
    need(all(isinstance(d, int) for d in shape[1:]), "C, H, W must be static")
    return shape


def _conv_geometry(step, kernel):
    """stride, padding summed over both sides, dilation."""
    stride, dilation = pair(step["stride"]), pair(step["dilation"])
    padding = _conv_padding(step["padding"], kernel, stride, dilation)
    need(min(stride) >= 1 and min(dilation) >= 1 and min(padding) >= 0, "bad conv attributes")
    return stride, padding, dilation


def _conv_out(size, k, s, both, d) -> int:
    return (size + both - d * (k - 1) - 1) // s + 1


def _conv_infer(step, infos, sizes):
    x, w = infos[:2]
    want_float(x), want_float(w)
    n, c, h, wd = _nchw(x, step.get("layout", "NCHW"))
    need(len(w.shape) == 4 and all(isinstance(d, int) for d in w.shape), "w is a static [F, C/groups, KH, KW]")
    f, wc, kh, kw = w.shape
    groups = step.get("groups", 1)
    need(groups >= 1 and wc * groups == c and f % groups == 0, "channels differ")
    stride, padding, dilation = _conv_geometry(step, (kh, kw))
    oh, ow = (_conv_out(h, kh, stride[0], padding[0], dilation[0]), _conv_out(wd, kw, stride[1], padding[1], dilation[1]))
    need(oh >= 1 and ow >= 1, "the window is larger than the padded input")
    m = wc * kh * kw * x.mag * w.mag
    if len(infos) == 3:
        need(infos[2].shape == (f,), "bias is [F]")
        m += infos[2].mag
    shape = (n, oh, ow, f) if step.get("layout") == "NHWC" else (n, f, oh, ow)
    return Info(shape if len(x.shape) == 4 else shape[1:], FLOAT, -m, m)


def _image(g: Gen, layout="NCHW", channels=None, unbatched=False):
    """A 4-D float value with static C, H, W (an existing one, or a new input); with
    `unbatched`, a new 3-D one ([C, H, W] or [H, W, C]) at times."""
    if unbatched and g.chance(0.15):
        c, h, w = g.choice([1, 2, 3, 4]), g.rng.randint(1, 7), g.rng.randint(1, 7)
        x = g.new_input((h, w, c) if layout == "NHWC" else (c, h, w), "float")
        return x, _nchw(g.infos[x], layout)

    def fits(i):
        if i.dtype != FLOAT or len(i.shape) != 4:
            return False
        s = (i.shape[0], i.shape[3], i.shape[1], i.shape[2]) if layout == "NHWC" else i.shape
        return all(isinstance(d, int) for d in s[1:]) and min(s[2:]) >= 1 and (channels is None or s[1] == channels)
    x = g.pick(fits)
    if x is None or g.chance(0.3):
        c = channels if channels is not None else g.choice([1, 2, 3, 1, 0] if g.chance(0.1) else [1, 2, 3])
        h, w = g.rng.randint(1, 7), g.rng.randint(1, 7)
        n = g.dim()
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        if not g.fits(shape):
            shape = (1, h, w, c) if layout == "NHWC" else (1, c, h, w)
        x = g.new_input(shape, "float")
    info = g.infos[x]
    return x, _nchw(info, layout)


def _draw_conv(g: Gen, h, w):
    """kernel, stride, padding (ints, pairs, 'valid' or 'same'), dilation that fit h x w."""
    for _ in range(30):
        kernel = (g.rng.randint(1, 3), g.rng.randint(1, 3))
        stride = g.choice([1, 1, 2, [1, 2], [2, 1]])
        dilation = g.choice([1, 1, 2, [1, 2]])
        padding = g.choice([0, 1, 2, [0, 1], [1, 0], "valid", "same"])
        try:
            s, p, d = _conv_geometry({"stride": stride, "padding": padding, "dilation": dilation}, kernel)
        except Illegal:
            continue
        if _conv_out(h, kernel[0], s[0], p[0], d[0]) >= 1 and _conv_out(w, kernel[1], s[1], p[1], d[1]) >= 1:
            return kernel, stride, padding, dilation
    raise Illegal("no conv fits")


def _draw_groups(g: Gen, c: int) -> tuple:
    """groups (1, a divisor of c, or c: depthwise) and a filter count it divides."""
    groups = g.choice([1, 1, c, c] + [d for d in range(2, c) if c % d == 0]) if c > 1 else 1
    if groups == 1:
        return 1, g.choice([1, 2, 3, 4] + ([0] if g.chance(0.05) else []))
    return groups, groups * g.choice([1, 1, 2])


def _conv_propose(g: Gen):
    layout = "NHWC" if g.chance(0.3) else "NCHW"
    x, (n, c, h, w) = _image(g, layout, unbatched=True)
    kernel, stride, padding, dilation = _draw_conv(g, h, w)
    groups, f = _draw_groups(g, c)
    wt = g.operand((f, c // groups) + kernel, shared=0.6)
    ins = [x, wt] + ([g.operand((f,), shared=0.6)] if g.chance(0.5) else [])
    g.add("conv2d", ins, stride=stride, padding=padding, dilation=dilation, layout=layout, groups=groups)


def _conv_kgen(step, args, infos):
    bias = args[2] if len(args) == 3 else "None"
    return (f"ops.conv2d({args[0]}, {args[1]}, {bias}, stride={arg(step['stride'])}, "
            f"padding={arg(step['padding'])}, dilation={arg(step['dilation'])}, layout={step['layout']!r}, "
            f"groups={step.get('groups', 1)})")


def _conv_torch(step, args, infos):
    bias = args[2] if len(args) == 3 else "None"
    return (f"T.conv2d({args[0]}, {args[1]}, {bias}, {pair(step['stride'])!r}, {arg(step['padding'])}, "
            f"{pair(step['dilation'])!r}, {step['layout']!r}, {step.get('groups', 1)})")


register("conv2d", _conv_propose, _conv_infer, _conv_kgen, _conv_torch, weight=1.5)


def _pool_out_ceil(size, k, s, p, d, ceil) -> int:
    """torch's pooled length: ceil_mode rounds up, less a window starting past the input and its padding."""
    reach = size + 2 * p - d * (k - 1) - 1
    if not ceil:
        return reach // s + 1
    out = -(-reach // s) + 1
    return out - 1 if (out - 1) * s >= size + p else out


# conv1d: x [N, C, L] or [C, L], w [F, C/groups, K]; stride, padding and dilation are ints
# (or, for padding, "same" / "valid"), checked as conv2d's second axis with a first of 1
def _conv1d_infer(step, infos, sizes):
    x, w = infos[:2]
    need(len(x.shape) in (2, 3) and len(w.shape) == 3, "x [N, C, L] or [C, L], w [F, C/groups, K]")
    x4 = Info(x.shape[:-1] + (1,) + x.shape[-1:], x.dtype, x.lo, x.hi)
    w4 = Info(w.shape[:2] + (1,) + w.shape[2:], w.dtype, w.lo, w.hi)
    padding = step["padding"] if isinstance(step["padding"], str) else [0, step["padding"]]
    conv = {"stride": [1, step["stride"]], "padding": padding, "dilation": [1, step["dilation"]],
            "groups": step["groups"]}
    out = _conv_infer(conv, [x4, w4] + list(infos[2:]), sizes)
    return Info(out.shape[:-2] + out.shape[-1:], out.dtype, out.lo, out.hi)


def _conv1d_propose(g: Gen):
    if g.chance(0.2):
        c = g.choice([1, 2, 3, 4])
        x = g.new_input((c, g.rng.randint(1, 9)), "float")
    else:
        x = g.pick(lambda i: i.dtype == FLOAT and len(i.shape) == 3 and all(isinstance(d, int) for d in i.shape[1:])
                   and i.shape[2] >= 1)
        if x is None or g.chance(0.3):
            x = g.new_input((g.dim(), g.choice([1, 2, 3, 4]), g.rng.randint(1, 9)), "float")
    c, length = g.infos[x].shape[-2:]
    groups, f = _draw_groups(g, c)
    kernel, stride, dilation = g.rng.randint(1, 3), g.choice([1, 1, 2]), g.choice([1, 1, 2])
    padding = g.choice([0, 1, 2, "valid"] + (["same"] if stride == 1 else []))
    if _conv_out(length, kernel, stride, _conv_padding(padding, (kernel,), (stride,), (dilation,))[0], dilation) < 1:
        raise Illegal("the window is larger than the padded input")
    wt = g.operand((f, c // groups, kernel), shared=0.6)
    ins = [x, wt] + ([g.operand((f,), shared=0.6)] if g.chance(0.5) else [])
    g.add("conv1d", ins, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _conv1d_kgen(step, args, infos):
    bias = args[2] if len(args) == 3 else "None"
    return (f"ops.conv1d({args[0]}, {args[1]}, {bias}, stride={step['stride']!r}, padding={step['padding']!r}, "
            f"dilation={step['dilation']!r}, groups={step['groups']})")


def _conv1d_torch(step, args, infos):
    bias = args[2] if len(args) == 3 else "None"
    return (f"T.conv1d({args[0]}, {args[1]}, {bias}, {step['stride']!r}, {step['padding']!r}, "
            f"{step['dilation']!r}, {step['groups']})")


register("conv1d", _conv1d_propose, _conv1d_infer, _conv1d_kgen, _conv1d_torch, weight=0.75)


def _pool_geometry(step):
    k = pair(step["kernel_size"])
    s = k if step.get("stride") is None else pair(step["stride"])
    p, d = pair(step["padding"]), pair(step.get("dilation", 1))
    need(min(k) >= 1 and min(s) >= 1 and min(p) >= 0 and min(d) >= 1, "bad pool attributes")
    need(p[0] <= k[0] // 2 and p[1] <= k[1] // 2, "padding over half the kernel")
    return k, s, p, d


def _pool_out(step, h, w):
    k, s, p, d = _pool_geometry(step)
    ceil = step.get("ceil_mode", False)
    out = tuple(_pool_out_ceil(size, k[i], s[i], p[i], d[i], ceil) for i, size in enumerate((h, w)))
    need(min(out) >= 1, "the window is larger than the padded input")
    for i, size in enumerate((h, w)):  # a dilated window may step over the whole image: kgen refuses it
        need(all(any(0 <= o * s[i] - p[i] + j * d[i] < size for j in range(k[i])) for o in range(out[i])),
             "a window holds no input element")
    return out


def _spatial(x: Info, rank: int) -> tuple:
    """A pool's operand: [N, C, *spatial] or unbatched [C, *spatial], C and spatial static."""
    need(len(x.shape) in (rank + 1, rank + 2), f"a {rank + 2}-D or {rank + 1}-D tensor")
    need(all(isinstance(d, int) for d in x.shape[-rank - 1:]), "C and the spatial sizes must be static")
    return x.shape[:-rank], x.shape[-rank:]


def _pool_infer(step, infos, sizes):
    (x,) = infos
    want_float(x)
    rank = 1 if step["op"].endswith("1d") else 2
    lead, hw = _spatial(x, rank)
    out = _pool_out(step, *((1,) + hw if rank == 1 else hw))[2 - rank:]
    shape = lead + out
    if step.get("return_indices"):
        need(x.exact, "argmax of values float32 may round into a tie")
        return Info(shape, "int64", 0, max(0, numel(hw) - 1), exact=True)
    if step["op"].startswith("max"):
        return like(x, shape=shape)
    k = pair(step["kernel_size"])
    scale = max(1.0, k[0] * k[1] / step["divisor_override"]) if step.get("divisor_override") else 1.0
    return Info(shape, FLOAT, min(x.lo, 0) * scale, max(x.hi, 0) * scale)


def _draw_pool(g: Gen, name, h, w):
    """Attributes of pool `name` fitting h x w: kernel, stride, padding and some of the options."""
    for _ in range(30):
        one_d = name.endswith("1d")
        attrs = {"kernel_size": g.choice([1, 2, 3] if one_d else [1, 2, 3, [2, 1], [1, 3]]),
                 "stride": g.choice([None, None, 1, 2] if one_d else [None, None, 1, 2, [1, 2]]),
                 "padding": g.choice([0, 0, 1] if one_d else [0, 0, 1, [0, 1], [1, 0]]),
                 "ceil_mode": g.chance(0.3)}
        if name.startswith("max"):
            attrs["dilation"] = g.choice([1, 1, 2] if one_d else [1, 1, 2, [1, 2]])
            attrs["return_indices"] = g.chance(0.25)
        else:
            attrs["count_include_pad"] = not g.chance(0.3)
            if name == "avg_pool2d":
                attrs["divisor_override"] = g.choice([None, None, None, 1, 3])
        try:
            _pool_out(attrs, h, w)
            return attrs
        except Illegal:
            continue
    raise Illegal("no pool fits")


def _pool_operand(g: Gen, rank: int):
    """An operand of a `rank`-D pool: an image (rank 2) or a sequence [N, C, L] (rank 1), or
    now and then one without its batch axis."""
    unbatched = g.chance(0.15)
    if rank == 2 and not unbatched:
        x, (n, c, h, w) = _image(g)
        return x, (h, w)

    def fits(i):
        return i.dtype == FLOAT and len(i.shape) == rank + 2 - unbatched and \
            all(isinstance(d, int) for d in i.shape[-rank - 1:]) and min(i.shape[-rank:]) >= 1
    x = g.pick(fits)
    if x is None or g.chance(0.3):
        spatial = tuple(g.rng.randint(1, 7) for _ in range(rank))
        shape = (g.choice([1, 2, 3]),) + spatial
        shape = shape if unbatched else (g.dim(),) + shape
        x = g.new_input(shape if g.fits(shape) else shape[-rank - 1:], "float")
    hw = g.infos[x].shape[-rank:]
    return x, ((1,) + hw if rank == 1 else hw)


def _pool_propose(name):
    def propose(g: Gen):
        x, (h, w) = _pool_operand(g, 1 if name.endswith("1d") else 2)
        g.add(name, [x], **_draw_pool(g, name, h, w))
    return propose


_POOL_OPTIONS = ("dilation", "ceil_mode", "return_indices", "count_include_pad", "divisor_override")


def _pool_options(step) -> str:
    return "".join(f", {k}={arg(step[k])}" for k in _POOL_OPTIONS if k in step)


def _pool_kgen(step, args, infos):
    index = "[1]" if step.get("return_indices") else ""
    return (f"ops.{step['op']}({args[0]}, {arg(step['kernel_size'])}, stride={arg(step['stride'])}, "
            f"padding={arg(step['padding'])}{_pool_options(step)}){index}")


def _pool_torch(step, args, infos):
    fn = f"T.{step['op']}"  # torch's pooling refuses tensors without channels; T's does not
    return (f"{fn}({args[0]}, {arg(step['kernel_size'])}, {arg(step['stride'])}, {arg(step['padding'])}"
            f"{_pool_options(step)})")


register("max_pool2d", _pool_propose("max_pool2d"), _pool_infer, _pool_kgen, _pool_torch)
register("avg_pool2d", _pool_propose("avg_pool2d"), _pool_infer, _pool_kgen, _pool_torch)
register("max_pool1d", _pool_propose("max_pool1d"), _pool_infer, _pool_kgen, _pool_torch, weight=0.5)
register("avg_pool1d", _pool_propose("avg_pool1d"), _pool_infer, _pool_kgen, _pool_torch, weight=0.5)


def _adaptive_infer(step, infos, sizes):
    (x,) = infos
    want_float(x)
    rank = 1 if step["op"].endswith("1d") else 2
    lead, hw = _spatial(x, rank)
    out = pair(step["output_size"]) if rank == 2 else (step["output_size"],)
    out = tuple(size if o is None else o for o, size in zip(out, hw))
    need(min(out) >= 1, "an output size of at least 1")
    return Info(lead + out, FLOAT, min(x.lo, 0), max(x.hi, 0))


def _adaptive_propose(name):
    def propose(g: Gen):
        x, (h, w) = _pool_operand(g, 1 if name.endswith("1d") else 2)
        sizes = [1, 2, 3, w, max(1, w // 2), w + 1]
        if name.endswith("1d"):
            g.add(name, [x], output_size=g.choice(sizes))
        else:
            pair_size = [g.choice([1, 2, h, None]), g.choice(sizes + [None])]
            g.add(name, [x], output_size=g.choice([g.choice(sizes), pair_size]))
    return propose


def _adaptive_kgen(step, args, infos):
    return f"ops.{step['op']}({args[0]}, {arg(step['output_size'])})"


def _adaptive_torch(step, args, infos):
    return f"T.{step['op']}({args[0]}, {arg(step['output_size'])})"


register("adaptive_avg_pool2d", _adaptive_propose("adaptive_avg_pool2d"), _adaptive_infer, _adaptive_kgen,
         _adaptive_torch, weight=0.5)
register("adaptive_avg_pool1d", _adaptive_propose("adaptive_avg_pool1d"), _adaptive_infer, _adaptive_kgen,
         _adaptive_torch, weight=0.5)


# --- losses and labels ------------------------------------------------------------------------
def labels(g: Gen, shape, classes: int) -> str:
    """Integer labels of `shape` in [0, classes): an existing value, or a new input."""
    name = g.pick(lambda i: i.dtype in INTS and i.classes is not None and i.classes <= classes
                  and len(i.shape) == len(shape) and all(dims_equal(a, b) for a, b in zip(i.shape, shape)))
    if name is not None and g.chance(0.6):
        return name
    return g.new_input(shape, "label", g.choice(INTS), classes=max(1, classes - g.rng.randint(0, 1)))


LOSS_WEIGHTS = (0.5, 1.0, 1.25, 2.0, 0.75)  # class weights, exact in float32


def _class_weights(step) -> list:
    """One weight per class (or per last-axis element) of a weighted loss step, else None."""
    if not step.get("weighted"):
        return None
    return [LOSS_WEIGHTS[k % len(LOSS_WEIGHTS)] for k in range(step["classes"])]


def _per_element_shape(step, x: Info) -> tuple:
    """The shape of a class loss with reduction 'none': x's without its class axis (axis 1)."""
    return x.shape[:1] + x.shape[2:]


def _class_infer(step, infos, sizes):
    x, lab = infos
    want_float(x)
    need(len(x.shape) in (2, 3) and isinstance(x.shape[1], int) and x.shape[1] >= 1, "[B, C(, d)] with C static")
    classes, reduction = x.shape[1], step.get("reduction", "mean")
    need(step.get("classes", classes) == classes, "weights for the classes")
    if step.get("probabilities"):
        need(lab.dtype == FLOAT and len(lab.shape) == len(x.shape)
             and all(dims_equal(a, b) for a, b in zip(lab.shape, x.shape)), "probabilities of x's shape")
        need(lab.lo >= 0 and lab.hi <= 1, "probabilities in [0, 1]")
    else:
        target = _per_element_shape(step, x)
        need(len(lab.shape) == len(target) and all(dims_equal(a, b) for a, b in zip(lab.shape, target)),
             "one label per row")
        need(lab.dtype in INTS and lab.classes is not None and lab.classes <= classes, "labels in range")
        ignore = step.get("ignore_index", -100)
        need(ignore == -100 or (0 <= ignore < classes and reduction != "mean"),
             "an ignored class (never with a mean, which all-ignored rows make 0/0)")
    need(reduction != "mean" or sizes.low(numel(_per_element_shape(step, x))) >= 1, "a mean over no rows")
    spread = (x.hi - x.lo) + math.log(classes)
    per = (-x.mag, x.mag) if step["op"] == "nll_loss" else (0.0, spread * (classes if step.get("probabilities") else 1))
    scale = max(LOSS_WEIGHTS) if step.get("weighted") and reduction != "mean" else 1.0
    if reduction == "sum":
        scale *= sizes.high(numel(_per_element_shape(step, x)))
    shape = _per_element_shape(step, x) if reduction == "none" else ()
    return Info(shape, FLOAT, min(0.0, per[0] * scale), per[1] * scale)


def _class_propose(name):
    def propose(g: Gen):
        x = g.pick(lambda i: float_pred(i) and len(i.shape) in (2, 3) and isinstance(i.shape[1], int)
                   and i.shape[1] >= 1 and g.low(i.shape[0]) >= 1)
        if x is None or g.chance(0.3):
            b = g.dim(allow_zero=False)
            extra = (g.rng.randint(1, 3),) if g.chance(0.25) else ()
            x = g.new_input((b if g.low(b) >= 1 else 2, g.rng.randint(1, 6)) + extra, "float")
        if name == "nll_loss" and g.chance(0.5):
            x = g.add("log_softmax", [x], axis=1)
        shape = g.infos[x].shape
        forms = {}
        if g.chance(0.5):  # torch's keyword forms; the rest of the time, the default build
            forms["reduction"] = g.choice(["none", "sum", "mean"])
            if g.chance(0.4):
                forms.update(weighted=True, classes=shape[1])
            if forms["reduction"] != "mean" and g.chance(0.4):
                forms["ignore_index"] = g.rng.randrange(shape[1])
            if name == "cross_entropy" and g.chance(0.4):
                forms["label_smoothing"] = g.choice([0.1, 0.25])
            if name == "cross_entropy" and "ignore_index" not in forms and g.chance(0.3):
                forms["probabilities"] = True
                target = g.operand(shape, "prob", pred=lambda i: i.lo >= 0 and i.hi <= 1)
                g.add(name, [x, target], **forms)
                return
        g.add(name, [x, labels(g, _per_element_shape({}, g.infos[x]), shape[1])], **forms)
    return propose


def _class_code(step, lib: str) -> str:
    """The keyword arguments of a class loss step, in kgen's (lib "kgen") or torch's spelling."""
    parts = []
    weights = _class_weights(step)
    if weights:
        parts.append(f"weight=np.array({weights!r}, np.float32)" if lib == "kgen" else f"weight=torch.tensor({weights!r}, dtype=torch.float64)")
    for key in ("ignore_index", "reduction", "label_smoothing"):
        if key in step:
            parts.append(f"{key}={step[key]!r}")
    return "".join(", " + p for p in parts)


def _class_torch(step, args, infos):
    target = args[1] if step.get("probabilities") else f"{args[1]}.long()"
    return f"F.{step['op']}({args[0]}, {target}{_class_code(step, 'torch')})"


for _name in ("cross_entropy", "nll_loss"):
    register(_name, _class_propose(_name), _class_infer,
             lambda step, args, infos, _n=_name: f"ops.{_n}({args[0]}, {args[1]}{_class_code(step, 'kgen')})",
             _class_torch)


def _pair_loss_infer(step, infos, sizes):
    p, t = infos
    want_float(p), want_float(t)
    shape = broadcast(p.shape, t.shape)
    reduction = step.get("reduction", "mean")
    need(reduction != "mean" or sizes.low(numel(shape)) >= 1, "a mean over no elements")
    if step["op"] in ("mse", "mse_loss"):
        hi = (p.mag + t.mag) ** 2
    else:
        need(p.lo >= 0.02 and p.hi <= 0.98, "probabilities in [0.02, 0.98]")
        need(t.lo >= 0 and t.hi <= 1, "targets in [0, 1]")
        need(len(p.shape) == len(shape) and all(dims_equal(a, b) for a, b in zip(p.shape, shape)),
             "torch's binary_cross_entropy takes prob of the target's shape")
        hi = -math.log(min(p.lo, 1 - p.hi)) * (max(LOSS_WEIGHTS) if step.get("weighted") else 1.0)
    if reduction == "sum":
        hi *= sizes.high(numel(shape))
    return Info(shape if reduction == "none" else (), FLOAT, 0.0, hi)


def _pair_loss_propose(name):
    def propose(g: Gen):
        p = _float(g)
        if g.low(numel(g.infos[p].shape)) < 1:
            raise Illegal("empty")
        forms = {"reduction": g.choice(["none", "sum", "mean"])} if g.chance(0.4) else {}
        if name in ("mse", "mse_loss"):
            t = partner(g, p, float_pred) if g.chance(0.6) else g.operand(g.infos[p].shape)
            t = g.to_float(t)
        else:
            p = g.prob(p)
            t = g.operand(g.infos[p].shape, "prob", pred=lambda i: i.lo >= 0 and i.hi <= 1)
            shape = g.infos[p].shape
            if shape and isinstance(shape[-1], int) and g.chance(0.3):
                forms.update(weighted=True, classes=shape[-1])  # a weight per last-axis element, broadcast
        g.add(name, [p, t], **forms)
    return propose


def _pair_loss_code(step, lib: str) -> str:
    parts = []
    weights = _class_weights(step)
    if weights:
        parts.append(f"weight=np.array({weights!r}, np.float32)" if lib == "kgen" else f"weight=torch.tensor({weights!r}, dtype=torch.float64)")
    if "reduction" in step:
        parts.append(f"reduction={step['reduction']!r}")
    return "".join(", " + p for p in parts)


for _name in ("mse", "mse_loss"):
    register(_name, _pair_loss_propose(_name), _pair_loss_infer,
             lambda step, args, infos, _n=_name: f"ops.{_n}({args[0]}, {args[1]}{_pair_loss_code(step, 'kgen')})",
             lambda step, args, infos: f"T.mse({args[0]}, {args[1]}{_pair_loss_code(step, 'torch')})",
             weight=1.0 if _name == "mse" else 0.5)
register("binary_cross_entropy", _pair_loss_propose("binary_cross_entropy"), _pair_loss_infer,
         lambda step, args, infos: f"ops.binary_cross_entropy({args[0]}, {args[1]}{_pair_loss_code(step, 'kgen')})",
         lambda step, args, infos: f"T.binary_cross_entropy({args[0]}, {args[1]}{_pair_loss_code(step, 'torch')})")


# --- embedding: rows of a table by index ---------------------------------------------------------
def _embedding_infer(step, infos, sizes):
    index, table = infos
    want_float(table, "the table")
    need(len(table.shape) == 2 and all(isinstance(d, int) for d in table.shape) and table.shape[0] >= 1,
         "a static table [V, D]")
    need(index.dtype in INTS and index.classes is not None and index.classes <= table.shape[0], "indices in range")
    padding = step.get("padding_idx")
    need(padding is None or 0 <= padding < table.shape[0], "padding_idx inside the table")
    return like(table, shape=index.shape + (table.shape[1],))


def _embedding_propose(g: Gen):
    table = g.pick(lambda i: float_pred(i) and len(i.shape) == 2 and all(isinstance(d, int) for d in i.shape)
                   and i.shape[0] >= 1)
    if table is None or g.chance(0.5):
        table = g.operand((g.rng.randint(1, 6), g.dim(allow_n=False)), shared=0.7)
    rows = g.infos[table].shape[0]
    index = labels(g, g.shape(g.rng.randint(0, 3)), rows)
    g.add("embedding", [index, table], padding_idx=g.rng.randrange(rows) if g.chance(0.4) else None)


register("embedding", _embedding_propose, _embedding_infer,
         lambda step, args, infos: f"ops.embedding({args[0]}, {args[1]}, padding_idx={step['padding_idx']!r})",
         lambda step, args, infos: f"F.embedding({args[0]}.long(), {args[1]}, padding_idx={step['padding_idx']!r})")


def _one_hot_infer(step, infos, sizes):
    (lab,) = infos
    need(lab.dtype in INTS and lab.classes is not None and lab.classes <= step["classes"], "labels in range")
    return Info(lab.shape + (step["classes"],), step["dtype"], 0, 1, 0.0, True)


def _one_hot_propose(g: Gen):
    lab = g.pick(lambda i: i.classes is not None and i.dtype in INTS)
    if lab is None or g.chance(0.3):
        lab = labels(g, g.shape(g.rng.randint(0, 2)), g.rng.randint(1, 5))
    classes = g.infos[lab].classes + g.rng.randint(0, 2)
    g.add("one_hot", [lab], classes=classes, dtype=g.choice([FLOAT, FLOAT, "int32"]))


register("one_hot", _one_hot_propose, _one_hot_infer,
         lambda step, args, infos: f"ops.one_hot({args[0]}, {step['classes']}, {step['dtype']!r})",
         lambda step, args, infos: f"F.one_hot({args[0]}.long(), {step['classes']})"
                                   f".to({'torch.float64' if step['dtype'] == FLOAT else 'torch.int32'})")


# --- random values ------------------------------------------------------------------------------
def _dropout_infer(step, infos, sizes):
    (x,) = infos
    want_float(x)
    p = step["p"]
    need(0 <= p <= 1, "p in [0, 1]")
    if not step["training"] or p == 0:
        return like(x)
    if p == 1:
        return Info(x.shape, FLOAT, 0.0, 0.0)
    s = 1 / (1 - p)
    return Info(x.shape, FLOAT, min(x.lo * s, 0), max(x.hi * s, 0))


def _dropout_propose(g: Gen):
    x = _float(g)
    g.add("dropout", [x], p=g.choice([0.5, 0.25, 0.75, 0.0, 1.0, 0.5]), seed=g.rng.randint(0, 2**31 - 1),
          training=g.chance(0.85))


register("dropout", _dropout_propose, _dropout_infer,
         lambda step, args, infos: f"ops.dropout({args[0]}, {step['p']!r}, {step['seed']}, training={step['training']})",
         lambda step, args, infos: f"T.dropout({args[0]}, {step['p']!r}, {step['seed']}, {step['training']})")


def _source_propose(name):
    def propose(g: Gen):
        if name == "size_constant":
            if not g.symbolic:
                raise Illegal("no N")
            g.add(name, [], expr=g.choice(["N", "2*N", "N + 1"]))
            return
        like_value = g.pick()
        shape = g.infos[like_value].shape if like_value is not None and g.chance(0.6) else \
            g.shape(g.rng.randint(0, 3), allow_n=name != "constant")
        if name == "rand":
            g.add(name, [], shape=shape_json(shape), seed=g.rng.randint(0, 2**31 - 1))
        elif name == "iota":
            if not shape:
                shape = (g.rng.randint(1, 5),)
            g.add(name, [], shape=shape_json(shape), axis=g.rng.randrange(len(shape)),
                  dtype=g.choice(["int32", "int64", FLOAT]))
        else:
            if any(not isinstance(d, int) for d in shape):
                raise Illegal("constants are static")
            count = numel(shape)
            values = [g.choice([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]) * g.choice([1, -1]) for _ in range(count)]
            g.add(name, [], shape=shape_json(shape), values=values)
    return propose


def _source_infer(step, infos, sizes):
    op = step["op"]
    if op == "size_constant":
        e = shape_of([step["expr"]])[0]
        return Info((), FLOAT, sizes.low(e), sizes.high(e), 0.0, True)
    shape = shape_of(step["shape"])
    for d in shape:
        sizes.high(d)  # symbolic dims need sizes
    if op == "rand":
        return Info(shape, FLOAT, 0.0, 1.0, 0.0, True)
    if op == "iota":
        need(len(shape) >= 1, "iota needs an axis")
        a = step["axis"]
        need(0 <= a < len(shape), "axis out of range")
        return Info(shape, step["dtype"], 0, max(0, sizes.high(shape[a]) - 1), 0.0, True)
    need(all(isinstance(d, int) for d in shape) and len(step["values"]) == numel(shape), "values fit the shape")
    values = step["values"] or [0.0]
    return Info(shape, FLOAT, min(values), max(values), min(abs(v) for v in values), True)


def _source_kgen(step, args, infos):
    op = step["op"]
    if op == "size_constant":
        return f"ops.size_constant({step['expr']})"
    shape = code_shape(shape_of(step["shape"]))
    if op == "rand":
        return f"ops.rand({shape}, {step['seed']})"
    if op == "iota":
        return f"ops.iota({shape}, {step['axis']}, {step['dtype']!r})"
    if not step["shape"]:
        return f"ops.constant({step['values'][0]!r})"
    return f"ops.constant(np.array({step['values']!r}, np.float32).reshape({shape}))"


def _source_torch(step, args, infos):
    op = step["op"]
    if op == "size_constant":
        return f"torch.tensor(float({step['expr']}))"
    shape = code_shape(shape_of(step["shape"]))
    if op == "rand":
        return f"T.rand({shape}, {step['seed']})"
    if op == "iota":
        return f"T.iota({shape}, {step['axis']}, {step['dtype']!r})"
    if not step["shape"]:
        return f"torch.tensor({step['values'][0]!r})"
    return f"torch.tensor({step['values']!r}).reshape({shape})"


for _name, _w in (("rand", 0.6), ("iota", 0.5), ("constant", 0.6), ("size_constant", 0.4)):
    register(_name, _source_propose(_name), _source_infer, _source_kgen, _source_torch, weight=_w)


# --- normalisation ------------------------------------------------------------------------------
# Rows (layer_norm) or channels (batch_norm) drawn at random are never near-constant, where a
# float32 x - mean would lose the digits the division by a small deviation then magnifies;
# eps is drawn up to 1 as well, which bounds that magnification.
EPS_CHOICES = [1e-5, 1e-5, 1e-3, 0.1, 1.0]


def _affine(g: Gen, shape) -> list:
    """weight and bias operands of `shape`, each there or not: (ins, has weight, has bias)."""
    w, b = g.chance(0.7), g.chance(0.6)
    return [g.operand(shape, shared=0.6) for _ in range(w + b)], w, b


def _affine_mags(step, infos) -> tuple:
    """The magnitudes of weight and bias (1 and 0 where absent): the last of `infos`."""
    rest = infos[len(infos) - step["weight"] - step["bias"]:]
    return (rest[0].mag if step["weight"] else 1.0), (rest[-1].mag if step["bias"] else 0.0)


def _layer_norm_infer(step, infos, sizes):
    x = infos[0]
    want_float(x)
    norm = tuple(step["shape"])
    need(1 <= len(norm) <= len(x.shape) and tuple(x.shape[len(x.shape) - len(norm):]) == norm,
         "normalized_shape is x's trailing dims")
    need(all(isinstance(d, int) for d in norm) and numel(norm) >= 1, "static, nonempty rows")
    need(len(infos) == 1 + step["weight"] + step["bias"] and all(i.shape == norm for i in infos[1:]),
         "weight and bias of normalized_shape")
    w, b = _affine_mags(step, infos)
    m = math.sqrt(numel(norm) - 1) * w + b  # a z-score of n values is at most sqrt(n - 1)
    return Info(x.shape, FLOAT, -m, m)


def _layer_norm_propose(g: Gen):
    x = _float(g, lambda i: len(i.shape) >= 1 and isinstance(i.shape[-1], int) and i.shape[-1] >= 1)
    shape = g.infos[x].shape
    k = 1
    while k < len(shape) and isinstance(shape[-k - 1], int) and shape[-k - 1] >= 1 and g.chance(0.3):
        k += 1
    norm = shape[len(shape) - k:]
    ins, w, b = _affine(g, norm)
    g.add("layer_norm", [x] + ins, shape=list(norm), weight=w, bias=b, eps=g.choice(EPS_CHOICES),
          spell=g.choice(["int", "tuple"]) if k == 1 else "tuple")


def _norm_args(step, args):
    k, out = 1, []
    for name in ("weight", "bias"):
        out.append(args[k] if step[name] else "None")
        k += step[name]
    return out


def _layer_norm_kgen(step, args, infos):
    w, b = _norm_args(step, args)
    norm = step["shape"][0] if step.get("spell") == "int" else code_shape(step["shape"])
    return f"ops.layer_norm({args[0]}, {norm}, {w}, {b}, eps={step['eps']!r})"


def _layer_norm_torch(step, args, infos):
    w, b = _norm_args(step, args)
    return f"F.layer_norm({args[0]}, {code_shape(step['shape'])}, {w}, {b}, eps={step['eps']!r})"


register("layer_norm", _layer_norm_propose, _layer_norm_infer, _layer_norm_kgen, _layer_norm_torch)


def _batch_norm_infer(step, infos, sizes):
    x = infos[0]
    want_float(x)
    need(2 <= len(x.shape) <= 4 and isinstance(x.shape[1], int), "x [N, C, ...] with a static C")
    c = (x.shape[1],)
    stats = 2 if step["running"] else 0
    need(len(infos) == 1 + stats + step["weight"] + step["bias"] and all(i.shape == c for i in infos[1:]),
         "running statistics, weight and bias of [C]")
    count = [d for a, d in enumerate(x.shape) if a != 1]
    part, eps = step["part"], step["eps"]
    if not step["training"]:
        need(stats and part == 0, "evaluation reads the running statistics and returns y")
        rm, rv = infos[1], infos[2]
        need(rv.lo >= 0.25, "a running variance >= 0.25")
        w, b = _affine_mags(step, infos)
        m = (x.mag + rm.mag) / math.sqrt(rv.lo + eps) * w + b
        return Info(x.shape, FLOAT, -m, m)
    low, high = sizes.count_range(count)
    need(low >= 2, "training needs two values per channel")
    need(part == 0 or stats, "running statistics to return")
    if part == 0:
        w, b = _affine_mags(step, infos)
        m = math.sqrt(high - 1) * w + b
        return Info(x.shape, FLOAT, -m, m)
    factor = 1.0 / (step["tracked"] + 1) if step["momentum"] is None else step["momentum"]
    old = infos[part]
    if part == 1:
        return Info(c, FLOAT, (1 - factor) * old.lo + factor * x.lo, (1 - factor) * old.hi + factor * x.hi)
    var = 2.0 * ((x.hi - x.lo) / 2) ** 2  # the unbiased variance of at least two values
    return Info(c, FLOAT, min(0.0, (1 - factor) * old.lo), max(0.0, (1 - factor) * old.hi) + factor * var)


def _batch_norm_propose(g: Gen):
    x = _float(g, lambda i: 2 <= len(i.shape) <= 4 and isinstance(i.shape[1], int))
    c = (g.infos[x].shape[1],)
    training = g.chance(0.7)
    running = not training or g.chance(0.7)
    stats = []
    if running:
        stats = [g.operand(c, shared=0.6), g.positive(g.operand(c, shared=0.6))]
    ins, w, b = _affine(g, c)
    momentum = g.choice([0.1, 0.5, 1.0, None])
    g.add("batch_norm", [x] + stats + ins, training=training, running=running, weight=w, bias=b,
          momentum=momentum, tracked=g.choice([0, 3]) if momentum is None else None, eps=g.choice(EPS_CHOICES),
          part=g.rng.randrange(3) if training and running else 0)


def _batch_norm_args(step, args):
    running = args[1:3] if step["running"] else ["None", "None"]
    rest = args[3:] if step["running"] else args[1:]
    return running + _norm_args(step, [None] + rest)


def _batch_norm_call(step, args, fn, tracked):
    rm, rv, w, b = _batch_norm_args(step, args)
    part = f"[{step['part']}]" if step["training"] else ""
    return (f"{fn}({args[0]}, {rm}, {rv}, {w}, {b}, training={step['training']}, momentum={step['momentum']!r}, "
            f"eps={step['eps']!r}{tracked}){part}")


register("batch_norm", _batch_norm_propose, _batch_norm_infer,
         lambda step, args, infos: _batch_norm_call(step, args, "ops.batch_norm", "" if step["momentum"] is not None
                                                    else f", num_batches_tracked={step['tracked']}"),
         lambda step, args, infos: _batch_norm_call(step, args, "T.batch_norm",
                                                    f", num_batches_tracked={step['tracked']!r}"))


# --- scan -----------------------------------------------------------------------------------------
def _scan_infer(step, infos, sizes):
    (x,) = infos
    need(x.is_float, "scan of a non-float sequence")
    need(x.ndim >= 1 and isinstance(x.shape[0], int) and 1 <= x.shape[0] <= 8,
         "scan over an axis 0 that is symbolic, empty or long")
    return Info(x.shape, FLOAT, -1.0, 1.0)  # every step's carry: 0, then tanh's range


def _scan_propose(g: Gen):
    x = g.pick(lambda i: float_pred(i) and i.ndim >= 1 and isinstance(i.shape[0], int) and 1 <= i.shape[0] <= 8)
    if x is None:
        raise Illegal("no sequence to scan")
    g.add("scan", [x], a=g.choice([0.5, -1.5, 1.0]), reverse=g.chance(0.5))


register("scan", _scan_propose, _scan_infer,  # a tanh recurrence; y_t is the carry before step t
         lambda step, args, infos: f"ops.scan(lambda c, t: (ops.tanh(c * {step['a']} + t), c), {args[0]}[0] * 0.0, "
                                   f"{args[0]}, reverse={step['reverse']})[1]",
         lambda step, args, infos: f"T.scan_tanh({args[0]}, {step['a']}, {step['reverse']})")
