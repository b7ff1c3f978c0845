"""Op table entries for elementwise ops: one block per op with its dtype rule, NumPy
reference, VJP and Triton lowering. Operands broadcast (NumPy rules); operand dtypes are
already equal here (kgen.ops inserts the casts), and results are computed in float32 for
float16/bfloat16 inside kernels.

Lowerings receive the operands' Triton expressions. tl.math has no tanh and libdevice does
not run under the interpreter, so tanh and pow are written from exp/log.
"""
from __future__ import annotations

import math

import numpy as np

from kgen.errors import DTypeError
from kgen.ir import dtypes, shapes
from kgen.ir.optable import OpDef, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def _infer(result="same", floats_only=False, bool_ok=False):
    """A dtype/shape rule: operands share a dtype; the result is that dtype, or `result`."""
    def infer(inputs, attrs):
        kinds = {i.dtype for i in inputs}
        if len(kinds) > 1:
            given = ", ".join(i.type_str() for i in inputs)
            raise DTypeError(f"operands must share a dtype, got {given}")
        dt = inputs[0].dtype
        if floats_only and not dt.is_float:
            raise DTypeError(f"expected a floating dtype, got {dt}")
        if dt is dtypes.bool_ and not bool_ok:
            raise DTypeError("expected a numeric dtype, got bool")
        shape = shapes.broadcast_shapes(*(i.shape for i in inputs))
        return (dt if result == "same" else result), shape
    return infer


def unbroadcast(g, shape):
    """The cotangent `g` summed back down to an operand's (broadcast) `shape`."""
    return _ops().sum_to(g, shape)


def _unary(name, reference, lower, vjp, floats_only=True, bool_ok=False, flops=None):
    register(OpDef(name, "elementwise", _infer(floats_only=floats_only, bool_ok=bool_ok),
                   lambda node, a, shape: reference(*a), vjp, lower, arity=1, flops=flops))


def _no_flops(node):
    return 0


def _binary(name, reference, lower, vjp, result="same", floats_only=False, bool_ok=False):
    register(OpDef(name, "elementwise", _infer(result, floats_only, bool_ok),
                   lambda node, a, shape: reference(*a), vjp, lower, arity=2))


def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


# --- unary ---------------------------------------------------------------------------------
_unary("neg", np.negative, lambda n, a: f"-{a}", lambda g, n: (-g,), floats_only=False)

# The identity, through which no gradient flows (the max subtracted for stability in
# softmax and logsumexp: it cancels in their gradients).
_unary("stop_gradient", lambda a: a, lambda n, a: a, lambda g, n: (None,), floats_only=False, bool_ok=True,
       flops=_no_flops)

_unary("exp", np.exp, lambda n, a: f"tl.exp({a})", lambda g, n: (g * n,))

_unary("log", np.log, lambda n, a: f"tl.log({a})", lambda g, n: (g / n.inputs[0],))

_unary("sqrt", np.sqrt, lambda n, a: f"tl.sqrt({a})", lambda g, n: (g * 0.5 / n,))

_unary("abs", np.abs, lambda n, a: f"tl.abs({a})",
       lambda g, n: (_ops().where(n.inputs[0] > 0, g, _ops().where(n.inputs[0] < 0, -g, 0.0)),),
       floats_only=False)

def _tanh_lower(n, a):
    """tanh to a few ulps without libdevice (which Triton's interpreter lacks): (1 - e) / (1 + e)
    with e = exp(-2|x|), and near 0, where 1 - e cancels, its series to x**7 (within 2e-9 of
    tanh for |x| < 1/8). 2 * sigmoid(2x) - 1 lost all digits of a small x."""
    x2 = f"({a} * {a})"
    series = f"{a} * (1.0 + {x2} * (-0.3333333333333333 + {x2} * (0.13333333333333333 + {x2} * -0.05396825396825397)))"
    e = f"tl.exp(-2.0 * tl.abs({a}))"
    far = f"tl.where({a} < 0, -1.0, 1.0) * ((1.0 - {e}) / (1.0 + {e}))"
    return f"tl.where(tl.abs({a}) < 0.125, {series}, {far})"


_unary("tanh", np.tanh, _tanh_lower, lambda g, n: (g * (1.0 - n * n),))

_unary("sigmoid", _sigmoid, lambda n, a: f"tl.sigmoid({a})", lambda g, n: (g * n * (1.0 - n),))

_NAN = "propagate_nan=tl.PropagateNan.ALL"  # NaN wins, as in NumPy and torch

# relu's gradient reads its output (out > 0 exactly where x > 0): the next layer reads that
# value anyway, so the pre-activation never has to be written for the backward pass.
_unary("relu", lambda a: np.maximum(a, 0).astype(a.dtype),
       lambda n, a: f"tl.maximum({a}, 0, {_NAN})" if n.dtype.is_float else f"tl.maximum({a}, 0)",
       lambda g, n: (_ops().where(n > 0, g, 0.0),), floats_only=False)


# --- binary --------------------------------------------------------------------------------
_binary("add", np.add, lambda n, a, b: f"({a} + {b})",
        lambda g, n: (unbroadcast(g, n.inputs[0].shape), unbroadcast(g, n.inputs[1].shape)))

_binary("sub", np.subtract, lambda n, a, b: f"({a} - {b})",
        lambda g, n: (unbroadcast(g, n.inputs[0].shape), unbroadcast(-g, n.inputs[1].shape)))

_binary("mul", np.multiply, lambda n, a, b: f"({a} * {b})",
        lambda g, n: (unbroadcast(g * n.inputs[1], n.inputs[0].shape),
                      unbroadcast(g * n.inputs[0], n.inputs[1].shape)))

_binary("div", np.divide, lambda n, a, b: f"({a} / {b})",
        lambda g, n: (unbroadcast(g / n.inputs[1], n.inputs[0].shape),
                      unbroadcast(-g * n / n.inputs[1], n.inputs[1].shape)),
        floats_only=True)

def _extremum_vjp(wins):
    """maximum/minimum: the gradient goes to the winner, split evenly on a tie (as torch
    and JAX do, so that maximum(x, x) has x's gradient g)."""
    def vjp(g, n):
        ops, (a, b) = _ops(), n.inputs
        tie, half = ops.equal(a, b), g * 0.5
        return (unbroadcast(ops.where(tie, half, ops.where(wins(a, b), g, 0.0)), a.shape),
                unbroadcast(ops.where(tie, half, ops.where(wins(b, a), g, 0.0)), b.shape))
    return vjp


_binary("maximum", np.maximum,
        lambda n, a, b: f"tl.maximum({a}, {b}, {_NAN})" if n.dtype.is_float else f"tl.maximum({a}, {b})",
        _extremum_vjp(lambda a, b: a > b))

_binary("minimum", np.minimum,
        lambda n, a, b: f"tl.minimum({a}, {b}, {_NAN})" if n.dtype.is_float else f"tl.minimum({a}, {b})",
        _extremum_vjp(lambda a, b: a < b))


def _pow_lower(node, a, b):
    """Small integer and one-half exponents expand exactly; others use exp2/log2 of |a|."""
    exponent = node.inputs[1]
    if exponent.op == "constant" and exponent.shape == () and not hasattr(exponent.attrs["value"], "free_symbols"):
        value = float(exponent.attrs["value"])
        if value == 0:
            return f"tl.where({a} != {a}, 1.0, 1.0)"  # 1 everywhere (NaN**0 is 1), lane-shaped
        if value == 0.5:
            return f"tl.sqrt({a})"
        if value.is_integer() and 1 <= abs(value) <= 4:
            product = " * ".join([a] * int(abs(value)))
            return f"({product})" if value > 0 else f"(1.0 / ({product}))"
    # |a| ** b, then the sign and domain as NumPy and torch: a negative base (-0.0 too) with an
    # odd exponent is negative, a finite one with a fractional exponent NaN; b == 0, a == 1 and
    # (-1) ** inf give 1. Only tl.where joins the conditions: the interpreter cannot `&` a
    # one-element value (a scalar input's load) with a block of bools.
    magnitude = f"tl.exp2({b} * tl.log2(tl.abs({a})))"
    whole = f"({b} == tl.floor({b}))"
    odd = f"tl.where({whole}, {b} * 0.5 != tl.floor({b} * 0.5), False)"
    negative = f"tl.where({a} == 0, 1.0 / {a} < 0, {a} < 0)"
    signed = f"tl.where(tl.where({odd}, {negative}, False), -1.0, 1.0) * {magnitude}"
    fractional = f"tl.where({a} < 0, tl.where({a} == float('-inf'), False, {b} != tl.floor({b})), False)"
    one = f"tl.where({b} == 0, True, tl.where({a} == 1, True, tl.where({a} == -1, tl.abs({b}) == float('inf'), False)))"
    return f"tl.where({one}, 1.0, tl.where({fractional}, float('nan'), {signed}))"


def _pow_vjp(g, n):
    """As torch: d/da is b*a**(b-1), and 0 where b == 0 (so x**0 has gradient 0 at x = 0);
    d/db is a**b*log(a), and 0 where a == 0 and b >= 0."""
    a, b = n.inputs
    ops = _ops()
    grad_b = None
    if b.op != "constant":
        grad = g * n * ops.log(a)
        grad_b = unbroadcast(ops.where(ops.equal(a, 0.0), ops.where(b >= 0.0, 0.0, grad), grad), b.shape)
    if b.op == "constant" and not hasattr(b.attrs["value"], "free_symbols") and b.ndim == 0:
        if b.attrs["value"] == 0:
            return None, grad_b
        if b.attrs["value"] == 1:
            return unbroadcast(g, a.shape), grad_b
        if b.attrs["value"] == 0.5:  # lowered as sqrt: sqrt's rule, whose sign at -0.0 is torch's
            return unbroadcast(g * 0.5 / n, a.shape), grad_b
        lowered = ops.constant(b.attrs["value"] - 1.0, b.dtype)  # keeps x**2 -> x*x exact
        return unbroadcast(g * b * ops.pow(a, lowered), a.shape), grad_b
    grad_a = ops.where(ops.equal(b, 0.0), 0.0, g * b * ops.pow(a, b - 1.0))
    return unbroadcast(grad_a, a.shape), grad_b


_binary("pow", np.power, _pow_lower, _pow_vjp, floats_only=True)

for _name, _np, _sym in (("less", np.less, "<"), ("less_equal", np.less_equal, "<="),
                         ("greater", np.greater, ">"), ("greater_equal", np.greater_equal, ">="),
                         ("equal", np.equal, "=="), ("not_equal", np.not_equal, "!=")):
    _binary(_name, _np, lambda n, a, b, s=_sym: f"({a} {s} {b})", None,
            result=dtypes.bool_, bool_ok=True)


# --- where and cast ------------------------------------------------------------------------
def _infer_where(inputs, attrs):
    cond, a, b = inputs
    if cond.dtype is not dtypes.bool_:
        raise DTypeError(f"where: the condition must be bool, got {cond.type_str()}")
    if a.dtype != b.dtype:
        raise DTypeError(f"where: both branches must share a dtype, got {a.type_str()} and {b.type_str()}")
    return a.dtype, shapes.broadcast_shapes(cond.shape, a.shape, b.shape)


register(OpDef(
    "where", "elementwise", _infer_where,
    lambda node, a, shape: np.where(*a),
    lambda g, n: (None,
                  unbroadcast(_ops().where(n.inputs[0], g, 0.0), n.inputs[1].shape),
                  unbroadcast(_ops().where(n.inputs[0], 0.0, g), n.inputs[2].shape)),
    lambda n, c, a, b: f"tl.where({c}, {a}, {b})", arity=3))


def _cast_lower(node, a):
    src, dst = node.inputs[0].dtype, node.dtype
    if dst is dtypes.bool_:
        return f"({a} != 0)"
    if dst in (dtypes.float16, dtypes.bfloat16):  # round, then keep computing in float32
        return f"tl.cast(tl.cast({a}, tl.{dst.triton}), tl.float32)"
    if src in (dtypes.float16, dtypes.bfloat16) and dst is dtypes.float32:
        return a
    return f"tl.cast({a}, tl.{dst.triton})"  # tl.cast, not .to: `a` may be a literal (0)


def _cast_reference(node, a, shape):
    (x,) = a
    if node.dtype.is_float:  # float64 checking keeps full precision through casts too
        return dtypes.round_to(x, node.dtype) if x.dtype != np.float64 else x
    if node.dtype is dtypes.bool_:
        return x != 0
    return np.trunc(x).astype(node.dtype.numpy) if x.dtype.kind == "f" else x.astype(node.dtype.numpy)


def _cast_vjp(g, n):
    src = n.inputs[0].dtype
    return (_ops().cast(g, src) if src.is_float and n.dtype.is_float else None,)


register(OpDef("cast", "elementwise", lambda inputs, attrs: (attrs["dtype"], inputs[0].shape),
               _cast_reference, _cast_vjp, _cast_lower, arity=1, flops=_no_flops))  # a conversion, no arithmetic


# --- erf, floor and the integer-rounding primitives (torch.erf, torch.floor, torch.fmod) ----
_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is correctly rounded


_unary("erf", lambda a: _erf(a).astype(a.dtype), lambda n, a: f"tl.math.erf({a})",
       lambda g, n: (g * (2.0 / math.sqrt(math.pi)) * _ops().exp(-(n.inputs[0] * n.inputs[0])),))

# floor is piecewise constant: its gradient is zero, as torch's (a rule returning None).
_unary("floor", np.floor, lambda n, a: f"tl.math.floor({a})", lambda g, n: (None,))


def _fmod_steps(node, a, b) -> list:
    """C's fmod: a - trunc(a/b)*b, which has a's sign. Integers use Triton's % (C's srem).
    For floats the quotient and the product are taken in float64, where both are exact for
    float32 operands whose quotient is below 2**53 (beyond, the remainder is lost): in
    float32, a/b may round up to an integer (1/0.1 gives 10, not 9.99...), and Triton's own
    float % (LLVM's frem, lowered on NVIDIA GPUs as x - trunc(x/y)*y in float32) then returns
    -1.5e-8 instead of fmod's 0.09999999. A zero result keeps a's sign, and fmod(x, +-inf)
    is x for a finite x."""
    if not node.dtype.is_float:
        return [f"{a} % {b}"]
    return [f"tl.cast({a}, tl.float64)", f"tl.cast({b}, tl.float64)", "{0} / {1}",
            "{0} - tl.where({2} < 0, -tl.math.floor(-{2}), tl.math.floor({2})) * {1}",
            "tl.where(tl.abs({1}) == float('inf'), tl.where(tl.abs({0}) < float('inf'), {0}, float('nan')), "
            "tl.where({3} == 0, {0} * 0.0, {3})).to(tl.float32)"]


def _fmod_vjp(g, n):
    """As torch: d/da is 1, d/db is -trunc(a/b) (torch's div(a, b, rounding_mode='trunc'))."""
    a, b = n.inputs
    return (unbroadcast(g, a.shape), unbroadcast(-g * _ops().div(a, b, rounding_mode="trunc"), b.shape))


_binary("fmod", np.fmod, _fmod_steps, _fmod_vjp)


def _remainder_reference(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        mod = np.fmod(a, b)
    return np.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod).astype(mod.dtype)


def _remainder_steps(node, a, b) -> list:
    """fmod (above), plus b where it is nonzero and its sign differs from b's, as torch."""
    steps = _fmod_steps(node, a, b)
    m = "{%d}" % (len(steps) - 1)
    return steps + [f"tl.where({m} != 0, tl.where({b} < 0, tl.where({m} > 0, {m} + {b}, {m}), "
                    f"tl.where({m} < 0, {m} + {b}, {m})), {m})"]  # nested wheres: no & of a scalar load with a block


def _remainder_vjp(g, n):
    """As torch: d/da is 1, d/db is -floor_divide(a, b), the exact floor of the quotient."""
    a, b = n.inputs
    return (unbroadcast(g, a.shape), unbroadcast(-g * _ops().floor_divide(a, b), b.shape))


# A primitive, not fmod plus a correction: that composite's gradient for b would be fmod's,
# -trunc(a/b) rounded in the dtype, and a/b may round up to an integer (1/0.1 gives 10)
# where torch's remainder has -floor_divide(1, 0.1) = -9.
_binary("remainder", _remainder_reference, _remainder_steps, _remainder_vjp)


def _trunc_div_reference(a, b):
    """Integer division rounding toward zero (C's /); a division by zero gives 0 here, and
    is undefined in kernels (torch raises ZeroDivisionError)."""
    with np.errstate(divide="ignore"):
        q = np.floor_divide(a, b)
        exact = np.fmod(a, b) == 0
    return np.where(exact | ((a < 0) == (b < 0)), q, q + 1).astype(a.dtype)


def _infer_integer(inputs, attrs):
    dtype, shape = _infer()(inputs, attrs)
    if dtype.is_float:
        raise DTypeError(f"trunc_div divides integers, got {dtype}")
    return dtype, shape


# Integer division can only be a primitive: no other op divides integers. Floats round a true
# quotient instead (kgen.ops.div with a rounding_mode). Integers pass no gradient.
register(OpDef("trunc_div", "elementwise", _infer_integer, lambda node, a, shape: _trunc_div_reference(*a),
               None, lambda n, a, b: f"({a} // {b})", arity=2))
