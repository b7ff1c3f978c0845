"""Op table entries for views: reshape, transpose and broadcast_to. expand_dims, squeeze
and flatten are reshapes (kgen.ops builds them so).

A view never copies: its lowering maps the coordinates at which its output is read to the
coordinates of its input (sympy expressions), so the kernel that reads a view loads straight
from the viewed buffer (DESIGN.md rule 4).
"""
from __future__ import annotations

import numpy as np

from kgen.errors import ShapeError
from kgen.ir import shapes
from kgen.ir.optable import OpDef, register


def _ops():
    from kgen import ops
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


def _reshape_coords(node, coords):
    from kgen.lowering.indexing import flat_index, unflatten
    return unflatten(flat_index(coords, node.shape), node.inputs[0].shape)


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
