"""kgen.ops: the functions programs are written with, named as in NumPy/PyTorch.

Primitives build one node of the op table after the operands are made to agree (Python
scalars take the other operand's dtype; mixed dtypes are promoted as in torch). Composite
functions (softmax, cross_entropy, ...) are built from primitives, so they differentiate,
fuse and compile with no rules of their own.
"""
from __future__ import annotations

import builtins
import numbers

import numpy as np
import sympy

from kgen.errors import DTypeError, KgenError, ShapeError, check_arguments
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node
from kgen.ir.ops_conv import conv_attrs, conv_padding, pair, pool_attrs
from kgen.ir.ops_view import whole_axis

__all__ = [
    "constant", "size_constant", "iota", "rand", "dropout", "cast",
    "add", "sub", "mul", "div", "neg", "stop_gradient", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu",
    "maximum", "minimum", "pow", "where", "less", "less_equal", "greater", "greater_equal",
    "equal", "not_equal", "sum", "mean", "max", "matmul", "reshape", "transpose", "permute", "swap_last",
    "broadcast_to", "expand_dims", "squeeze", "flatten", "sum_to", "getitem", "slice_strided", "pad_strided",
    "pad", "concatenate", "stack", "split", "one_hot", "softmax",
    "log_softmax", "logsumexp", "cross_entropy", "nll_loss", "mse", "binary_cross_entropy",
    "conv2d", "max_pool2d", "avg_pool2d",
    "conv1d",
]


# --- making operands -----------------------------------------------------------------------
def constant(value, dtype=None) -> Node:
    """A constant node: a Python/NumPy scalar or array (float64 becomes float32)."""
    if isinstance(value, Node):
        return value
    array = np.asarray(value)
    if dtype is None:
        dtype = dtypes.float32 if array.dtype == np.float64 else dtypes.dtype(array.dtype)
    dtype = dtypes.dtype(dtype)
    if array.ndim == 0:
        scalar = array.item()
        scalar = float(scalar) if dtype.is_float else (bool(scalar) if dtype is dtypes.bool_ else int(scalar))
        return Node("constant", (), {"value": scalar}, dtype, ())
    return Node("constant", (), {"value": dtypes.round_to(array, dtype)}, dtype, array.shape)


def size_constant(expr, dtype=dtypes.float32) -> Node:
    """A scalar whose value is a size expression, e.g. the element count N*10 of a mean."""
    expr = sympy.sympify(expr)
    value = int(expr) if expr.is_Integer else expr
    return Node("constant", (), {"value": value}, dtypes.dtype(dtype), ())


def rand(shape, seed) -> Node:
    """Uniform [0, 1) float32 values from Triton's counter-based generator: element i (row-
    major) is tl.rand(seed, i), which the reference interpreter reproduces exactly."""
    seed = seed if isinstance(seed, Node) else constant(int(seed), dtypes.int32)
    return Node("rand", (seed,), {"shape": shapes.as_shape(shape)})


def dropout(x, p: float, seed, training: bool = True) -> Node:
    """Inverted dropout: each element kept with probability 1 - p (where rand(seed) >= p)
    and scaled by 1 / (1 - p). The same seed gives the same mask, in the forward and in
    its gradient alike."""
    if not 0.0 <= p <= 1.0:
        raise KgenError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = greater_equal(rand(x.shape, seed), p)
    return where(keep, x * (1.0 / (1.0 - p)), 0.0)


def iota(shape, axis: int, dtype=dtypes.int32) -> Node:
    """A tensor whose value at each position is its index along `axis`."""
    shape = shapes.as_shape(shape)
    return Node("iota", (), {"shape": shape, "axis": shapes.check_axis(axis, len(shape), "iota: axis"),
                             "dtype": dtypes.dtype(dtype)})


def _is_scalar(x) -> bool:
    return isinstance(x, (numbers.Number, np.number, np.bool_)) and not isinstance(x, Node)


def _operands(*args):
    """Nodes for `args`, made to share one dtype (scalars adopt the nodes' dtype)."""
    nodes = [a for a in args if isinstance(a, Node)]
    if not nodes:
        raise KgenError("at least one operand must be a kgen tensor")
    dt = nodes[0].dtype
    for n in nodes[1:]:
        dt = dtypes.promote(dt, n.dtype)
    for a in args:
        if not isinstance(a, Node) and not _is_scalar(a):
            a = constant(a)  # an array constant takes part in promotion
            dt = dtypes.promote(dt, a.dtype)
        elif isinstance(a, float) and not dt.is_float:
            dt = dtypes.float32
        elif isinstance(a, int) and not isinstance(a, bool) and dt is dtypes.bool_:
            dt = dtypes.int64  # bool_tensor + 1 counts, as in torch
    out = []
    for a in args:
        if isinstance(a, Node):
            out.append(cast(a, dt))
        elif _is_scalar(a):
            out.append(constant(a, dt))
        else:
            out.append(cast(constant(a), dt))
    return out


def _floating(*args):
    nodes = _operands(*args)
    if not nodes[0].dtype.is_float:
        nodes = [cast(n, dtypes.float32) for n in nodes]
    return nodes


def cast(x, dtype) -> Node:
    dtype = dtypes.dtype(dtype)
    x = x if isinstance(x, Node) else constant(x)
    return x if x.dtype == dtype else Node("cast", (x,), {"dtype": dtype})


# --- elementwise ---------------------------------------------------------------------------
def _binary(op, a, b, floating=False):
    a, b = (_floating if floating else _operands)(a, b)
    return Node(op, (a, b))


def add(a, b): return _binary("add", a, b)
def sub(a, b): return _binary("sub", a, b)
def mul(a, b): return _binary("mul", a, b)
def div(a, b): return _binary("div", a, b, floating=True)
def pow(a, b): return _binary("pow", a, b, floating=True)
def maximum(a, b): return _binary("maximum", a, b)
def minimum(a, b): return _binary("minimum", a, b)
def less(a, b): return _binary("less", a, b)
def less_equal(a, b): return _binary("less_equal", a, b)
def greater(a, b): return _binary("greater", a, b)
def greater_equal(a, b): return _binary("greater_equal", a, b)
def equal(a, b): return _binary("equal", a, b)
def not_equal(a, b): return _binary("not_equal", a, b)


def neg(x): return Node("neg", _operands(x))
def abs(x): return Node("abs", _operands(x))
def relu(x): return Node("relu", _operands(x))
def stop_gradient(x): return Node("stop_gradient", _operands(x))
def exp(x): return Node("exp", _floating(x))
def log(x): return Node("log", _floating(x))
def sqrt(x): return Node("sqrt", _floating(x))
def tanh(x): return Node("tanh", _floating(x))
def sigmoid(x): return Node("sigmoid", _floating(x))


def where(cond, a, b) -> Node:
    cond = cond if isinstance(cond, Node) else constant(cond, dtypes.bool_)
    if cond.dtype is not dtypes.bool_:
        raise DTypeError(f"where: the condition must be bool, got {cond.type_str()}")
    a, b = _operands(a, b)
    return Node("where", (cond, a, b))


# --- reductions ----------------------------------------------------------------------------
def _reduce(op, x, axis, keepdims):
    (x,) = _operands(x)
    axes = shapes.normalize_axes(axis, x.ndim)
    if not axes:
        return x
    return Node(op, (x,), {"axes": axes, "keepdims": bool(keepdims)})


def sum(x, axis=None, keepdims=False): return _reduce("sum", x, axis, keepdims)
def max(x, axis=None, keepdims=False): return _reduce("max", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    (x,) = _floating(x)
    return _reduce("mean", x, axis, keepdims)


def sum_to(x: Node, shape) -> Node:
    """`x` summed over the axes along which `shape` was broadcast to x's shape."""
    shape = shapes.as_shape(shape)
    if len(x.shape) == len(shape) and builtins.all(shapes.dims_equal(a, b) for a, b in zip(x.shape, shape)):
        return x
    lead = x.ndim - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1]
    return reshape(sum(x, axes, keepdims=True), shape)


# --- matmul --------------------------------------------------------------------------------
def matmul(a, b) -> Node:
    """NumPy's matmul: 1-D operands gain (and then lose) a unit dimension."""
    a, b = _floating(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul does not take scalars, got {a.type_str()} @ {b.type_str()}")
    a2 = expand_dims(a, 0) if a.ndim == 1 else a
    b2 = expand_dims(b, 1) if b.ndim == 1 else b
    out = Node("matmul", (a2, b2))
    if b.ndim == 1:
        out = squeeze(out, -1)
    if a.ndim == 1:
        out = squeeze(out, -2 if b.ndim > 1 else -1)
    return out


# --- views ---------------------------------------------------------------------------------
def reshape(x, shape) -> Node:
    shape = (shape,) if isinstance(shape, (int, str)) else tuple(shape)
    if builtins.sum(1 for d in shape if isinstance(d, int) and d == -1) > 1:
        raise ShapeError(f"reshape: at most one -1 in {shape}")
    if -1 in shape:
        known = shapes.numel([d for d in shapes.as_shape([d for d in shape if not (isinstance(d, int) and d == -1)])])
        total = shapes.numel(x.shape)
        missing = sympy.simplify(sympy.sympify(total) / known)
        if not missing.is_integer and not missing.is_Integer:
            raise ShapeError(f"cannot reshape {shapes.format_shape(x.shape)} to {shape}")
        shape = tuple(missing if isinstance(d, int) and d == -1 else d for d in shape)
    shape = shapes.as_shape(shape)
    if len(shape) == x.ndim and builtins.all(shapes.dims_equal(a, b) for a, b in zip(shape, x.shape)):
        return x
    return Node("reshape", (x,), {"shape": shape})


def transpose(x, axes=None) -> Node:
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    else:
        axes = tuple(shapes.check_axis(a, x.ndim, "transpose: axis") for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ShapeError(f"transpose: {axes} is not a permutation of the {x.ndim} axes")
    if axes == tuple(range(x.ndim)):
        return x
    return Node("transpose", (x,), {"perm": axes})


def permute(x, *axes) -> Node:
    """torch.permute: the axes of `x` in the order given (also as one tuple)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = axes[0]
    return transpose(x, axes)


def swap_last(x) -> Node:
    """x with its last two axes swapped (matrix transpose of a batch)."""
    perm = list(range(x.ndim))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return transpose(x, perm)


def broadcast_to(x, shape) -> Node:
    (x,) = _operands(x)
    shape = shapes.as_shape(shape)
    if len(shape) == x.ndim and builtins.all(shapes.dims_equal(a, b) for a, b in zip(shape, x.shape)):
        return x
    return Node("broadcast_to", (x,), {"shape": shape})


def expand_dims(x, axis: int) -> Node:
    axis = shapes.check_axis(axis, x.ndim + 1, "expand_dims: axis")
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, axis=None) -> Node:
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = list(shapes.normalize_axes(axis, x.ndim))
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} of {shapes.format_shape(x.shape)} is not 1")
    return reshape(x, [d for i, d in enumerate(x.shape) if i not in axes])


def flatten(x, start_dim: int = 1) -> Node:
    """Collapse the axes from `start_dim` on (torch.flatten(x, start_dim))."""
    start = shapes.check_axis(start_dim, builtins.max(x.ndim, 1), "flatten: start_dim")
    return reshape(x, x.shape[:start] + (shapes.numel(x.shape[start:]),))


# --- slicing, padding and joining (views: no copies) ------------------------------------------
def _window(op: str, x: Node, origin, step, shape, origin_name: str) -> Node:
    origin, step, shape = tuple(int(b) for b in origin), tuple(int(s) for s in step), shapes.as_shape(shape)
    if len(shape) == x.ndim and builtins.all(map(whole_axis, origin, step, shape, x.shape)):
        return x
    return Node(op, (x,), {origin_name: origin, "step": step, "shape": shape})


def slice_strided(x: Node, start, step, shape) -> Node:
    """The primitive slice: output coordinate c reads x at start + step*c on each axis."""
    return _window("slice", x, start, step, shape, "start")


def pad_strided(x: Node, low, step, shape) -> Node:
    """The primitive pad (slice's transpose): a zero tensor of `shape` holding x at low +
    step*c on each axis."""
    return _window("pad", x, low, step, shape, "low")


def _static_dim(x: Node, axis: int, what: str) -> int:
    d = x.shape[axis]
    if not isinstance(d, int):
        raise ShapeError(f"{what}: axis {axis} of {x.type_str()} has the symbolic size {d}, and {what} "
                         f"needs a static size there (a symbolic axis can only be taken whole, with ':')")
    return d


def getitem(x: Node, index) -> Node:
    """NumPy basic indexing: ints, slices with a positive step, None and `...` (x[i], x[:, 2:5],
    x[..., ::2]). A view: the kernel that reads it loads straight from x."""
    index = index if isinstance(index, tuple) else (index,)
    if builtins.sum(1 for i in index if i is Ellipsis) > 1:
        raise ShapeError(f"indexing {x.type_str()}: at most one '...' in {index}")
    used = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if used > x.ndim:
        raise ShapeError(f"indexing {x.type_str()}: {used} indices for {x.ndim} axes")
    at = index.index(Ellipsis) if Ellipsis in index else len(index)
    index = index[:at] + (slice(None),) * (x.ndim - used) + index[at + 1:]
    window, dropped, added = [], [], []  # window: (start, step, size) per axis of x
    for i in index:
        axis = len(window)
        if i is None:
            added.append(axis - len(dropped) + len(added))
        elif isinstance(i, slice):
            if i.step is not None and i.step < 1:
                raise ShapeError(f"indexing {x.type_str()}: axis {axis} needs a positive step, got {i.step}")
            if i.start in (None, 0) and i.stop is None and i.step in (None, 1):
                window.append((0, 1, x.shape[axis]))
            else:
                b, e, s = i.indices(_static_dim(x, axis, "indexing"))
                window.append((b, s, builtins.max(0, -(-(e - b) // s))))
        elif isinstance(i, numbers.Integral) and not isinstance(i, bool):
            n = _static_dim(x, axis, "indexing")
            if not -n <= i < n:
                raise ShapeError(f"indexing {x.type_str()}: index {i} is out of range for axis {axis} of size {n}")
            window.append((int(i) % n, 1, 1))
            dropped.append(axis)
        else:
            raise ShapeError(f"indexing {x.type_str()}: expected ints, slices, None or '...', got {i!r}")
    start, step, shape = zip(*window) if window else ((), (), ())
    out = slice_strided(x, start, step, shape)
    if dropped or added:
        kept = [d for a, d in enumerate(shape) if a not in dropped]
        for at in added:
            kept.insert(at, 1)
        out = reshape(out, kept)
    return out


def pad(x: Node, pad_width) -> Node:
    """np.pad(x, pad_width) with zeros: pad_width is an int, a (before, after) pair, or one
    pair per axis."""
    widths = np.broadcast_to(np.asarray(pad_width, dtype=object), (x.ndim, 2)).tolist() if x.ndim else []
    if any(not isinstance(w, numbers.Integral) or w < 0 for pair in widths for w in pair):
        raise ShapeError(f"pad: widths must be ints >= 0, got {pad_width!r}")
    shape = []
    for axis, (before, after) in enumerate(widths):
        shape.append(x.shape[axis] if before == after == 0 else _static_dim(x, axis, "pad") + before + after)
    return pad_strided(x, [w[0] for w in widths], [1] * x.ndim, shape)


def concatenate(xs, axis: int = 0) -> Node:
    """np.concatenate / torch.cat: the tensors joined along `axis`, whose size must be static.
    Built as a sum of pads, so each element is read from the one tensor that holds it."""
    xs = _operands(*xs) if xs else []
    if not xs:
        raise ShapeError("concatenate: expected at least one tensor")
    first = xs[0]
    axis = shapes.check_axis(axis, builtins.max(first.ndim, 1), "concatenate: axis")
    for k, x in enumerate(xs):
        if x.ndim != first.ndim or not builtins.all(
                shapes.dims_equal(a, b) for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis):
            raise ShapeError(f"concatenate: tensor {k} is {x.type_str()}, which does not match "
                             f"{first.type_str()} off axis {axis}")
    sizes = [_static_dim(x, axis, "concatenate") for x in xs]
    total = builtins.sum(sizes)
    shape = first.shape[:axis] + (total,) + first.shape[axis + 1:]
    out, offset = None, 0
    for x, size in zip(xs, sizes):
        low = [0] * x.ndim
        low[axis] = offset
        placed = pad_strided(x, low, [1] * x.ndim, shape)
        out = placed if out is None else add(out, placed)
        offset += size
    return out


def stack(xs, axis: int = 0) -> Node:
    """np.stack / torch.stack: the tensors joined along a new axis."""
    if not xs:
        raise ShapeError("stack: expected at least one tensor")
    axis = shapes.check_axis(axis, xs[0].ndim + 1, "stack: axis")
    return concatenate([expand_dims(x, axis) for x in xs], axis)


def split(x: Node, sections: int, axis: int = 0) -> list:
    """np.split(x, sections, axis) with an int: `sections` equal views along `axis`."""
    axis = shapes.check_axis(axis, x.ndim, "split: axis")
    n = _static_dim(x, axis, "split")
    if sections < 1 or n % sections:
        raise ShapeError(f"split: axis {axis} of {x.type_str()} does not divide into {sections} equal parts")
    size = n // sections
    return [getitem(x, (slice(None),) * axis + (slice(k * size, (k + 1) * size),)) for k in range(sections)]


# --- composites built from primitives --------------------------------------------------------
def one_hot(labels, num_classes: int, dtype=dtypes.float32) -> Node:
    if labels.dtype.is_float or labels.dtype is dtypes.bool_:
        raise DTypeError(f"one_hot: labels must be integers, got {labels.type_str()}")
    classes = iota(labels.shape + (num_classes,), axis=labels.ndim, dtype=labels.dtype)
    return cast(equal(expand_dims(labels, -1), classes), dtype)


def logsumexp(x, axis=-1, keepdims=False) -> Node:
    peak = stop_gradient(max(x, axis, keepdims=True))
    peak = where(equal(abs(peak), float("inf")), 0.0, peak)  # rows of -inf (or holding +inf) stay infinite
    out = log(sum(exp(x - peak), axis, keepdims=True)) + peak
    return out if keepdims else squeeze(out, axis)


def log_softmax(x, axis=-1) -> Node:
    shifted = x - stop_gradient(max(x, axis, keepdims=True))
    return shifted - log(sum(exp(shifted), axis, keepdims=True))


def softmax(x, axis=-1) -> Node:
    e = exp(x - stop_gradient(max(x, axis, keepdims=True)))
    return e / sum(e, axis, keepdims=True)


def nll_loss(log_probs, labels) -> Node:
    """Mean negative log-likelihood of integer `labels` under rows of `log_probs`."""
    if log_probs.ndim != 2 or labels.ndim != 1:
        raise ShapeError(f"nll_loss takes log_probs [N, C] and labels [N], got "
                         f"{log_probs.type_str()} and {labels.type_str()}")
    picked = sum(log_probs * one_hot(labels, log_probs.shape[1], log_probs.dtype), axis=1)
    return -mean(picked)


def cross_entropy(logits, labels) -> Node:
    """Mean cross-entropy of integer `labels` given unnormalised `logits` [N, C]."""
    return nll_loss(log_softmax(logits, axis=-1), labels)


def mse(pred, target) -> Node:
    """Mean squared error."""
    diff = sub(pred, target)
    return mean(diff * diff)


def binary_cross_entropy(prob, target, eps: float = 1e-7) -> Node:
    """Mean binary cross-entropy of probabilities `prob` (clipped to [eps, 1-eps])."""
    p = minimum(maximum(prob, eps), 1.0 - eps)
    return -mean(target * log(p) + (1.0 - target) * log(1.0 - p))


# --- convolution and pooling -------------------------------------------------------------
def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, layout="NCHW", groups=1) -> Node:
    """torch.nn.functional.conv2d: x [N, C, H, W] and w [F, C/groups, KH, KW] give
    [N, F, OH, OW], plus `bias` [F] if given; an unbatched x [C, H, W] gives [F, OH, OW].
    layout="NHWC" takes x as [N, H, W, C] (or [H, W, C]) and gives [N, OH, OW, F] (w stays
    [F, C/groups, KH, KW]); the transposes are views, not copies. `groups` splits C and F
    into groups, filter f seeing only the channels of its group (groups == C: depthwise).
    padding="same" pads as torch does, one more row or column after the image than before
    it where the (dilated) window's span less one is odd: a pad view of x."""
    if layout not in ("NCHW", "NHWC"):
        raise KgenError(f"conv2d: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    x, w = _floating(x, w)
    if x.ndim not in (3, 4) or w.ndim != 4:
        raise ShapeError(f"conv2d takes a 4-D x ({layout}) or an unbatched 3-D one and a 4-D w "
                         f"[F, C/groups, KH, KW], got {x.type_str()} and {w.type_str()}")
    if x.ndim == 3:  # unbatched, as torch takes it: a batch of one, a view
        out = conv2d(expand_dims(x, 0), w, bias, stride, padding, dilation, layout, groups)
        return squeeze(out, 0)
    if layout == "NHWC":
        x = transpose(x, (0, 3, 1, 2))
    both, extra = conv_padding(padding, w.shape[2:], pair(stride, "conv2d: stride"), pair(dilation, "conv2d: dilation"))
    if any(extra):  # torch's padding="same" of an odd total: the odd row/column goes after the image
        x = pad_strided(x, (0, 0, 0, 0), (1, 1, 1, 1), x.shape[:2] + (x.shape[2] + extra[0], x.shape[3] + extra[1]))
    out = Node("conv2d", (x, w), conv_attrs(stride, both, dilation, w.shape[2:], groups))
    if bias is not None:
        bias = cast(bias if isinstance(bias, Node) else constant(bias), out.dtype)
        if bias.ndim != 1 or bias.shape[0] != w.shape[0]:
            raise ShapeError(f"conv2d: bias must be [{w.shape[0]}] (one per filter), got {bias.type_str()}")
        out = out + reshape(bias, (1, w.shape[0], 1, 1))
    return transpose(out, (0, 2, 3, 1)) if layout == "NHWC" else out


def _one(value, what: str):
    """conv1d's stride, padding or dilation: an int or a 1-tuple (padding: also a string,
    which conv2d checks)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if (isinstance(value, str) and what == "padding") or (isinstance(value, numbers.Integral)
                                                          and not isinstance(value, bool)):
        return value
    raise ShapeError(f"conv1d: {what} must be an int or a 1-tuple{', or a string' if what == 'padding' else ''}, "
                     f"got {value!r}")


def conv1d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Node:
    """torch.nn.functional.conv1d: x [N, C, L] (or unbatched [C, L]) and w [F, C/groups, K]
    give [N, F, OL] (or [F, OL]), plus `bias` [F] if given: conv2d over an image one row
    high (the reshapes are views), so it lowers, fuses and differentiates as conv2d does."""
    x, w = _floating(x, w)
    if x.ndim not in (2, 3) or w.ndim != 3:
        raise ShapeError(f"conv1d takes a 3-D x [N, C, L] or an unbatched 2-D one and a 3-D w "
                         f"[F, C/groups, K], got {x.type_str()} and {w.type_str()}")
    padding = _one(padding, "padding")
    out = conv2d(expand_dims(x, -2), expand_dims(w, -2), bias, (1, _one(stride, "stride")),
                 padding if isinstance(padding, str) else (0, padding), (1, _one(dilation, "dilation")),
                 groups=groups)
    return squeeze(out, -2)


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Node:
    """torch.nn.functional.max_pool2d over x [N, C, H, W] (padding reads -inf); `stride`
    defaults to `kernel_size`."""
    (x,) = _floating(x)
    return Node("max_pool2d", (x,), pool_attrs("max_pool2d", kernel_size, stride, padding))


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Node:
    """torch.nn.functional.avg_pool2d over x [N, C, H, W] with count_include_pad=True: each
    window's sum over KH*KW, padding counting as zeros."""
    (x,) = _floating(x)
    return Node("avg_pool2d", (x,), pool_attrs("avg_pool2d", kernel_size, stride, padding))


# An unknown keyword (conv2d(groups=2)) or a wrong count of arguments is a kgen ArgumentError
# naming the op and the arguments it takes, for every public op (kgen.errors.check_arguments).
for _name in __all__:
    globals()[_name] = check_arguments(globals()[_name], f"kgen.ops.{_name}")
del _name
