"""ONNX elementwise ops onto kgen.ops: arithmetic (with ONNX's numpy broadcasting, which is
kgen's), unary math, activations, comparisons, Where, Cast, Identity."""
from __future__ import annotations

from kgen import ops
from kgen.errors import DTypeError
from kgen.frontends.onnx.table import kgen_dtype, onnx_op

_BINARY = {"Add": ops.add, "Sub": ops.sub, "Mul": ops.mul, "Equal": ops.equal,
           "Less": ops.less, "LessOrEqual": ops.less_equal, "Greater": ops.greater,
           "GreaterOrEqual": ops.greater_equal}


def _second(node):
    """Input 1 of a binary op. Before opset 7, `broadcast=1` aligned it with input 0 from
    `axis` (default: the trailing axes); kgen broadcasts numpy's way, so it gains trailing
    axes of size 1 to say the same."""
    a, b = node.tensor(0), node.tensor(1)
    if node.opset < 7 and node.attr("broadcast", 0) and "axis" in node.attrs:
        axis = node.attr("axis") % a.ndim
        b = ops.reshape(b, tuple(b.shape) + (1,) * (a.ndim - axis - b.ndim))
    return b


@onnx_op(*_BINARY)
def _binary(node):
    return _BINARY[node.op](node.tensor(0), _second(node))


@onnx_op("Pow")
def _pow(node):
    """ONNX's power has the base's type; kgen's is floating, so an integer base's power is
    rounded back to its integers (exact powers are whole numbers up to rounding)."""
    base = node.tensor(0)
    out = ops.pow(base, _second(node))
    if out.dtype == base.dtype:
        return out
    if base.dtype.is_float:
        return ops.cast(out, base.dtype)
    return ops.cast(ops.floor(ops.add(out, 0.5)), base.dtype)


@onnx_op("Div")
def _div(node):
    a, b = node.tensor(0), _second(node)
    if not a.dtype.is_float and not b.dtype.is_float:  # integer division truncates in ONNX (C's rule)
        return ops.div(a, b, rounding_mode="trunc")
    return ops.div(a, b)


@onnx_op("Max", "Min")
def _variadic_extreme(node):
    combine = ops.maximum if node.op == "Max" else ops.minimum
    out = node.tensor(0)
    for i in range(1, node.arity):
        out = combine(out, node.tensor(i))
    return out


@onnx_op("Sum", "Mean")
def _variadic_sum(node):
    out = node.tensor(0)
    for i in range(1, node.arity):
        out = ops.add(out, node.tensor(i))
    return out if node.op == "Sum" else ops.div(out, float(node.arity))


_UNARY = {"Neg": ops.neg, "Abs": ops.abs, "Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt, "Tanh": ops.tanh,
          "Sigmoid": ops.sigmoid, "Relu": ops.relu, "Erf": ops.erf, "Floor": ops.floor,
          "Reciprocal": lambda x: ops.div(1.0, x), "Identity": lambda x: x,
          "Not": lambda x: ops.equal(x, False)}


@onnx_op(*_UNARY)
def _unary(node):
    return _UNARY[node.op](node.tensor(0))


@onnx_op("Cast")
def _cast(node):
    to = kgen_dtype(node.attr("to"), str(node))
    return ops.cast(node.tensor(0), to)


@onnx_op("CastLike")
def _cast_like(node):
    """Input 0 in input 1's dtype (expanded function bodies cast their constants so)."""
    return ops.cast(node.tensor(0), node.input_dtype(1))


@onnx_op("Where")
def _where(node):
    return ops.where(node.tensor(0), node.tensor(1), node.tensor(2))


@onnx_op("LeakyRelu")
def _leaky_relu(node):
    return ops.leaky_relu(node.tensor(0), node.attr("alpha", 0.01))


@onnx_op("Elu")
def _elu(node):
    return ops.elu(node.tensor(0), node.attr("alpha", 1.0))


@onnx_op("Softplus")
def _softplus(node):
    return ops.softplus(node.tensor(0))


@onnx_op("Clip", static=(1, 2))
def _clip(node):
    x = node.tensor(0)
    low = node.attr("min", None) if node.opset < 11 else _scalar(node, 1)
    high = node.attr("max", None) if node.opset < 11 else _scalar(node, 2)
    if low is None and high is None:
        return x
    return ops.clamp(x, low, high)


def _scalar(node, i):
    """An optional scalar input known at import, as a Python number (None when absent)."""
    if not node.has(i):
        return None
    value = node.static(i)
    if value.size != 1:
        raise node.refuse(f"input {i} must be a scalar, got shape {list(value.shape)}", DTypeError)
    return value.reshape(()).item()

