"""Op table entries for reductions over any set of axes, with keepdims.

Kernels accumulate float16/bfloat16 in float32, and so does the reference.
"""
from __future__ import annotations

import numpy as np

from kgen.errors import DTypeError
from kgen.ir import dtypes, shapes
from kgen.ir.optable import OpDef, Reduction, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _infer(inputs, attrs):
    (x,) = inputs
    if x.dtype is dtypes.bool_:
        raise DTypeError("cannot reduce a bool tensor; cast it first")
    axes = shapes.normalize_axes(attrs["axes"], x.ndim)
    return x.dtype, reduced_shape(x.shape, axes, attrs["keepdims"])


def _reference(np_reduce):
    def reference(node, arrays, shape):
        (x,) = arrays
        if x.dtype == np.float16:
            x = x.astype(np.float32)
        if x.size == 0 and np_reduce is np.max:  # no element: the kernels' start value, -inf
            lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
            return np.full(shape, lowest, x.dtype)
        return np_reduce(x, axis=node.attrs["axes"], keepdims=node.attrs["keepdims"])
    return reference


def _cotangent_like_input(g, node):
    """`g` reshaped to keepdims form and broadcast over the reduced axes of the input."""
    x = node.inputs[0]
    keep = reduced_shape(x.shape, node.attrs["axes"], keepdims=True)
    return _ops().broadcast_to(_ops().reshape(g, keep), x.shape)


def _sum_vjp(g, node):
    return (_cotangent_like_input(g, node),)


def _mean_vjp(g, node):
    x = node.inputs[0]
    count = shapes.numel([x.shape[a] for a in node.attrs["axes"]])
    return (_cotangent_like_input(g, node) / _ops().size_constant(count, g.dtype),)


def _max_vjp(g, node):
    """The gradient goes to the maxima, split evenly between ties (as torch.amax)."""
    ops = _ops()
    x = node.inputs[0]
    winners = ops.cast(ops.equal(x, _cotangent_like_input(node, node)), x.dtype)
    ties = ops.sum(winners, node.attrs["axes"], keepdims=True)
    return (_cotangent_like_input(g, node) * winners / ties,)


_ZERO = {"float32": "0.0", "float16": "0.0", "bfloat16": "0.0", "int32": "0", "int64": "0"}
_LOWEST = {"float32": "float('-inf')", "float16": "float('-inf')", "bfloat16": "float('-inf')",
           "int32": str(-2**31), "int64": str(-2**63)}

register(OpDef("sum", "reduction", _infer, _reference(np.sum), _sum_vjp,
               Reduction(_ZERO, "{acc} + {x}", "sum"), arity=1))
register(OpDef("mean", "reduction", _infer, _reference(np.mean), _mean_vjp,
               Reduction(_ZERO, "{acc} + {x}", "sum", scale_by_count=True), arity=1))
# NaN wins, as in NumPy and torch.
register(OpDef("max", "reduction", _infer, _reference(np.max), _max_vjp,
               Reduction(_LOWEST, "tl.maximum({acc}, {x}, propagate_nan=tl.PropagateNan.ALL)", "max",
                         nan_aware_finish=True), arity=1))
