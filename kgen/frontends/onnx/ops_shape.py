"""ONNX shape and data-movement ops onto kgen.ops: Shape, Reshape, Flatten, Transpose,
Squeeze, Unsqueeze, Expand, Concat, Split, Slice, Pad, Gather.

Most land on kgen's views (reshape, transpose, broadcast_to, slice, pad), which cost no
kernel of their own. What a view cannot say (a reversed slice, a reflected pad, a gather)
is a concatenation of views where it takes a few pieces, else a gather: the embedding
template for a float table (its gradient adds rows back by index), a one-hot selection
for other dtypes.
"""
from __future__ import annotations

import numpy as np

from kgen import ops
from kgen.errors import KgenError, ShapeError
from kgen.frontends.onnx.table import onnx_op
from kgen.ir import dtypes, shapes

# More pieces than this and an index list is gathered rather than concatenated from views.
_MAX_PIECES = 8


@onnx_op("Shape")
def _shape(node):
    """The input's shape, known at import (a symbolic size stays a sympy size)."""
    shape = list(node.tensor(0).shape)
    start, end = node.attr("start", 0), node.attr("end", None)
    shape = shape[start:end]
    if all(isinstance(d, int) for d in shape):
        return np.array(shape, np.int64)
    return np.array(shape, dtype=object)


@onnx_op("Reshape", static=(1,))
def _reshape(node):
    x = node.tensor(0)
    shape = list(node.ints(1, "shape"))
    if not node.attr("allowzero", 0):  # 0 copies the input's size at that axis
        shape = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
    return ops.reshape(x, tuple(shape))


@onnx_op("Flatten")
def _flatten(node):
    """Always two axes: the sizes before `axis` and from it on (axis 0 gives [1, n])."""
    x = node.tensor(0)
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise node.refuse(f"axis {node.attr('axis')} is outside [-{x.ndim}, {x.ndim}]", ShapeError)
    return ops.reshape(x, (shapes.numel(x.shape[:axis]), shapes.numel(x.shape[axis:])))


@onnx_op("Transpose")
def _transpose(node):
    x = node.tensor(0)
    perm = node.attr("perm", None)
    return ops.transpose(x, None if perm is None else [int(p) for p in perm])


@onnx_op("Squeeze", static=(1,))
def _squeeze(node):
    x = node.tensor(0)
    axes = node.ints(1, "axes", default=None)
    return ops.squeeze(x, None if axes is None else tuple(axes))


@onnx_op("Unsqueeze", static=(1,))
def _unsqueeze(node):
    """Axes count in the output's rank, so a negative one is taken from its end."""
    x = node.tensor(0)
    axes = node.ints(1, "axes")
    rank = x.ndim + len(axes)
    placed = sorted(shapes.check_axis(a, rank, f"{node}: axis") for a in axes)
    if len(set(placed)) != len(placed):
        raise node.refuse(f"axes {axes} name an axis twice", ShapeError)
    shape = list(x.shape)
    for a in placed:
        shape.insert(a, 1)
    return ops.reshape(x, shape)


@onnx_op("Expand", static=(1,))
def _expand(node):
    """NumPy broadcasting of the input's shape with the given one: either side's 1 gives
    way, so the output may be larger than the shape asked for."""
    x = node.tensor(0)
    target = shapes.broadcast_shapes(tuple(x.shape), shapes.as_shape(node.ints(1, "shape")))
    return ops.broadcast_to(x, target)


@onnx_op("Concat")
def _concat(node):
    parts = [node.tensor(i) for i in range(node.arity) if node.has(i)]
    axis = shapes.check_axis(node.attr("axis"), parts[0].ndim, f"{node}: axis")
    parts = [p for p in parts if p.shape[axis] != 0] or parts[:1]
    return parts[0] if len(parts) == 1 else _join(parts, axis)


@onnx_op("Split", static=(1,))
def _split(node):
    """Sizes from the `split` attribute (before opset 13) or input; else `num_outputs`
    (opset 18), whose last piece may be shorter; else as many equal pieces as outputs."""
    x = node.tensor(0)
    axis = shapes.check_axis(node.attr("axis", 0), x.ndim, f"{node}: axis")
    n = x.shape[axis]
    if not isinstance(n, int):
        raise node.refuse(f"axis {axis} of {x.type_str()} is symbolic; kgen splits static axes", ShapeError)
    sizes = node.ints(1, "split", default=None)
    if sizes is None:
        count = node.attr("num_outputs", len(node.proto.output))
        chunk = -(-n // count)
        sizes = [max(min(chunk, n - k * chunk), 0) for k in range(count)]
        if "num_outputs" not in node.attrs and n % count:
            raise node.refuse(f"axis {axis} of size {n} does not split into {count} equal parts", ShapeError)
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise node.refuse(f"split sizes {sizes} do not add up to axis {axis}'s size {n}", ShapeError)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(_window(x, axis, start, 1, size))
        start += size
    return tuple(pieces)


@onnx_op("Slice", static=(1, 2, 3, 4))
def _slice(node):
    """starts/ends/axes/steps as attributes (before opset 10) or inputs. Bounds clamp as in
    Python (INT64 max and min mean the ends); a negative step reverses."""
    x = node.tensor(0)
    starts, ends = node.ints(1, "starts"), node.ints(2, "ends")
    axes = node.ints(3, "axes", default=list(range(len(starts))))
    steps = node.ints(4, default=[1] * len(starts))
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.refuse(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length",
                          ShapeError)
    out = x
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = shapes.check_axis(axis, x.ndim, f"{node}: axis")
        if step == 0:
            raise node.refuse(f"axis {axis} has step 0", ShapeError)
        n = out.shape[axis]
        if not isinstance(n, int):
            if start == 0 and step == 1 and end >= 2**31 - 1:
                continue  # a symbolic axis taken whole
            raise node.refuse(f"axis {axis} of {x.type_str()} is symbolic; kgen slices it only whole", ShapeError)
        b, e, s = slice(start, end, step).indices(n)
        count = len(range(b, e, s))
        out = _window(out, axis, b, s, count) if s > 0 else _pick(out, axis, np.arange(b, e, s))
    return out


@onnx_op("Pad", static=(1, 2, 3))
def _pad(node):
    """pads [begin per axis..., end per axis...] as an attribute (before opset 11) or input,
    over `axes` (opset 18) or all axes. A negative pad crops. Modes constant (value as the
    `value` attribute or the constant_value input), edge, reflect and wrap, each axis's
    indices as NumPy's pad gives them."""
    x = node.tensor(0)
    pads = node.ints(1, "pads")
    axes = [shapes.check_axis(a, x.ndim, f"{node}: axis") for a in node.ints(3, default=list(range(x.ndim)))]
    if len(pads) != 2 * len(axes):
        raise node.refuse(f"{len(pads)} pads for {len(axes)} axes (it needs two per axis)", ShapeError)
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise node.refuse(f"mode {mode!r} is not one kgen pads with (constant, edge, reflect, wrap)")
    widths = dict(zip(axes, zip(pads[:len(axes)], pads[len(axes):])))
    for axis, (before, after) in widths.items():
        if before < 0 or after < 0:
            n = _static_size(node, x, axis)
            x = _window(x, axis, max(-before, 0), 1, n - max(-before, 0) - max(-after, 0))
    widths = {a: (max(b, 0), max(e, 0)) for a, (b, e) in widths.items()}
    if mode == "constant":
        return ops.pad(x, [widths.get(a, (0, 0)) for a in range(x.ndim)], _pad_value(node, x))
    for axis, (before, after) in widths.items():
        if before or after:
            n = _static_size(node, x, axis)
            if n == 0 or mode == "reflect" and n == 1:
                raise node.refuse(f"{mode} padding of an axis of size {n}", ShapeError)
            x = _pick(x, axis, np.pad(np.arange(n), (before, after), mode=mode))
    return x


def _pad_value(node, x):
    if node.opset < 11:
        value = node.attr("value", 0.0)
    else:
        given = np.asarray(node.static(2, np.zeros(()))).reshape(-1)
        value = given[0] if given.size else 0
    return float(value) if x.dtype.is_float else (bool(value) if x.dtype is dtypes.bool_ else int(value))


@onnx_op("Gather")
def _gather(node):
    """Entries of `data` along `axis` at `indices` of any rank (negative ones count from the
    end): out has data's shape with that axis replaced by the indices' shape. Indices known
    at import are views where they form few runs."""
    data = node.tensor(0)
    axis = shapes.check_axis(node.attr("axis", 0), data.ndim, f"{node}: axis")
    n = _static_size(node, data, axis)
    known = _known(node, 1)
    if known is not None:
        known = np.where(known < 0, known + n, known).astype(np.int64)
        if known.size and (known.min() < 0 or known.max() >= n):
            raise node.refuse(f"indices {known.tolist()} fall outside axis {axis} of size {n}", ShapeError)
        picked = _pick(data, axis, known.reshape(-1))
        return ops.reshape(picked, data.shape[:axis] + known.shape + data.shape[axis + 1:])
    indices = node.tensor(1)
    indices = ops.where(ops.less(indices, 0), ops.add(indices, n), indices)
    return _take(data, axis, indices)


def _known(node, i):
    """Input i as an int array when it is known at import, else None."""
    try:
        return np.asarray(node.static(i)).astype(np.int64)
    except KgenError:
        return None


def _static_size(node, x, axis: int) -> int:
    n = x.shape[axis]
    if not isinstance(n, int):
        raise node.refuse(f"axis {axis} of {x.type_str()} is symbolic; kgen needs its size here", ShapeError)
    return n


def _window(x, axis: int, start: int, step: int, count: int):
    """x's `count` entries along `axis` from `start` in steps of `step` (a view)."""
    begin, steps, shape = [0] * x.ndim, [1] * x.ndim, list(x.shape)
    begin[axis], steps[axis], shape[axis] = start, step, count
    return ops.slice_strided(x, begin, steps, shape)


def _runs(indices: np.ndarray) -> list:
    """indices as (first, step, count) runs of one stride >= 0, each a view (or, stride 0,
    a broadcast of one entry)."""
    runs = []
    for i in indices.tolist():
        if runs:
            first, step, count = runs[-1]
            if count == 1 and i >= first or count > 1 and i - (first + step * (count - 1)) == step:
                runs[-1] = (first, i - first if count == 1 else step, count + 1)
                continue
        runs.append((i, 1, 1))
    return runs


def _pick(x, axis: int, indices: np.ndarray):
    """x at the index list `indices` (known at import) along `axis`: one view for an even
    stride forward, a broadcast for a repeated entry, a concatenation of those for a few
    runs, else a gather."""
    if len(indices) == 0:
        return _window(x, axis, 0, 1, 0)
    runs = _runs(indices)
    if len(runs) > _MAX_PIECES:
        return _take(x, axis, ops.constant(indices.astype(np.int64)))
    pieces = []
    for first, step, count in runs:
        if step == 0:
            one = _window(x, axis, first, 1, 1)
            shape = list(x.shape)
            shape[axis] = count
            pieces.append(ops.broadcast_to(one, shape))
        else:
            pieces.append(_window(x, axis, first, step, count))
    return pieces[0] if len(pieces) == 1 else _join(pieces, axis)


def _join(pieces, axis: int):
    """ops.concatenate, which joins as a sum of pads: bool, which does not add, goes as int32."""
    if pieces[0].dtype is dtypes.bool_:
        return ops.not_equal(ops.concatenate([ops.cast(p, dtypes.int32) for p in pieces], axis), 0)
    return ops.concatenate(pieces, axis)


def _take(x, axis: int, indices):
    """x at integer `indices` (a kgen tensor of any rank, entries in [0, n)) along `axis`:
    out = x.shape[:axis] + indices.shape + x.shape[axis+1:]. A float x with static sizes is
    an embedding table (axis moved first, the rest flattened); any other selects by one-hot."""
    n = x.shape[axis]
    rest = [d for a, d in enumerate(x.shape) if a != axis]
    k, before = indices.ndim, axis
    back = list(range(k, k + before)) + list(range(k)) + list(range(k + before, k + x.ndim - 1))
    if x.dtype.is_float and shapes.is_static(x.shape):
        table = ops.reshape(ops.transpose(x, [axis] + [a for a in range(x.ndim) if a != axis]),
                            (n, shapes.static_numel(rest)))
        rows = ops.reshape(ops.embedding(indices, table), tuple(indices.shape) + tuple(rest))
        return ops.transpose(rows, back)
    source = ops.cast(x, dtypes.int32) if x.dtype is dtypes.bool_ else x
    last = ops.transpose(source, [a for a in range(x.ndim) if a != axis] + [axis])
    hit = ops.equal(ops.reshape(indices, tuple(indices.shape) + (1,) * x.ndim),
                    ops.iota((n,), 0, indices.dtype))
    picked = ops.sum(ops.where(hit, last, ops.constant(0, source.dtype)), axis=-1)
    out = ops.transpose(picked, back)
    return ops.not_equal(out, 0) if x.dtype is dtypes.bool_ else out
