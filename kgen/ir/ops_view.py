"""Op table entries for views: reshape, transpose, broadcast_to, slice and pad. expand_dims,
squeeze and flatten are reshapes; indexing, concatenate and stack are slices and pads
(kgen.ops builds them so).

A view never copies: its lowering maps the coordinates at which its output is read to the
coordinates of its input (sympy expressions), so the kernel that reads a view loads straight
from the viewed buffer (DESIGN.md rule 4).
"""
from __future__ import annotations

import numpy as np
import sympy

from kgen.errors import ShapeError
from kgen.ir import shapes
from kgen.ir.indexing import FloorDiv, flat_index, unflatten
from kgen.ir.optable import Guarded, OpDef, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


# --- reshape -------------------------------------------------------------------------------
def _infer_reshape(inputs, attrs):
    (x,) = inputs
    target = shapes.as_shape(attrs["shape"])
    if not shapes.dims_equal(shapes.numel(target), shapes.numel(x.shape)):
        raise ShapeError(f"cannot reshape {shapes.format_shape(x.shape)} "
                         f"({shapes.numel(x.shape)} elements) to {shapes.format_shape(target)} "
                         f"({shapes.numel(target)} elements)")
    return x.dtype, target


def _axis_groups(out_shape, in_shape) -> list:
    """The reshape's axes in groups that hold the same elements: ((output axes), (input
    axes)) pairs, the coarsest split of both shapes into runs of equal products (unit axes
    join a neighbouring run). [N*T, G] -> [N, T, G] is ((0, 1), (0,)) and ((2,), (1,))."""
    groups, i, j = [], 0, 0
    while i < len(out_shape) or j < len(in_shape):
        gi, gj = [i] if i < len(out_shape) else [], [j] if j < len(in_shape) else []
        a = out_shape[i] if gi else 1
        b = in_shape[j] if gj else 1
        i, j = i + bool(gi), j + bool(gj)
        while not shapes.dims_equal(a, b):
            if i < len(out_shape) and (j >= len(in_shape) or _smaller(a, b)):
                a, i = a * out_shape[i], gi.append(i) or i + 1
            elif j < len(in_shape):
                b, j = b * in_shape[j], gj.append(j) or j + 1
            else:
                return [(tuple(range(len(out_shape))), tuple(range(len(in_shape))))]  # no finer split
        while i < len(out_shape) and out_shape[i] == 1 and (j >= len(in_shape) or in_shape[j] != 1):
            gi.append(i)
            i += 1
        while j < len(in_shape) and in_shape[j] == 1 and (i >= len(out_shape) or out_shape[i] != 1):
            gj.append(j)
            j += 1
        groups.append((tuple(gi), tuple(gj)))
    return groups


def _smaller(a, b) -> bool:
    """Whether a run's product `a` is a proper divisor of `b` (grow a's run next)."""
    ratio = sympy.simplify(sympy.sympify(b) / a)
    return bool(ratio.is_integer) and ratio != 1


def _reshape_coords(node, coords):
    """Each group of axes maps alone: a split axis becomes a sum (n*T + t), and only a
    merged axis needs a division and a remainder."""
    out_shape, in_shape = node.shape, node.inputs[0].shape
    mapped = [sympy.Integer(0)] * len(in_shape)
    for outs, ins in _axis_groups(out_shape, in_shape):
        flat = flat_index([coords[a] for a in outs], [out_shape[a] for a in outs])
        for a, c in zip(ins, unflatten(flat, [in_shape[a] for a in ins]) if len(ins) > 1 else [flat]):
            mapped[a] = c
    return mapped


register(OpDef("reshape", "view", _infer_reshape,
               lambda node, a, shape: np.reshape(a[0], shape),
               lambda g, n: (_ops().reshape(g, n.inputs[0].shape),),
               _reshape_coords, arity=1))


# --- transpose -----------------------------------------------------------------------------
def _infer_transpose(inputs, attrs):
    (x,) = inputs
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the {x.ndim} axes")
    return x.dtype, tuple(x.shape[p] for p in perm)


def _transpose_coords(node, coords):
    out = [None] * len(coords)
    for k, p in enumerate(node.attrs["perm"]):
        out[p] = coords[k]
    return out


def _transpose_vjp(g, n):
    inverse = np.argsort(n.attrs["perm"]).tolist()
    return (_ops().transpose(g, inverse),)


register(OpDef("transpose", "view", _infer_transpose,
               lambda node, a, shape: np.transpose(a[0], node.attrs["perm"]),
               _transpose_vjp, _transpose_coords, arity=1))


# --- broadcast_to --------------------------------------------------------------------------
def _infer_broadcast(inputs, attrs):
    (x,) = inputs
    target = shapes.as_shape(attrs["shape"])
    got = shapes.broadcast_shapes(x.shape, target)
    if len(got) != len(target) or not all(shapes.dims_equal(a, b) for a, b in zip(got, target)):
        raise ShapeError(f"cannot broadcast {shapes.format_shape(x.shape)} to {shapes.format_shape(target)}")
    return x.dtype, target


def _broadcast_coords(node, coords):
    src = node.inputs[0].shape
    lead = len(coords) - len(src)
    return [0 if d == 1 and node.shape[lead + i] != 1 else coords[lead + i] for i, d in enumerate(src)]


register(OpDef("broadcast_to", "view", _infer_broadcast,
               lambda node, a, shape: np.broadcast_to(a[0], shape),
               lambda g, n: (_ops().sum_to(g, n.inputs[0].shape),),
               _broadcast_coords, arity=1))


# --- slice and pad: strided windows --------------------------------------------------------
def whole_axis(origin, step, out_dim, in_dim) -> bool:
    """Whether a window axis takes (or places) all of its axis: the identity there."""
    return origin == 0 and step == 1 and shapes.dims_equal(out_dim, in_dim)


def _fits(origin: int, step: int, count, extent) -> bool:
    """Whether `count` elements from `origin` in steps of `step` lie inside `extent`. Static
    sizes are compared; symbolic ones must fit at every value of their symbols (>= 0): the
    room left, extent - origin - step * (count - 1) - 1, is a polynomial in the symbols with
    no negative coefficient (rows 1 to T of a [T + 1, ...] result, say)."""
    if isinstance(count, int) and isinstance(extent, int):
        return count == 0 or origin + step * (count - 1) < extent
    room = sympy.expand(sympy.sympify(extent) - origin - step * (sympy.sympify(count) - 1) - 1)
    symbols = sorted(room.free_symbols, key=str)
    return all(c >= 0 for c in sympy.Poly(room, *symbols).coeffs()) if symbols else room >= 0


def _infer_window(op: str, x, origin, step, shape, window_in_input: bool):
    """The checks slice and pad share: per axis, `count` elements from `origin` in steps of
    `step` lie inside `extent`. A slice takes its output's elements from inside its input;
    a pad places its input's elements inside its output. An axis taken whole may be
    symbolic; any other must fit whatever its symbols' values (`_fits`)."""
    shape = shapes.as_shape(shape)
    if not len(origin) == len(step) == len(shape) == x.ndim:
        raise ShapeError(f"{op}: {'start' if window_in_input else 'low'} {origin}, step {step} and shape {shape} "
                         f"need one entry per axis "
                         f"of {shapes.format_shape(x.shape)}")
    for axis, (b, s, d, n) in enumerate(zip(origin, step, shape, x.shape)):
        count, extent = (d, n) if window_in_input else (n, d)
        if s < 1 or b < 0 or not whole_axis(b, s, d, n) and not _fits(b, s, count, extent):
            raise ShapeError(f"{op}: axis {axis} cannot {'give' if window_in_input else 'place'} "
                             f"{shapes.format_dim(count)} elements from {b} in steps of {s} "
                             f"{'from' if window_in_input else 'inside'} {shapes.format_dim(extent)}")
    return x.dtype, shape


# Slice: output coordinate c reads input coordinate start + step*c on each axis.
def _infer_slice(inputs, attrs):
    return _infer_window("slice", inputs[0], attrs["start"], attrs["step"], attrs["shape"], True)


def _slice_reference(node, a, shape):
    return a[0][tuple(slice(b, b + s * d, s) for b, s, d in zip(node.attrs["start"], node.attrs["step"], shape))]


def _slice_coords(node, coords):
    return [b + s * c for b, s, c in zip(node.attrs["start"], node.attrs["step"], coords)]


register(OpDef("slice", "view", _infer_slice, _slice_reference,
               lambda g, n: (_ops().pad_strided(g, n.attrs["start"], n.attrs["step"], n.inputs[0].shape),),
               _slice_coords, arity=1))


# Pad, slice's transpose: output coordinate c holds input coordinate (c - low) / step where
# that is a whole number inside the input, and zero elsewhere. A guarded view: the kernel
# that reads it loads the input under the guard (kgen.kernels.writer), so no zeros are ever
# written.
def _infer_pad(inputs, attrs):
    return _infer_window("pad", inputs[0], attrs["low"], attrs["step"], attrs["shape"], False)


def _pad_reference(node, a, shape):
    out = np.zeros(shape, a[0].dtype)
    out[tuple(slice(b, b + s * n, s) for b, s, n in zip(node.attrs["low"], node.attrs["step"], a[0].shape))] = a[0]
    return out


def _pad_coords(node, coords):
    mapped, conditions = [], []
    for c, b, s, d, n in zip(coords, node.attrs["low"], node.attrs["step"], node.shape, node.inputs[0].shape):
        if whole_axis(b, s, d, n):
            mapped.append(c)
            continue
        mapped.append(FloorDiv(c - b, s) if s > 1 else c - b)
        conditions.append((c, b, s, n))
    return Guarded(mapped, conditions)


register(OpDef("pad", "view", _infer_pad, _pad_reference,
               lambda g, n: (_ops().slice_strided(g, n.attrs["low"], n.attrs["step"], n.inputs[0].shape),),
               _pad_coords, arity=1))
