"""Every elementwise op's generated kernel at the edges of its domain, against torch.

Zeros of both signs, tiny and huge values, negative bases of pow with integer and
fractional exponents, infinities and NaN, every pair for a binary op: the kernel (Triton's
interpreter here) and the reference interpreter must give torch's float32 value, NaN for
NaN, the same infinity, and a zero of the same sign. The fuzzer keeps its programs inside
the domains where values stay finite; this is the other half. A new elementwise op without
a row here fails `test_every_elementwise_op_has_a_row`.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

import kgen
from kgen import ops
from kgen.ir.optable import TABLE

EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 3.0, -3.0,
                  90.0, -90.0, np.inf, -np.inf, np.nan], np.float32)

UNARY = {
    "neg": (ops.neg, torch.neg), "exp": (ops.exp, torch.exp), "log": (ops.log, torch.log),
    "sqrt": (ops.sqrt, torch.sqrt), "abs": (ops.abs, torch.abs), "tanh": (ops.tanh, torch.tanh),
    "sigmoid": (ops.sigmoid, torch.sigmoid), "relu": (ops.relu, torch.relu),
    "stop_gradient": (ops.stop_gradient, lambda x: x),
    "cast": (lambda x: ops.cast(x, "float16"), lambda x: x.half().float()),
    "erf": (ops.erf, torch.erf), "floor": (ops.floor, torch.floor),
}
BINARY = {
    "add": (ops.add, torch.add), "sub": (ops.sub, torch.sub), "mul": (ops.mul, torch.mul),
    "div": (ops.div, torch.div), "maximum": (ops.maximum, torch.maximum),
    "minimum": (ops.minimum, torch.minimum), "pow": (ops.pow, torch.pow),
    "equal": (ops.equal, torch.eq), "not_equal": (ops.not_equal, torch.ne), "less": (ops.less, torch.lt),
    "less_equal": (ops.less_equal, torch.le), "greater": (ops.greater, torch.gt),
    "greater_equal": (ops.greater_equal, torch.ge),
    "fmod": (ops.fmod, torch.fmod), "remainder": (ops.remainder, torch.remainder),
}
WHERE = {"where": (lambda c, a, b: ops.where(c, a, b), torch.where)}
INTEGER = {"trunc_div": (lambda a, b: ops.div(a, b, rounding_mode="trunc"),
                         lambda a, b: torch.div(a, b, rounding_mode="trunc"))}  # integers only
# fmod's float64 quotient is exact below 2**53 (kgen/ir/ops_elementwise.py); 90 / 1e-30 is not
HUGE_QUOTIENT = {"fmod", "remainder"}
ZERO_SIGN_FREE = {"relu"}  # relu(-0.0): torch -0.0, the kernel (tl.maximum) 0.0
NOT_HERE = {"rand"}  # random values: tests/kernels/test_random.py checks them bit for bit


def test_every_elementwise_op_has_a_row():
    elementwise = {name for name, op in TABLE.items() if op.kind == "elementwise"}
    assert elementwise - NOT_HERE == set(UNARY) | set(BINARY) | set(WHERE) | set(INTEGER), \
        "add the new op's torch twin here"


def _below_2_53(a, b, name):
    """The pairs whose quotient an op can take: all, or |a / b| < 2**53 for HUGE_QUOTIENT."""
    if name not in HUGE_QUOTIENT:
        return np.ones(a.shape, bool)
    with np.errstate(all="ignore"):
        return ~(np.abs(a.astype(np.float64) / b.astype(np.float64)) >= 2.0 ** 53) | ~np.isfinite(a) | ~np.isfinite(b)


def _same(got, want, what, unsigned_zero=False):
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype == np.bool_:
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    got, want = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(got) & np.isnan(want)
    close = np.isclose(got, want, rtol=2e-6, atol=1e-37) | both_nan  # torch flushes some subnormals
    zero_sign = (want != 0) | (np.signbit(got) == np.signbit(want)) | unsigned_zero
    bad = ~(close & zero_sign)
    assert not bad.any(), f"{what}: {bad.sum()} differ, e.g. got {got[bad][:6]} want {want[bad][:6]}"


def _check(build, fn, arrays, what):
    inputs = [kgen.tensor(f"x{i}", a.shape, "bool" if a.dtype == np.bool_ else "float32")
              for i, a in enumerate(arrays)]
    out = build(*inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (got,) = kgen.function(inputs, [out])(*arrays)
        (ref,) = kgen.reference.run(kgen.Graph(inputs, [out]), arrays, "native")
    want = fn(*[torch.from_numpy(a) for a in arrays]).numpy()
    _same(got.numpy(), want, f"{what}: kernel", what in ZERO_SIGN_FREE)
    _same(ref, want, f"{what}: reference", what in ZERO_SIGN_FREE)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_kernel_at_the_edges(name):
    _check(*UNARY[name], [EDGES], name)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_kernel_at_the_edges(name):
    a, b = (np.array(v, np.float32) for v in zip(*itertools.product(EDGES, EDGES)))
    keep = _below_2_53(a, b, name)
    _check(*BINARY[name], [a[keep], b[keep]], name)


def test_where_kernel_at_the_edges():
    a, b = (np.array(v, np.float32) for v in zip(*itertools.product(EDGES, EDGES)))
    c = np.arange(a.size) % 3 == 0
    _check(*WHERE["where"], [c, a, b], "where")


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_kernel_with_a_scalar_tensor_operand(name):
    """A 0-d input is one load for every lane (a uniform value): the fuzzer found pow's
    conditions failing on it in the interpreter (a bool `|` of one value and a block)."""
    build, fn = BINARY[name]
    for swap in (False, True):
        x, s = kgen.tensor("x", EDGES.shape), kgen.tensor("s", ())
        operands = [s, x] if swap else [x, s]
        f = kgen.function([x, s], [build(*operands)])
        for value in (-2.0, -0.0, 0.5, 3.0, np.nan):
            scalar = np.array(value, np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                (got,) = f(EDGES, scalar)
            args = [torch.from_numpy(scalar), torch.from_numpy(EDGES)] if swap else \
                [torch.from_numpy(EDGES), torch.from_numpy(scalar)]
            keep = _below_2_53(*(a.numpy() for a in torch.broadcast_tensors(*args)), name)
            _same(got.numpy()[keep], fn(*args).numpy()[keep], f"{name} with {value} ({'first' if swap else 'second'})")


INT_EDGES = np.array([0, 1, -1, 2, -2, 3, -3, 7, -7, 2**31 - 1, -2**31 + 1], np.int64)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_division_kernel_at_the_edges(dtype):
    """Every pair but a zero divisor (undefined, as torch raises), in kernel and reference."""
    a, b = (np.array(v, dtype) for v in zip(*itertools.product(INT_EDGES, INT_EDGES)))
    a, b = a[b != 0], b[b != 0]
    x, y = kgen.tensor("a", a.shape, dtype), kgen.tensor("b", b.shape, dtype)
    for name, (build, fn) in {**INTEGER, "floor": (lambda a, b: ops.floor_divide(a, b),
                                                   lambda a, b: torch.div(a, b, rounding_mode="floor")),
                              "fmod": (ops.fmod, torch.fmod), "remainder": (ops.remainder, torch.remainder)}.items():
        out = build(x, y)
        (got,) = kgen.function([x, y], [out])(a, b)
        (ref,) = kgen.reference.run(kgen.Graph([x, y], [out]), [a, b])
        want = fn(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        assert got.numpy().dtype == ref.dtype == want.dtype == np.dtype(dtype), name
        np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{name}: kernel")
        np.testing.assert_array_equal(ref, want, err_msg=f"{name}: reference")
