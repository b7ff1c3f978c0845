"""Every elementwise VJP at the edges of its domain (0, signed zeros' neighbours, ties,
negative bases, infinities), on the float64 reference interpreter, against torch.autograd.

Finite differences cannot see these points (the functions are not smooth there), so the
second oracle decides: kgen's gradient must be torch's (to rounding), NaN for NaN and inf for inf. A new
differentiable elementwise op without a row in TORCH fails `test_every_op_has_a_row`.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import kgen
from kgen import ops
from kgen.ir.optable import TABLE

EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 90.0, -90.0, np.inf, -np.inf])
POW_BASES = np.array([0.0, 0.5, 1.0, 2.0, -1.0, -2.0, np.inf])
POW_EXPONENTS = np.array([0.0, 1.0, 2.0, 0.5, -1.0, -0.5, 3.0])

UNARY = {
    "neg": (ops.neg, torch.neg), "exp": (ops.exp, torch.exp), "log": (ops.log, torch.log),
    "sqrt": (ops.sqrt, torch.sqrt), "abs": (ops.abs, torch.abs), "tanh": (ops.tanh, torch.tanh),
    "sigmoid": (ops.sigmoid, torch.sigmoid), "relu": (ops.relu, torch.relu),
    "stop_gradient": (ops.stop_gradient, torch.Tensor.detach),
    "cast": (lambda x: ops.cast(x, "float32"), lambda x: x),  # float64 checking: a float cast passes g on
    "erf": (ops.erf, torch.erf), "floor": (ops.floor, torch.floor),
}
BINARY = {
    "add": (ops.add, torch.add), "sub": (ops.sub, torch.sub), "mul": (ops.mul, torch.mul),
    "div": (ops.div, torch.div), "maximum": (ops.maximum, torch.maximum),
    "minimum": (ops.minimum, torch.minimum), "pow": (ops.pow, torch.pow),
    "fmod": (ops.fmod, torch.fmod), "remainder": (ops.remainder, torch.remainder),
}
WHERE = {"where": (lambda c, a, b: ops.where(c, a, b), torch.where)}
TORCH = {**UNARY, **BINARY, **WHERE}
NO_GRADIENT = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "rand",
               "trunc_div"}  # integers only


def test_every_op_has_a_row():
    elementwise = {name for name, op in TABLE.items() if op.kind == "elementwise"}
    assert elementwise - NO_GRADIENT == set(TORCH), "add the new op's torch twin to this file"


def _kgen_grads(build, arrays):
    inputs = [kgen.tensor(f"x{i}", a.shape, "float32") for i, a in enumerate(arrays)]
    weights = kgen.tensor("g", build(*inputs).shape, "float32")  # a cotangent that is not 1
    out = build(*inputs)
    grads = kgen.grad(ops.sum(out * weights), inputs)
    cotangent = np.linspace(0.5, 1.5, out.shape[0] if out.shape else 1).reshape(out.shape)
    values = kgen.reference.run(kgen.Graph([*inputs, weights], [g for g in grads]), [*arrays, cotangent])
    return values, cotangent


def _torch_grads(fn, arrays, cotangent):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if not out.requires_grad:  # stop_gradient
        return [np.zeros_like(a) for a in arrays]
    (out * torch.tensor(cotangent)).sum().backward()
    return [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]


def _assert_same(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=1e-12, atol=0,
                                   err_msg=f"{what}: gradient of input {i}")  # inf and NaN where torch has them


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_edges(name):
    build, fn = UNARY[name]
    got, cot = _kgen_grads(build, [EDGES])
    _assert_same(got, _torch_grads(fn, [EDGES], cot), name)


def _pairs(xs, ys):
    a, b = zip(*itertools.product(xs, ys))
    return np.array(a), np.array(b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_edges(name):
    """Every pair of edge points, ties (x, x) included."""
    build, fn = BINARY[name]
    a, b = _pairs(POW_BASES, POW_EXPONENTS) if name == "pow" else _pairs(EDGES[:-2], EDGES[:-2])
    got, cot = _kgen_grads(build, [a, b])
    _assert_same(got, _torch_grads(fn, [a, b], cot), name)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_pow_with_a_constant_exponent_at_zero():
    """x**c for the exponents that lower specially (0, 1, 1/2, small integers)."""
    for c in (0, 0.0, 1, 0.5, 2, 3, -1, -2):
        got, cot = _kgen_grads(lambda x: x ** c, [EDGES])
        _assert_same(got, _torch_grads(lambda x: x ** c, [EDGES], cot), f"x ** {c}")


def test_where_edges():
    cond = EDGES > 0
    a, b = EDGES[:-2], -EDGES[:-2]
    cond = cond[:-2]
    inputs = [kgen.tensor("a", a.shape, "float32"), kgen.tensor("b", b.shape, "float32")]
    c = kgen.tensor("c", cond.shape, "bool")
    out = ops.where(c, *inputs)
    graph = kgen.Graph([c, *inputs], list(kgen.grad(ops.sum(out * out), inputs)))
    got = kgen.reference.run(graph, [cond, a, b])
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    (torch.where(torch.tensor(cond), ta, tb) ** 2).sum().backward()
    _assert_same(got, [ta.grad.numpy(), tb.grad.numpy()], "where")
