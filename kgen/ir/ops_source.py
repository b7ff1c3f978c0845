"""Op table entries for values that come from outside the graph's arithmetic:
inputs (function arguments and shared state), constants, and iota (index ramps)."""
from __future__ import annotations

import numpy as np
import sympy

from kgen.errors import KgenError
from kgen.ir import dtypes, shapes
from kgen.ir.optable import OpDef, register


def _infer_given(inputs, attrs):
    raise KgenError("source nodes are built with an explicit dtype and shape")


def _input_reference(node, arrays, shape):
    raise KgenError(f"input {node.name!r} has no value: the interpreter binds inputs by name")


register(OpDef("input", "source", _infer_given, _input_reference, vjp=None, arity=0))


def _constant_reference(node, arrays, shape, bindings=None):
    value = node.attrs["value"]
    if isinstance(value, sympy.Expr):  # a size expression such as 1/N
        value = float(value.subs({shapes.size_symbol(k): v for k, v in (bindings or {}).items()}))
    return np.broadcast_to(np.asarray(value, dtype=np.float64 if node.dtype.is_float else node.dtype.numpy), shape)


def constant_lower(node, args):
    """A scalar constant as a Triton literal (size expressions are printed by the writer)."""
    value = node.attrs["value"]
    if node.dtype is dtypes.bool_:
        return "True" if value else "False"
    if node.dtype.is_float:
        value = float(value)
        if np.isnan(value):
            return "float('nan')"
        if np.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    return str(int(value))


register(OpDef("constant", "source", _infer_given, _constant_reference, vjp=None,
               lower=constant_lower, arity=0, sized_reference=True))


def _infer_iota(inputs, attrs):
    shape = shapes.as_shape(attrs["shape"])
    if not 0 <= attrs["axis"] < len(shape):
        raise KgenError(f"iota: axis {attrs['axis']} is out of range for shape {shapes.format_shape(shape)}")
    return attrs["dtype"], shape


def _iota_reference(node, arrays, shape):
    axis = node.attrs["axis"]
    ramp = np.arange(shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return np.broadcast_to(ramp, shape).astype(node.dtype.numpy)


# iota lowers to its coordinate along `axis`: the writer handles it as an index expression.
register(OpDef("iota", "source", _infer_iota, _iota_reference, vjp=None, lower="coordinate", arity=0))
