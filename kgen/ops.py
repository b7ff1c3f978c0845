"""kgen.ops: the functions programs are written with, named as in NumPy/PyTorch.

Primitives build one node of the op table after the operands are made to agree (Python
scalars take the other operand's dtype; mixed dtypes are promoted as in torch). Composite
functions (softmax, cross_entropy, ...) are built from primitives, so they differentiate,
fuse and compile with no rules of their own.
"""
from __future__ import annotations

import builtins
import math
import numbers

import numpy as np
import sympy

from kgen.errors import DTypeError, KgenError, OptionError, ShapeError, check_arguments
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node
from kgen.ir.ops_conv import conv_attrs, conv_padding, pair, pool_attrs
from kgen.ir.ops_gather import padding_index
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
    "layer_norm", "batch_norm",
    "erf", "floor", "trunc", "fmod", "floor_divide", "remainder", "clamp", "clip", "gelu", "silu", "leaky_relu",
    "elu", "softplus", "hardtanh", "relu6",
    "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool1d",
    "embedding", "mse_loss",
    "conv1d", "scan",
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
    return Node("constant", (), {"value": np.ascontiguousarray(dtypes.round_to(array, dtype))}, dtype, array.shape)


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


def div(a, b, rounding_mode=None):
    """torch.div: true division (integers give float32), or with rounding_mode "trunc" or
    "floor" the quotient rounded toward zero or down, in the operands' dtype (integers stay
    integers). A rounded quotient is piecewise constant: its gradient is zero, as torch's.
    Integer division by zero is undefined in kernels (torch raises ZeroDivisionError)."""
    if rounding_mode is None:
        return _binary("div", a, b, floating=True)
    if rounding_mode not in ("trunc", "floor"):
        raise OptionError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
    a, b = _operands(a, b)
    if a.dtype is dtypes.bool_:
        raise DTypeError("div: expected numeric operands, got bool")
    if not a.dtype.is_float:
        q = Node("trunc_div", (a, b))
        if rounding_mode == "floor":  # one less where the division was inexact and the signs differ
            inexact = not_equal(Node("fmod", (a, b)), 0)
            q = where(inexact, where(not_equal(less(a, 0), less(b, 0)), q - 1, q), q)
        return q
    if rounding_mode == "trunc":
        return stop_gradient(trunc(Node("div", (a, b))))
    return stop_gradient(_floor_divide_float(a, b))


def _floor_divide_float(a, b):
    """torch's floating floor division, which rounds the true quotient down where a/b alone
    would round it: (a - fmod(a, b)) / b is an integer up to rounding, corrected by one where
    fmod's sign differs from b's and rounded to the nearest integer. A zero keeps a/b's sign;
    b == 0 gives a/b (inf or NaN)."""
    mod = Node("fmod", (a, b))
    quotient = Node("div", (a, b))
    q = Node("div", (a - mod, b))
    q = where(not_equal(mod, 0.0), where(not_equal(less(b, 0.0), less(mod, 0.0)), q - 1.0, q), q)
    down = floor(q)
    rounded = where(greater(q - down, 0.5), down + 1.0, down)
    rounded = where(equal(q, 0.0), quotient * 0.0, rounded)
    return where(equal(b, 0.0), quotient, rounded)


def floor_divide(a, b):
    """torch.floor_divide (Python's //): the quotient rounded down."""
    return div(a, b, rounding_mode="floor")


def fmod(a, b):
    """torch.fmod: the remainder of the division rounding toward zero; it has a's sign."""
    a, b = _operands(a, b)
    return Node("fmod", (a, b))


def remainder(a, b):
    """torch.remainder (Python's %): the remainder of floor division; it has b's sign."""
    a, b = _operands(a, b)
    return Node("remainder", (a, b))


def erf(x): return Node("erf", _floating(x))


def floor(x):
    """torch.floor: integers are their own floor."""
    (x,) = _operands(x)
    return x if not x.dtype.is_float else Node("floor", (x,))


def trunc(x):
    """torch.trunc: rounded toward zero (-0.5 gives -0.0, as torch)."""
    (x,) = _operands(x)
    return x if not x.dtype.is_float else where(less(x, 0.0), -floor(-x), floor(x))


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


def pad(x: Node, pad_width, value=0.0) -> Node:
    """np.pad(x, pad_width, constant_values=value): pad_width is an int, a (before, after)
    pair, or one pair per axis. With value 0 a view, free (DESIGN.md rule 4); another
    value is where(pad of True, pad(x), value), elementwise in the reader, with x's
    gradient still the slice of g."""
    widths = np.broadcast_to(np.asarray(pad_width, dtype=object), (x.ndim, 2)).tolist() if x.ndim else []
    if any(not isinstance(w, numbers.Integral) or w < 0 for pair in widths for w in pair):
        raise ShapeError(f"pad: widths must be ints >= 0, got {pad_width!r}")
    if not _is_scalar(value):
        raise ShapeError(f"pad: value must be a number, got {value!r}")
    shape = []
    for axis, (before, after) in enumerate(widths):
        shape.append(x.shape[axis] if before == after == 0 else _static_dim(x, axis, "pad") + before + after)
    low, step = [w[0] for w in widths], [1] * x.ndim
    padded = pad_strided(x, low, step, shape)
    if (value == 0 and math.copysign(1.0, value) > 0) or padded is x:  # -0.0 is a fill value, as in torch
        return padded
    inside = pad_strided(broadcast_to(constant(True, dtypes.bool_), x.shape), low, step, shape)
    return where(inside, padded, value)


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


def split(x: Node, sections_or_sizes, axis: int = 0) -> list:
    """Views of x along `axis`, whose size must be static: with an int, np.split's that many
    equal sections; with a list or tuple of ints, pieces of those sizes in order
    (torch.split_with_sizes), which must add up to the axis."""
    axis = shapes.check_axis(axis, x.ndim, "split: axis")
    n = _static_dim(x, axis, "split")
    if isinstance(sections_or_sizes, (list, tuple)):
        sizes = list(sections_or_sizes)
        if any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0 for k in sizes) \
                or builtins.sum(sizes) != n:
            raise ShapeError(f"split: sizes {sizes} must be ints >= 0 adding up to axis {axis} of "
                             f"{x.type_str()}, {n}")
    else:
        sections = sections_or_sizes
        if isinstance(sections, bool) or not isinstance(sections, numbers.Integral) or sections < 1 or n % sections:
            raise ShapeError(f"split: axis {axis} of {x.type_str()} does not divide into {sections!r} equal parts")
        sizes = [n // sections] * int(sections)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(x, (slice(None),) * axis + (slice(start, start + size),)))
        start += size
    return pieces


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


REDUCTIONS = ("none", "sum", "mean")


def _check_reduction(reduction, what: str) -> None:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise OptionError(f"{what}: reduction must be one of 'none', 'sum', 'mean', got {reduction!r}")


def _reduce_loss(loss: Node, reduction: str) -> Node:
    """Per-element losses summed, averaged over their count, or kept ('none')."""
    if reduction == "none":
        return loss
    return sum(loss) if reduction == "sum" else mean(loss)


def _classes_last(x, target, what: str, index_target: bool):
    """(x with its class axis last, target, C, unbatched): x is [N, C, d1, ...] or, unbatched,
    [C]; an index target is [N, d1, ...] (or []) of integers (one_hot refuses others), a
    probability target x's shape."""
    (x,) = _floating(x)
    target = target if isinstance(target, Node) else constant(target)
    if x.ndim == 0:
        raise ShapeError(f"{what}: expected scores [N, C, d1, ...] or [C], got a scalar {x.type_str()}")
    unbatched = x.ndim == 1
    expected = (x.shape[:1] + x.shape[2:]) if not unbatched else ()
    if not index_target:
        expected = x.shape
    if target.ndim != len(expected) or not builtins.all(shapes.dims_equal(a, b) for a, b in zip(target.shape, expected)):
        kind = "class indices" if index_target else "class probabilities"
        raise ShapeError(f"{what}: a target of {kind} for scores {x.type_str()} must have shape "
                         f"{shapes.format_shape(expected)}, got {target.type_str()}")
    if unbatched:
        x, target = expand_dims(x, 0), expand_dims(target, 0)
    classes = _static_dim(x, 1, what)
    if x.ndim > 2:
        x = transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))
        if not index_target:
            target = transpose(target, (0,) + tuple(range(2, target.ndim)) + (1,))
    return x, target, classes, unbatched


def _class_weight(weight, classes: int, dtype, what: str):
    """The per-class weight [C] in the scores' dtype, or None."""
    if weight is None:
        return None
    weight = cast(weight if isinstance(weight, Node) else constant(weight), dtype)
    if weight.ndim != 1 or not shapes.dims_equal(weight.shape[0], classes):
        raise ShapeError(f"{what}: weight must be [{classes}] (one per class), got {weight.type_str()}")
    return weight


def _ignored(target: Node, ignore_index, classes: int, what: str):
    """The mask of targets kept (not ignore_index), or None where none can be ignored.
    An ignore_index outside [0, C) (torch's default -100) ignores nothing: index targets
    must lie in [0, C), which every call checks for the inputs that are targets
    (kgen.kernels.inputs.check_labels), so the build of the default loss stays as it was."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise OptionError(f"{what}: ignore_index must be an int, got {ignore_index!r}")
    if not 0 <= ignore_index < classes:
        return None
    return not_equal(target, int(ignore_index))


def _finish(loss: Node, unbatched: bool, reduction: str) -> Node:
    return squeeze(loss, 0) if unbatched and reduction == "none" else loss


def _nll_last(x, target, classes, unbatched, weight, ignore_index, reduction, what, smoothing=0.0):
    """nll_loss over scores `x` [..., C] (class axis last) and index `target` [...], and with
    `smoothing` torch's label-smoothed cross-entropy on log-probabilities `x`:
    (1 - s) * nll + s / C * (the sum over classes of -weight[c] * x[..., c])."""
    weight = _class_weight(weight, classes, x.dtype, what)
    kept = _ignored(target, ignore_index, classes, what)
    hot = one_hot(target, classes, x.dtype)
    if weight is not None:
        hot = hot * weight
    picked = sum(x * hot, axis=-1)
    losses = [(1.0 - smoothing, picked)]
    if smoothing:
        losses.append((smoothing / classes, sum(x * weight, axis=-1) if weight is not None else sum(x, axis=-1)))
    if kept is not None:
        losses = [(k, where(kept, loss, 0.0)) for k, loss in losses]
    if reduction == "mean" and (weight is not None or kept is not None):
        total = sum(hot, axis=-1) if weight is not None else cast(kept, x.dtype)
        if weight is not None and kept is not None:
            total = where(kept, total, 0.0)
        count = sum(total)
        parts = [sum(loss) / count for _, loss in losses]
    else:
        parts = [_reduce_loss(loss, reduction) for _, loss in losses]
    out = None
    for (k, _), part in zip(losses, parts):
        term = -part if k == 1.0 else part * -k
        out = term if out is None else out + term
    return _finish(out, unbatched, reduction)


def nll_loss(log_probs, target, weight=None, ignore_index=-100, reduction="mean") -> Node:
    """torch.nn.functional.nll_loss: the negative log-likelihood of class indices `target`
    ([N], [N, d1, ...] or []) under `log_probs` ([N, C], [N, C, d1, ...] or [C]), weighted
    by `weight` [C]; the weighted mean divides by the sum of the targets' weights. Targets
    equal to `ignore_index` count for nothing when it is a class in [0, C) (see _ignored)."""
    _check_reduction(reduction, "nll_loss")
    x, target, classes, unbatched = _classes_last(log_probs, target, "nll_loss", True)
    return _nll_last(x, target, classes, unbatched, weight, ignore_index, reduction, "nll_loss")


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0) -> Node:
    """torch.nn.functional.cross_entropy of unnormalised `logits` ([N, C], [N, C, d1, ...] or
    [C]) and a target of class indices (integers, as nll_loss takes them) or of class
    probabilities (floats, logits' shape), with torch's weight, ignore_index, reduction and
    label_smoothing (the targets mixed with the uniform distribution by that share)."""
    _check_reduction(reduction, "cross_entropy")
    if not (isinstance(label_smoothing, numbers.Real) and 0.0 <= label_smoothing <= 1.0):
        raise OptionError(f"cross_entropy: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    target = target if isinstance(target, Node) else constant(target)
    index_target = not target.dtype.is_float
    x, target, classes, unbatched = _classes_last(logits, target, "cross_entropy", index_target)
    logp = log_softmax(x, axis=-1)
    if index_target:
        return _nll_last(logp, target, classes, unbatched, weight, ignore_index, reduction, "cross_entropy",
                         float(label_smoothing))
    target = cast(target, logp.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
    weight = _class_weight(weight, classes, logp.dtype, "cross_entropy")
    per = -sum(logp * target * weight if weight is not None else logp * target, axis=-1)
    return _finish(_reduce_loss(per, reduction), unbatched, reduction)


def mse(pred, target, reduction="mean") -> Node:
    """torch.nn.functional.mse_loss: the squared errors, averaged, summed or kept."""
    _check_reduction(reduction, "mse")
    diff = sub(pred, target)
    return _reduce_loss(diff * diff, reduction)


def mse_loss(pred, target, reduction="mean") -> Node:
    """torch's name for mse."""
    return mse(pred, target, reduction)


def binary_cross_entropy(prob, target, weight=None, reduction="mean", eps: float = 1e-7) -> Node:
    """torch.nn.functional.binary_cross_entropy of probabilities `prob`, each element's loss
    times `weight` (broadcast) if given. kgen clips `prob` to [eps, 1 - eps] before the logs,
    which keeps the loss and its gradient finite at 0 and 1; eps=None takes torch's rule
    instead, each log clamped at -100 (a loss of at most 100)."""
    _check_reduction(reduction, "binary_cross_entropy")
    if eps is None:
        picked = target * maximum(log(prob), -100.0) + (1.0 - target) * maximum(log(1.0 - prob), -100.0)
    else:
        p = minimum(maximum(prob, eps), 1.0 - eps)
        picked = target * log(p) + (1.0 - target) * log(1.0 - p)
    if weight is None and reduction == "mean":
        return -mean(picked)
    loss = -picked if weight is None else picked * -1.0 * weight
    return _reduce_loss(loss, reduction)


# --- normalisation: composites, so R6 row kernels and E5 take them as they take softmax ----------
def _affine_operand(value, x: Node, shape, op: str, name: str):
    """`weight` or `bias` of a normalisation as a node of x's dtype, checked to be `shape`."""
    value = cast(value if isinstance(value, Node) else constant(value), x.dtype)
    if len(value.shape) != len(shape) or not builtins.all(shapes.dims_equal(a, b) for a, b in zip(value.shape, shape)):
        raise ShapeError(f"{op}: {name} must be {list(shape)}, got {value.type_str()}")
    return value


def _eps(eps, op: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise OptionError(f"{op}: eps must be a number >= 0, got {eps!r}")
    return float(eps)


def _normalised(x: Node, axes, eps: float):
    """(x - mean) / sqrt(var + eps) over `axes` with the biased variance, the mean and that
    variance (keepdims). Two reductions over the same rows: one row kernel when they fit (R6)."""
    mu = mean(x, axes, keepdims=True)
    held = x - stop_gradient(mu)  # the same values as x - mu, and the same gradient of var: the
    var = mean(held * held, axes, keepdims=True)  # one through mu is 0, so the backward skips it
    return (x - mu) / sqrt(var + eps), mu, var


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5) -> Node:
    """torch.nn.functional.layer_norm: each slice over the trailing `normalized_shape` dims
    (an int or a tuple) normalised by its mean and biased variance, then times `weight` and
    plus `bias` (both of `normalized_shape`, if given). Built from mean, sub, mul, sqrt and
    div: rows of at most ROW_MAX elements run as one row kernel (R6), in a matmul's epilogue
    when a Linear layer produces them (E5), and so does their gradient. float16 and bfloat16
    x are normalised in float32 (as torch does), y then rounded to x's dtype."""
    (x,) = _floating(x)
    norm = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    trailing = x.shape[x.ndim - len(norm):] if len(norm) <= x.ndim else None
    if not norm or trailing is None or not builtins.all(shapes.dims_equal(a, b) for a, b in zip(trailing, norm)):
        raise ShapeError(f"layer_norm: normalized_shape must be one or more trailing dims of x, "
                         f"got {list(norm)} for x {x.type_str()}")
    eps, given, x = _eps(eps, "layer_norm"), x.dtype, cast(x, dtypes.float32)
    y, _, _ = _normalised(x, tuple(range(x.ndim - len(norm), x.ndim)), eps)
    if weight is not None:
        y = y * _affine_operand(weight, x, norm, "layer_norm", "weight")
    if bias is not None:
        y = y + _affine_operand(bias, x, norm, "layer_norm", "bias")
    return cast(y, given)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               num_batches_tracked=None):
    """torch.nn.functional.batch_norm over channel axis 1 of x [N, C], [N, C, L] or
    [N, C, H, W]; the statistics are per channel, over every other axis.

    Not training: normalise with `running_mean` and `running_var` ([C]); returns y.
    Training: normalise with the batch's mean and biased variance; returns (y, new_mean,
    new_var) with new = (1 - momentum) * running + momentum * batch statistic, the variance's
    unbiased (times n / (n - 1), n the values per channel), as torch updates them; both None
    when the running statistics are. momentum=None is torch's cumulative average: it needs
    `num_batches_tracked`, the (integer, scalar) count of batches before this one, and then
    uses momentum 1 / (num_batches_tracked + 1). The new statistics take no gradient. As in
    layer_norm, the arithmetic is float32's; y has x's dtype, a new statistic its old one's."""
    (x,) = _floating(x)
    if x.ndim not in (2, 3, 4):
        raise ShapeError(f"batch_norm takes x [N, C], [N, C, L] or [N, C, H, W], got {x.type_str()}")
    eps, given, x = _eps(eps, "batch_norm"), x.dtype, cast(x, dtypes.float32)
    channels = (x.shape[1],)
    view = (1, x.shape[1]) + (1,) * (x.ndim - 2)  # a [C] value over x's channel axis
    stats = [None if s is None else _affine_operand(s, x, channels, "batch_norm", name)
             for s, name in ((running_mean, "running_mean"), (running_var, "running_var"))]
    if (stats[0] is None) != (stats[1] is None):
        raise KgenError("batch_norm: give both running_mean and running_var, or neither")
    if not training:
        if stats[0] is None:
            raise KgenError("batch_norm: evaluation (training=False) normalises with running_mean and "
                            "running_var; got None")
        y = (x - reshape(stats[0], view)) / sqrt(reshape(stats[1], view) + eps)
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        count = shapes.numel([x.shape[a] for a in axes])
        if count == 1:
            raise ShapeError(f"batch_norm: training needs more than one value per channel, x is {x.type_str()}")
        y, mu, var = _normalised(x, axes, eps)
    if weight is not None:
        y = y * reshape(_affine_operand(weight, x, channels, "batch_norm", "weight"), view)
    if bias is not None:
        y = y + reshape(_affine_operand(bias, x, channels, "batch_norm", "bias"), view)
    y = cast(y, given)
    if not training:
        return y
    if stats[0] is None:
        return y, None, None
    factor = _momentum(momentum, num_batches_tracked)
    unbiased = var * (size_constant(count, x.dtype) / size_constant(count - 1, x.dtype))
    new = [cast((1.0 - factor) * s + factor * reshape(stop_gradient(b), channels),
                old.dtype if isinstance(old, Node) and old.dtype.is_float else dtypes.float32)
           for s, b, old in zip(stats, (mu, unbiased), (running_mean, running_var))]
    return y, new[0], new[1]


def _momentum(momentum, num_batches_tracked):
    """batch_norm's update factor: `momentum`, or with None the cumulative average's 1 / (count + 1)."""
    if momentum is None:
        if num_batches_tracked is None:
            raise OptionError("batch_norm: momentum=None (a cumulative average) needs num_batches_tracked, "
                            "the count of batches before this one")
        count = num_batches_tracked if isinstance(num_batches_tracked, Node) else constant(num_batches_tracked)
        if count.ndim or count.dtype.is_float or count.dtype is dtypes.bool_:
            raise DTypeError(f"batch_norm: num_batches_tracked must be an integer scalar, got {count.type_str()}")
        return 1.0 / (cast(count, dtypes.float32) + 1.0)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise OptionError(f"batch_norm: momentum must be a number or None, got {momentum!r}")
    return float(momentum)
# --- activations (torch.nn.functional's), composites that fuse into one pointwise kernel ------
# Their gradients are torch's at the kinks too: where(x > 0, ...) sends the whole gradient to
# one branch (maximum would split it on a tie), and the branch not taken is fed a value at
# which it stays finite, so that its zero gradient is no 0 * inf.
def _and(a, b): return where(a, b, False)


def _log1p(e):
    """log(1 + e) to a few ulps for e >= 0 without libdevice (absent under Triton's
    interpreter): log(u) with u = 1 + e, corrected by the factor e / (u - 1) for u's
    rounding, and e where u rounds to 1. The gradient is log(u)'s, 1 / (1 + e): the
    correction is added as a constant."""
    u = 1.0 + e
    d = u - 1.0
    tiny = equal(d, 0.0)
    rough = log(u)
    return where(tiny, e, rough + stop_gradient(rough * (e / where(tiny, 1.0, d) - 1.0)))


def _expm1(x):
    """exp(x) - 1 to a few ulps for x <= 0 without libdevice: near 0, where exp(x) - 1
    cancels, 2t / (1 - t) with t = tanh(x / 2), whose lowering keeps a small x's digits."""
    t = tanh(x * 0.5)
    return where(less(x, -1.0), exp(x) - 1.0, 2.0 * t / (1.0 - t))


def gelu(x, approximate: str = "none"):
    """torch.nn.functional.gelu: x * Phi(x) with the normal CDF Phi from erf, or with
    approximate="tanh" the tanh form 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
    (x,) = _floating(x)
    if approximate == "none":
        return x * 0.5 * (1.0 + erf(x * (1.0 / np.sqrt(2.0))))
    if approximate == "tanh":
        # 0.5 * (1 + tanh(u)) is sigmoid(2u), which keeps a negative x's digits where 1 + tanh(u)
        # cancels; x is limited to +-1e4 inside u (where sigmoid is long flat), so that x**3
        # cannot overflow into a gradient of 0 * inf
        inside = where(greater(x, 1e4), 1e4, where(less(x, -1e4), -1e4, x))
        inner = np.sqrt(2.0 / np.pi) * (inside + 0.044715 * (inside * inside * inside))
        return x * sigmoid(2.0 * inner)
    raise OptionError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(x):
    """torch.nn.functional.silu (swish): x * sigmoid(x)."""
    (x,) = _floating(x)
    return x * sigmoid(x)


def leaky_relu(x, negative_slope: float = 0.01):
    """torch.nn.functional.leaky_relu: x where x > 0, else negative_slope * x (also at 0, for
    the gradient as torch)."""
    (x,) = _floating(x)
    return where(greater(x, 0.0), x, x * negative_slope)


def elu(x, alpha: float = 1.0):
    """torch.nn.functional.elu: alpha * (exp(x) - 1) where x <= 0, else x (NaN takes that
    branch, whose gradient is 1, as torch)."""
    (x,) = _floating(x)
    negative = less_equal(x, 0.0)
    return where(negative, alpha * _expm1(where(negative, x, 0.0)), x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """torch.nn.functional.softplus: log(1 + exp(beta x)) / beta, and x where beta x >
    threshold. Written as max(z, 0) + log1p(exp(-|z|)) (z = beta x), which neither overflows
    nor loses a small value's digits; its gradient is sigmoid(z), 0.5 at z = 0."""
    (x,) = _floating(x)
    if beta == 0:
        raise OptionError("softplus: beta must not be 0")
    z = x * beta
    positive = greater(z, 0.0)
    soft = (where(positive, z, 0.0) + _log1p(exp(where(positive, -z, z)))) / beta
    return where(greater(z, threshold), x, soft)


def _limited(x, lo, hi):
    """torch's clamp value, min(max(x, lo), hi) as C++ computes it: x where lo <= x <= hi
    (-0.0 stays -0.0 at a bound 0.0), NaN stays NaN, and with lo > hi everything is hi. x
    is held constant here: callers choose where x's gradient goes; a tensor bound gets it
    where it is the value (min only where min < max, as torch)."""
    out = stop_gradient(x)
    if lo is not None:
        below = less(x, lo)
        if hi is not None:
            lo = where(less(lo, hi), lo, where(greater(lo, hi), hi, stop_gradient(hi)))
        out = where(below, lo, out)
    if hi is not None:
        out = where(greater(x, hi), hi, out)
    return out


def clamp(x, min=None, max=None):
    """torch.clamp: x limited to [min, max] (either may be None; scalars or tensors, which
    broadcast). The gradient goes to x where min <= x <= max, inclusive, as torch's."""
    if min is None and max is None:
        raise OptionError("clamp: at least one of min and max must be given")
    nodes = _operands(*[v for v in (x, min, max) if v is not None])
    x, lo, hi = nodes[0], (nodes[1] if min is not None else None), (nodes[-1] if max is not None else None)
    inside = None
    for bound, test in ((lo, greater_equal), (hi, less_equal)):
        if bound is not None:
            holds = test(x, bound)
            inside = holds if inside is None else _and(inside, holds)
    return where(inside, x, _limited(x, lo, hi))


clip = clamp  # NumPy's name (np.clip(x, a_min, a_max) positionally)


def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
    """torch.nn.functional.hardtanh: clamp(x, min_val, max_val), whose gradient, as torch's,
    is zero at the bounds themselves and passes where min_val < x < max_val or x is NaN."""
    if min_val > max_val:
        raise OptionError(f"hardtanh: min_val must be <= max_val, got {min_val} and {max_val}")
    (x,) = _floating(x)
    at_bound = where(equal(x, min_val), True, equal(x, max_val))
    return where(at_bound, stop_gradient(x), where(less(x, min_val), min_val, where(greater(x, max_val), max_val, x)))


def relu6(x):
    """torch.nn.functional.relu6: hardtanh(x, 0, 6)."""
    return hardtanh(x, 0.0, 6.0)


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


def _batched(x, op: str, spatial: int):
    """x as a float node with a batch axis, and whether one was added: torch's pools take
    [N, C, *spatial] or, unbatched, [C, *spatial]."""
    (x,) = _floating(x)
    if x.ndim == spatial + 1:
        return expand_dims(x, 0), True
    if x.ndim != spatial + 2:
        layout = "[N, C, H, W] or [C, H, W]" if spatial == 2 else "[N, C, L] or [C, L]"
        raise ShapeError(f"{op} takes x {layout}, got {x.type_str()}")
    return x, False


def _unbatched(outs, added: bool):
    """The results of a pool, without the batch axis _batched added."""
    return tuple(squeeze(y, 0) for y in outs) if added else outs


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d over x [N, C, H, W] or [C, H, W] (padding reads -inf);
    `stride` defaults to `kernel_size`. With return_indices, (values, indices): each window's
    argmax as an int64 flat index into its H x W plane (the first maximum, as torch's)."""
    x, added = _batched(x, "max_pool2d", 2)
    attrs = pool_attrs("max_pool2d", kernel_size, stride, padding, dilation=dilation, ceil_mode=ceil_mode)
    outs = (Node("max_pool2d", (x,), attrs),) + ((Node("max_pool2d_indices", (x,), attrs),) if return_indices else ())
    outs = _unbatched(outs, added)
    return outs if return_indices else outs[0]


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> Node:
    """torch.nn.functional.avg_pool2d over x [N, C, H, W] or [C, H, W]: each window's sum
    over KH*KW (padding counting as zeros), its count of input elements (count_include_pad
    False), or divisor_override."""
    x, added = _batched(x, "avg_pool2d", 2)
    attrs = pool_attrs("avg_pool2d", kernel_size, stride, padding, ceil_mode=ceil_mode,
                       count_include_pad=count_include_pad, divisor_override=divisor_override)
    return _unbatched((Node("avg_pool2d", (x,), attrs),), added)[0]


def _single(value, op: str, what: str) -> tuple:
    """A 1-D pool's int argument, given as an int or a 1-tuple (as torch allows)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ShapeError(f"{op}: {what} must be an int or a 1-tuple of one, got {value!r}")
    return value


def _pool1d(pool, op: str, x, kernel_size, stride, padding, **options):
    """A 1-D pool as the 2-D pool over x [N, C, 1, L] with windows 1 high."""
    x, added = _batched(x, op, 1)
    k = _single(kernel_size, op, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else _single(stride, op, "stride")
    if "dilation" in options:
        options["dilation"] = (1, _single(options["dilation"], op, "dilation"))
    outs = pool(expand_dims(x, 2), (1, k), (1, s), (0, _single(padding, op, "padding")), **options)
    outs = tuple(squeeze(y, 2) for y in (outs if isinstance(outs, tuple) else (outs,)))
    return _unbatched(outs, added)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool1d over x [N, C, L] or [C, L], as max_pool2d with windows
    one row high; the indices are positions along L."""
    outs = _pool1d(max_pool2d, "max_pool1d", x, kernel_size, stride, padding, dilation=dilation,
                   ceil_mode=ceil_mode, return_indices=return_indices)
    return outs if return_indices else outs[0]


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> Node:
    """torch.nn.functional.avg_pool1d over x [N, C, L] or [C, L], as avg_pool2d with windows
    one row high."""
    return _pool1d(avg_pool2d, "avg_pool1d", x, kernel_size, stride, padding, ceil_mode=ceil_mode,
                   count_include_pad=count_include_pad)[0]


def _adaptive_windows(size: int, out: int):
    """The [out, size] 0/1 array of torch's adaptive windows along one axis (window i is
    [floor(i*size/out), ceil((i+1)*size/out))), and each window's length."""
    windows = np.zeros((out, size))
    for i in range(out):
        windows[i, i * size // out:-(-(i + 1) * size // out)] = 1.0
    return windows, windows.sum(axis=1)


def adaptive_avg_pool2d(x, output_size) -> Node:
    """torch.nn.functional.adaptive_avg_pool2d over x [N, C, H, W] or [C, H, W] to
    `output_size` (an int or a pair; None keeps that size). Output 1 x 1 is a mean over H
    and W (a reduction, which fuses), sizes dividing the input are avg_pool2d with
    kernel = stride = input/output; otherwise windows overlap or vary in size, and the
    sum is linear and separable: two matmuls with constant 0/1 window matrices [OH, H] and
    [W, OW] (exact; an axis keeping its size takes none), then a division by the windows'
    sizes, which runs in the matmul's epilogue. Matmul's rules differentiate it; it needs
    no template of its own."""
    x, added = _batched(x, "adaptive_avg_pool2d", 2)
    hw = x.shape[2:]
    if not all(isinstance(d, int) for d in hw):
        raise ShapeError(f"adaptive_avg_pool2d: H and W must be ints, got {x.type_str()}")
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2:
        raise ShapeError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    out = tuple(hw[i] if sizes[i] is None else _single(sizes[i], "adaptive_avg_pool2d", "output_size")
                for i in range(2))
    if min(out) < 1:
        raise ShapeError(f"adaptive_avg_pool2d: output_size must be >= 1, got {output_size!r}")
    if out == (1, 1):
        y = mean(x, axis=(2, 3), keepdims=True)
    elif all(h % o == 0 for h, o in zip(hw, out)):
        y = x if out == hw else avg_pool2d(x, tuple(h // o for h, o in zip(hw, out)))
    else:
        (rows, heights), (cols, widths) = _adaptive_windows(hw[0], out[0]), _adaptive_windows(hw[1], out[1])
        y = x if out[1] == hw[1] else matmul(x, constant(np.ascontiguousarray(cols.T), x.dtype))
        y = y if out[0] == hw[0] else matmul(constant(rows, x.dtype), y)
        y = y / constant(np.outer(heights, widths), x.dtype)
    return _unbatched((y,), added)[0]


def adaptive_avg_pool1d(x, output_size) -> Node:
    """torch.nn.functional.adaptive_avg_pool1d over x [N, C, L] or [C, L], as
    adaptive_avg_pool2d with H = 1."""
    x, added = _batched(x, "adaptive_avg_pool1d", 1)
    y = squeeze(adaptive_avg_pool2d(expand_dims(x, 2), (1, _single(output_size, "adaptive_avg_pool1d",
                                                                    "output_size"))), 2)
    return _unbatched((y,), added)[0]


# --- gathering rows ------------------------------------------------------------------------
def embedding(indices, weight, padding_idx=None) -> Node:
    """torch.nn.functional.embedding: the rows of `weight` [V, D] at integer `indices` of any
    shape, giving [*indices.shape, D]. Rows at `padding_idx` get no gradient. A gather
    template (kgen/kernels/gather.py) whose gradient adds rows back by index."""
    if not isinstance(indices, Node) or indices.dtype.is_float or indices.dtype is dtypes.bool_:
        given = indices.type_str() if isinstance(indices, Node) else type(indices).__name__
        raise DTypeError(f"embedding: indices must be an integer kgen tensor, got {given}")
    (weight,) = _floating(weight)
    if weight.ndim != 2 or not builtins.all(isinstance(d, int) for d in weight.shape):
        raise ShapeError(f"embedding: weight must be a table [V, D] of static sizes, got {weight.type_str()}")
    return Node("embedding", (indices, weight), {"padding_idx": padding_index(padding_idx, weight.shape[0])})


# --- loops ---------------------------------------------------------------------------------------
def _tuple_of(value, what: str) -> tuple:
    items = value if isinstance(value, (tuple, list)) else (value,)
    for v in items:
        if not isinstance(v, Node):
            raise KgenError(f"scan: {what} must be kgen tensors (or a tuple of them), got {type(v).__name__}")
    return tuple(items)


def scan(step, init, xs=None, length=None, reverse: bool = False):
    """jax.lax.scan: run `step(carry, x_t) -> (carry, y_t)` over axis 0 of `xs` (a tensor
    or a tuple of them; None with `length` for a scan over nothing), from `init` (a tensor
    or a tuple). Returns (the last carry, every step's y stacked on a new axis 0), each in
    the structure `step` gave. `reverse` runs the steps from the last to the first (ys stay
    in time order). The body becomes one `scan` node family (kgen/ir/ops_loop.py)."""
    # the graph and the scan entry are ir modules that build with kgen.ops (a cycle in the ir stage)
    from kgen.ir.graph import Graph, topological_order
    from kgen.ir.ops_loop import substitute
    carries = _tuple_of(init, "init")
    seqs = () if xs is None else _tuple_of(xs, "xs")
    if not seqs and length is None:
        raise ShapeError("scan: give xs, or length for a scan over nothing")
    if seqs:
        length = seqs[0].shape[0] if seqs[0].ndim else None
        for k, x in enumerate(seqs):
            if x.ndim == 0 or not shapes.dims_equal(x.shape[0], length):
                raise ShapeError(f"scan: xs {k} is {x.type_str()}; every xs needs axis 0 of the scan's length "
                                 f"{length}")
    places = [Node("input", (), {"name": f"c{i}"}, c.dtype, c.shape) for i, c in enumerate(carries)]
    slices = [Node("input", (), {"name": f"x{i}"}, x.dtype, x.shape[1:]) for i, x in enumerate(seqs)]
    out = step(places[0] if not isinstance(init, (tuple, list)) else tuple(places),
               None if xs is None else slices[0] if not isinstance(xs, (tuple, list)) else tuple(slices))
    if not isinstance(out, tuple) or len(out) != 2:
        raise KgenError("scan: step must return (carry, y); y may be None")
    new_carry, y = out
    new_carries = _tuple_of(new_carry, "the step's carry")
    ys = () if y is None else _tuple_of(y, "the step's y")
    if len(new_carries) != len(carries):
        raise KgenError(f"scan: step returned {len(new_carries)} carries for {len(carries)} given")
    for i, (old, new) in enumerate(zip(carries, new_carries)):
        if old.dtype != new.dtype or not shapes.dims_equal(old.ndim, new.ndim) or not builtins.all(
                shapes.dims_equal(a, b) for a, b in zip(old.shape, new.shape)):
            raise ShapeError(f"scan: carry {i} goes in as {old.type_str()} and comes out as {new.type_str()}; "
                             f"a carry keeps its dtype and shape")
    # Values the step reads from outside (weights, shared variables) become the body's
    # inputs k0, k1, ...: the most outside nodes that feed a node depending on a placeholder.
    outputs = list(new_carries) + list(ys)
    inside = set(places) | set(slices)
    closure, mapping = [], {}
    for node in topological_order(outputs):
        if node in inside or any(i in inside for i in node.inputs):
            inside.add(node)
            for i in node.inputs:
                if i not in inside and i not in mapping and i.op not in ("constant", "iota"):
                    mapping[i] = Node("input", (), {"name": f"k{len(closure)}"}, i.dtype, i.shape)
                    closure.append(i)
    for o in outputs:  # a carry or y that does not depend on the step's inputs at all
        if o not in inside and o not in mapping and o.op not in ("constant", "iota"):
            mapping[o] = Node("input", (), {"name": f"k{len(closure)}"}, o.dtype, o.shape)
            closure.append(o)
    body = Graph(places + slices + [mapping[c] for c in closure], substitute(outputs, mapping))
    inputs = list(carries) + list(seqs) + closure
    attrs = {"body": body, "carries": len(carries), "xs": len(seqs), "length": length, "reverse": bool(reverse)}
    finals = tuple(Node("scan", inputs, {**attrs, "result": ("carry", i)}) for i in range(len(carries)))
    stacked = tuple(Node("scan", inputs, {**attrs, "result": ("ys", j)}) for j in range(len(ys)))
    return (finals if isinstance(init, (tuple, list)) else finals[0],
            None if y is None else stacked if isinstance(y, (tuple, list)) else stacked[0])


# An unknown keyword (conv2d(groups=2)) or a wrong count of arguments is a kgen ArgumentError
# naming the op and the arguments it takes, for every public op (kgen.errors.check_arguments).
for _name in __all__:
    globals()[_name] = check_arguments(globals()[_name], f"kgen.ops.{_name}")
del _name

