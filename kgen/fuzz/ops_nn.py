"""Fuzz catalog entries for matmul (every rank combination), convolution and pooling, the
losses, one_hot, dropout and rand, iota and constants. The gradient ops of convolution and
pooling are no kgen.ops functions, so none is drawn alone: every program that takes
gradients of conv2d or a pool builds them, and tests/ir/test_vjp.py checks them alone.

Losses are means over their batch, so their batch is never empty; labels are integer
inputs whose values lie in [0, classes) with classes <= the op's class count.
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
    p = pair(step["padding"])
    need(min(k) >= 1 and min(s) >= 1 and min(p) >= 0, "bad pool attributes")
    need(p[0] <= k[0] // 2 and p[1] <= k[1] // 2, "padding over half the kernel")
    return k, s, p


def _pool_out(step, h, w):
    k, s, p = _pool_geometry(step)
    oh, ow = _out(h, k[0], s[0], p[0]), _out(w, k[1], s[1], p[1])
    need(oh >= 1 and ow >= 1, "the window is larger than the padded input")
    return oh, ow


def _pool_infer(step, infos, sizes):
    (x,) = infos
    want_float(x)
    n, c, h, w = _nchw(x, "NCHW")
    oh, ow = _pool_out(step, h, w)
    if step["op"] == "max_pool2d":
        return like(x, shape=(n, c, oh, ow))
    return Info((n, c, oh, ow), FLOAT, min(x.lo, 0), max(x.hi, 0))


def _draw_pool(g: Gen, h, w):
    for _ in range(30):
        attrs = {"kernel_size": g.choice([1, 2, 3, [2, 1], [1, 3]]),
                 "stride": g.choice([None, None, 1, 2, [1, 2]]),
                 "padding": g.choice([0, 0, 1, [0, 1], [1, 0]])}
        try:
            _pool_out(attrs, h, w)
            return attrs
        except Illegal:
            continue
    raise Illegal("no pool fits")


def _pool_propose(name):
    def propose(g: Gen):
        x, (n, c, h, w) = _image(g)
        g.add(name, [x], **_draw_pool(g, h, w))
    return propose


def _pool_kgen(step, args, infos):
    return (f"ops.{step['op']}({args[0]}, {arg(step['kernel_size'])}, stride={arg(step['stride'])}, "
            f"padding={arg(step['padding'])})")


def _pool_torch(step, args, infos):
    fn = f"T.{step['op']}"  # torch's pooling refuses tensors without channels; T's does not
    return f"{fn}({args[0]}, {arg(step['kernel_size'])}, {arg(step['stride'])}, {arg(step['padding'])})"


register("max_pool2d", _pool_propose("max_pool2d"), _pool_infer, _pool_kgen, _pool_torch)
register("avg_pool2d", _pool_propose("avg_pool2d"), _pool_infer, _pool_kgen, _pool_torch)


# --- losses and labels ------------------------------------------------------------------------
def labels(g: Gen, shape, classes: int) -> str:
    """Integer labels of `shape` in [0, classes): an existing value, or a new input."""
    name = g.pick(lambda i: i.dtype in INTS and i.classes is not None and i.classes <= classes
                  and len(i.shape) == len(shape) and all(dims_equal(a, b) for a, b in zip(i.shape, shape)))
    if name is not None and g.chance(0.6):
        return name
    return g.new_input(shape, "label", g.choice(INTS), classes=max(1, classes - g.rng.randint(0, 1)))


def _class_infer(step, infos, sizes):
    x, lab = infos
    want_float(x)
    need(len(x.shape) == 2 and len(lab.shape) == 1 and dims_equal(x.shape[0], lab.shape[0]), "[B, C] and [B]")
    need(isinstance(x.shape[1], int) and x.shape[1] >= 1, "C is static and >= 1")
    need(lab.dtype in INTS and lab.classes is not None and lab.classes <= x.shape[1], "labels in range")
    need(sizes.low(x.shape[0]) >= 1, "a mean over an empty batch")
    if step["op"] == "nll_loss":
        return Info((), FLOAT, -x.hi, -x.lo)
    return Info((), FLOAT, 0.0, (x.hi - x.lo) + math.log(x.shape[1]))


def _class_propose(name):
    def propose(g: Gen):
        x = g.pick(lambda i: float_pred(i) and len(i.shape) == 2 and isinstance(i.shape[1], int)
                   and i.shape[1] >= 1 and g.low(i.shape[0]) >= 1)
        if x is None or g.chance(0.3):
            b = g.dim(allow_zero=False)
            x = g.new_input((b if g.low(b) >= 1 else 2, g.rng.randint(1, 6)), "float")
        if name == "nll_loss" and g.chance(0.5):
            x = g.add("log_softmax", [x], axis=1)
        shape = g.infos[x].shape
        g.add(name, [x, labels(g, (shape[0],), shape[1])])
    return propose


for _name in ("cross_entropy", "nll_loss"):
    register(_name, _class_propose(_name), _class_infer,
             lambda step, args, infos, _n=_name: f"ops.{_n}({args[0]}, {args[1]})",
             lambda step, args, infos, _n=_name: f"F.{_n}({args[0]}, {args[1]}.long())")


def _pair_loss_infer(step, infos, sizes):
    p, t = infos
    want_float(p), want_float(t)
    shape = broadcast(p.shape, t.shape)
    need(sizes.low(numel(shape)) >= 1, "a mean over no elements")
    if step["op"] == "mse":
        return Info((), FLOAT, 0.0, (p.mag + t.mag) ** 2)
    need(p.lo >= 0.02 and p.hi <= 0.98, "probabilities in [0.02, 0.98]")
    need(t.lo >= 0 and t.hi <= 1, "targets in [0, 1]")
    return Info((), FLOAT, 0.0, -math.log(min(p.lo, 1 - p.hi)))


def _pair_loss_propose(name):
    def propose(g: Gen):
        p = _float(g)
        if g.low(numel(g.infos[p].shape)) < 1:
            raise Illegal("empty")
        if name == "mse":
            t = partner(g, p, float_pred) if g.chance(0.6) else g.operand(g.infos[p].shape)
            t = g.to_float(t)
        else:
            p = g.prob(p)
            t = g.operand(g.infos[p].shape, "prob", pred=lambda i: i.lo >= 0 and i.hi <= 1)
        g.add(name, [p, t])
    return propose


register("mse", _pair_loss_propose("mse"), _pair_loss_infer,
         lambda step, args, infos: f"ops.mse({args[0]}, {args[1]})",
         lambda step, args, infos: f"T.mse({args[0]}, {args[1]})")
register("binary_cross_entropy", _pair_loss_propose("binary_cross_entropy"), _pair_loss_infer,
         lambda step, args, infos: f"ops.binary_cross_entropy({args[0]}, {args[1]})",
         lambda step, args, infos: f"T.binary_cross_entropy({args[0]}, {args[1]})")


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
