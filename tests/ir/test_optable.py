"""Every op of the op table, run by the reference interpreter, against NumPy and torch.

Each primitive test also checks that the graph it built holds a node of the op it is named
after, and `test_every_table_op_has_a_test` fails when an op is added without a test here.
"""
from __future__ import annotations

import math

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import ops
from ir_helpers import assert_close, ops_in, random_array, run, to_torch

# --- elementwise unary ---------------------------------------------------------------------
# name -> (kgen fn, numpy fn, torch fn, needs positive inputs)
UNARY = {
    "neg": (ops.neg, np.negative, torch.neg, False),
    "exp": (ops.exp, np.exp, torch.exp, False),
    "log": (ops.log, np.log, torch.log, True),
    "sqrt": (ops.sqrt, np.sqrt, torch.sqrt, True),
    "abs": (ops.abs, np.abs, torch.abs, False),
    "tanh": (ops.tanh, np.tanh, torch.tanh, False),
    "sigmoid": (ops.sigmoid, lambda a: 1.0 / (1.0 + np.exp(-a)), torch.sigmoid, False),
    "relu": (ops.relu, lambda a: np.maximum(a, 0.0), torch.relu, False),
    "erf": (ops.erf, np.vectorize(math.erf), torch.erf, False),
    "floor": (ops.floor, np.floor, torch.floor, False),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, rng):
    fn, np_fn, torch_fn, positive = UNARY[name]
    x = kgen.tensor("x", ("N", 5))
    a = random_array(rng, (4, 5), positive=positive)
    got, graph = run(fn(x), {"x": a}, [x])
    assert name in ops_in(graph)
    assert got.dtype == np.float64 and got.shape == (4, 5)
    assert_close(got, np_fn(a.astype(np.float64)), what=f"{name} vs numpy")
    assert_close(got, torch_fn(to_torch(a)), what=f"{name} vs torch")


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_native_float32(name, rng):
    fn, np_fn, torch_fn, positive = UNARY[name]
    x = kgen.tensor("x", (3, 4))
    a = random_array(rng, (3, 4), positive=positive)
    got, _ = run(fn(x), {"x": a}, [x], precision="native")
    assert got.dtype == np.float32
    assert_close(got, torch_fn(torch.tensor(a)), rtol=2e-6, atol=1e-7, what=name)


@pytest.mark.parametrize("name", ["neg", "abs", "relu"])
def test_integer_unary_keeps_int(name, rng):
    fn, np_fn, torch_fn, _ = UNARY[name]
    x = kgen.tensor("x", (6,), "int32")
    a = random_array(rng, (6,), "int32")
    node = fn(x)
    assert node.dtype is kgen.int32
    got, _ = run(node, {"x": a}, [x], precision="native")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, torch_fn(torch.tensor(a)).numpy())


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid"])
def test_float_only_unary_promotes_int_to_float32(name, rng):
    fn, np_fn, _, _ = UNARY[name]
    x = kgen.tensor("x", (5,), "int32")
    a = random_array(rng, (5,), "int32", positive=True)
    node = fn(x)
    assert node.dtype is kgen.float32
    got, _ = run(node, {"x": a}, [x])
    assert_close(got, np_fn(a.astype(np.float64)))


# --- elementwise binary ---------------------------------------------------------------------
BINARY = {
    "add": (ops.add, np.add, torch.add, False),
    "sub": (ops.sub, np.subtract, torch.sub, False),
    "mul": (ops.mul, np.multiply, torch.mul, False),
    "div": (ops.div, np.divide, torch.div, False),
    "maximum": (ops.maximum, np.maximum, torch.maximum, False),
    "minimum": (ops.minimum, np.minimum, torch.minimum, False),
    "pow": (ops.pow, np.power, torch.pow, True),
    "fmod": (ops.fmod, np.fmod, torch.fmod, False),
    "remainder": (ops.remainder, np.remainder, torch.remainder, False),
}
BROADCASTS = [((4, 5), (4, 5)), ((4, 5), (5,)), ((4, 1), (1, 5)), ((), (3,)), ((2, 1, 3), (4, 1))]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name, shapes, rng):
    fn, np_fn, torch_fn, positive_base = BINARY[name]
    sa, sb = shapes
    a_node, b_node = kgen.tensor("a", sa), kgen.tensor("b", sb)
    a = random_array(rng, sa, positive=positive_base)
    b = random_array(rng, sb)
    got, graph = run(fn(a_node, b_node), {"a": a, "b": b}, [a_node, b_node])
    assert name in ops_in(graph)
    assert got.shape == np.broadcast_shapes(sa, sb)
    assert_close(got, np_fn(a.astype(np.float64), b.astype(np.float64)), what="numpy")
    assert_close(got, torch_fn(to_torch(a), to_torch(b)), what="torch")


@pytest.mark.parametrize("name", ["add", "sub", "mul", "maximum", "minimum"])
def test_integer_binary(name, rng):
    fn, np_fn, _, _ = BINARY[name]
    a_node, b_node = kgen.tensor("a", (3, 4), "int32"), kgen.tensor("b", (4,), "int32")
    a, b = random_array(rng, (3, 4), "int32"), random_array(rng, (4,), "int32")
    got, _ = run(fn(a_node, b_node), {"a": a, "b": b}, [a_node, b_node], precision="native")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np_fn(a, b))


def test_python_operators_build_the_same_ops(rng):
    x, w = kgen.tensor("x", (3, 4)), kgen.tensor("w", (4,))
    a, b = random_array(rng, (3, 4), positive=True), random_array(rng, (4,))
    outs = [x + w, x - w, x * w, x / w, -x, abs(w), x ** w, 2.0 ** w, 1.0 - x, 2.0 / x, 3.0 * x, x @ w]
    got, _ = run(outs, {"x": a, "w": b}, [x, w])
    want = [a + b, a - b, a * b, a / b, -a, np.abs(b), a ** b, 2.0 ** b, 1.0 - a, 2.0 / a, 3.0 * a, a @ b]
    for g, w_ in zip(got, want):
        assert_close(g, np.asarray(w_, np.float64), rtol=1e-6)  # the inputs are float32 values


@pytest.mark.parametrize("op", ["add", "mul", "sub", "truediv", "matmul", "lt"])
def test_numpy_array_on_the_left_builds_a_node(op):
    import operator
    x = kgen.tensor("x", (3,))
    arr = np.array([1.0, 2.0, 3.0], np.float32)
    assert isinstance(getattr(operator, op)(x, arr), kgen.Node)  # node on the left works
    assert isinstance(getattr(operator, op)(arr, x), kgen.Node)


def test_pow_scalar_exponents(rng):
    x = kgen.tensor("x", (7,))
    a = random_array(rng, (7,), positive=True)
    outs = [x ** 2, x ** 0.5, x ** -1, x ** 3.5, x ** 0]
    got, _ = run(outs, {"x": a}, [x])
    a64 = a.astype(np.float64)
    for g, e in zip(got, [2, 0.5, -1, 3.5, 0]):
        assert_close(g, torch.pow(to_torch(a64), e), what=f"x ** {e}")


COMPARISONS = {
    "less": (ops.less, np.less, torch.lt),
    "less_equal": (ops.less_equal, np.less_equal, torch.le),
    "greater": (ops.greater, np.greater, torch.gt),
    "greater_equal": (ops.greater_equal, np.greater_equal, torch.ge),
    "equal": (ops.equal, np.equal, torch.eq),
    "not_equal": (ops.not_equal, np.not_equal, torch.ne),
}


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparison(name, dtype, rng):
    fn, np_fn, torch_fn = COMPARISONS[name]
    a_node, b_node = kgen.tensor("a", (6, 5), dtype), kgen.tensor("b", (5,), dtype)
    # small integer values (stored as `dtype`) so that ties happen and == is exercised
    a = random_array(rng, (6, 5), "int32").astype(a_node.dtype.numpy)
    b = random_array(rng, (5,), "int32").astype(b_node.dtype.numpy)
    node = fn(a_node, b_node)
    assert node.dtype is kgen.bool_
    for precision in ("float64", "native"):
        got, graph = run(node, {"a": a, "b": b}, [a_node, b_node], precision=precision)
        assert name in ops_in(graph)
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, np_fn(a, b))
        np.testing.assert_array_equal(got, torch_fn(torch.tensor(a), torch.tensor(b)).numpy())
    want = np_fn(a, b)
    assert want.any() and not want.all()  # the data exercises both outcomes


def test_comparison_with_python_scalar(rng):
    x = kgen.tensor("x", (8,))
    a = random_array(rng, (8,))
    outs = [x < 0, x <= 0.5, x > 1, x >= -1.0]
    got, _ = run(outs, {"x": a}, [x])
    for g, w in zip(got, [a < 0, a <= 0.5, a > 1, a >= -1.0]):
        np.testing.assert_array_equal(g, w)


# --- where and cast -----------------------------------------------------------------------------
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 1), (4,), (3, 4)), ((4,), (3, 1), ())],
                         ids=str)
def test_where(shapes, rng):
    sc, sa, sb = shapes
    c_node, a_node, b_node = kgen.tensor("c", sc, "bool"), kgen.tensor("a", sa), kgen.tensor("b", sb)
    c, a, b = random_array(rng, sc, "bool"), random_array(rng, sa), random_array(rng, sb)
    got, graph = run(ops.where(c_node, a_node, b_node), {"c": c, "a": a, "b": b}, [c_node, a_node, b_node])
    assert "where" in ops_in(graph)
    assert_close(got, np.where(c, a.astype(np.float64), b.astype(np.float64)))
    assert_close(got, torch.where(torch.tensor(c), to_torch(a), to_torch(b)))


def test_where_with_scalar_branch(rng):
    x = kgen.tensor("x", (10,))
    a = random_array(rng, (10,))
    got, _ = run([ops.where(x > 0, x, 0.0), ops.where(x > 0, 1.0, x)], {"x": a}, [x])
    assert_close(got[0], np.where(a > 0, a, 0.0).astype(np.float64))
    assert_close(got[1], np.where(a > 0, 1.0, a).astype(np.float64))


def test_where_rejects_non_bool_condition():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.DTypeError, match="bool"):
        ops.where(x, x, x)


def test_cast_float_to_int_truncates_toward_zero(rng):
    x = kgen.tensor("x", (12,))
    a = (random_array(rng, (12,)) * 3).astype(np.float32)
    node = ops.cast(x, "int32")
    got, graph = run(node, {"x": a}, [x])
    assert "cast" in ops_in(graph) and node.dtype is kgen.int32
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, torch.tensor(a).to(torch.int32).numpy())
    np.testing.assert_array_equal(got, np.trunc(a).astype(np.int32))


def test_cast_to_bool_and_back(rng):
    x = kgen.tensor("x", (4, 3))
    a = random_array(rng, (4, 3)).astype(np.float32)
    a[0, 0] = 0.0  # one zero is the point of this test
    got, _ = run([ops.cast(x, "bool"), ops.cast(ops.cast(x, "bool"), "float32")], {"x": a}, [x])
    np.testing.assert_array_equal(got[0], torch.tensor(a).to(torch.bool).numpy())
    assert_close(got[1], (a != 0).astype(np.float64))


def test_cast_int_to_float(rng):
    i = kgen.tensor("i", (5,), "int32")
    a = random_array(rng, (5,), "int32")
    got, _ = run(ops.cast(i, "float32") * 0.5, {"i": a}, [i])
    assert got.dtype == np.float64
    assert_close(got, a * 0.5)


@pytest.mark.parametrize("target", ["float16", "bfloat16"])
def test_cast_rounds_in_native_precision(target, rng):
    x = kgen.tensor("x", (64,))
    a = rng.standard_normal(64).astype(np.float32)
    got, _ = run(ops.cast(x, target), {"x": a}, [x], precision="native")
    want = torch.tensor(a).to(kgen.ir.dtypes.dtype(target).torch).float().numpy()
    np.testing.assert_array_equal(got.astype(np.float32), want)
    # float64 precision computes every float in float64: the cast does not round
    got64, _ = run(ops.cast(x, target), {"x": a}, [x])
    assert_close(got64, a.astype(np.float64))


def test_cast_to_same_dtype_is_identity():
    x = kgen.tensor("x", (3,))
    assert ops.cast(x, "float32") is x


# --- reductions ---------------------------------------------------------------------------------
REDUCTIONS = {
    "sum": (ops.sum, np.sum, lambda t, dim, keep: torch.sum(t, dim=dim, keepdim=keep)),
    "mean": (ops.mean, np.mean, lambda t, dim, keep: torch.mean(t, dim=dim, keepdim=keep)),
    "max": (ops.max, np.max, lambda t, dim, keep: torch.amax(t, dim=dim, keepdim=keep)),
}
AXES = [0, 1, -1, -3, (0, 2), (-1, 0), (0, 1, 2), None]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction(name, axis, keepdims, rng):
    fn, np_fn, torch_fn = REDUCTIONS[name]
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    node = fn(x, axis, keepdims)
    got, graph = run(node, {"x": a}, [x])
    assert name in ops_in(graph)
    want = np_fn(a.astype(np.float64), axis=axis, keepdims=keepdims)
    assert got.shape == np.shape(want)
    assert_close(got, want, what="numpy")
    dims = tuple(range(3)) if axis is None else axis
    assert_close(got, torch_fn(to_torch(a), dims, keepdims), what="torch")


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_methods_and_symbolic_dims(name, rng):
    x = kgen.tensor("x", ("N", 5))
    a = random_array(rng, (7, 5))
    node = getattr(x, name)(axis=0, keepdims=True)
    assert node.shape == (1, 5)
    got, _ = run([node, getattr(x, name)()], {"x": a}, [x])
    _, np_fn, _ = REDUCTIONS[name]
    assert_close(got[0], np_fn(a.astype(np.float64), axis=0, keepdims=True))
    assert_close(got[1], np_fn(a.astype(np.float64)))


@pytest.mark.parametrize("name", ["sum", "max"])
def test_integer_reduction(name, rng):
    _, np_fn, _ = REDUCTIONS[name]
    x = kgen.tensor("x", (3, 4), "int32")
    a = random_array(rng, (3, 4), "int32")
    got, _ = run(getattr(ops, name)(x, 1), {"x": a}, [x], precision="native")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np_fn(a, axis=1))


def test_mean_of_int_is_float(rng):
    x = kgen.tensor("x", (3, 4), "int32")
    a = random_array(rng, (3, 4), "int32")
    node = ops.mean(x, 1)
    assert node.dtype is kgen.float32
    got, _ = run(node, {"x": a}, [x])
    assert_close(got, a.mean(axis=1))


def test_half_reductions_accumulate_in_float32(rng):
    x = kgen.tensor("x", (4, 300), "float16")
    a = random_array(rng, (4, 300), "float16", positive=True)
    got, _ = run([ops.sum(x, 1), ops.mean(x, 1), ops.max(x, 1)], {"x": a}, [x], precision="native")
    a32 = a.astype(np.float32)
    for g, w in zip(got, [a32.sum(1), a32.mean(1), a32.max(1)]):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g, w.astype(np.float16))


def test_reduce_bool_is_rejected():
    b = kgen.tensor("b", (3,), "bool")
    with pytest.raises(kgen.DTypeError, match="bool"):
        ops.sum(b)


# --- matmul -------------------------------------------------------------------------------------
MATMULS = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
           ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((3, 4), (4,)),
           ((4,), (4,)), ((4,), (2, 4, 5)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("shapes", MATMULS, ids=str)
def test_matmul(shapes, rng):
    sa, sb = shapes
    a_node, b_node = kgen.tensor("a", sa), kgen.tensor("b", sb)
    a, b = random_array(rng, sa), random_array(rng, sb)
    got, graph = run(ops.matmul(a_node, b_node), {"a": a, "b": b}, [a_node, b_node])
    assert "matmul" in ops_in(graph)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == want.shape
    assert_close(got, want, what="numpy")
    assert_close(got, torch.matmul(to_torch(a), to_torch(b)), what="torch")


def test_matmul_symbolic_batch(rng):
    a_node, b_node = kgen.tensor("a", ("N", 4)), kgen.tensor("b", (4, 3))
    node = a_node @ b_node
    assert node.shape == (kgen.ir.shapes.size_symbol("N"), 3)
    a, b = random_array(rng, (6, 4)), random_array(rng, (4, 3))
    got, _ = run(node, {"a": a, "b": b}, [a_node, b_node])
    assert_close(got, torch.matmul(to_torch(a), to_torch(b)))


def test_matmul_errors():
    with pytest.raises(kgen.ShapeError, match=r"inner dims.*4.*5"):
        kgen.tensor("a", (3, 4)) @ kgen.tensor("b", (5, 2))
    with pytest.raises(kgen.ShapeError, match="scalars"):
        ops.matmul(kgen.tensor("a", ()), kgen.tensor("b", (3,)))


def test_matmul_float16_accumulates_in_float32(rng):
    a_node, b_node = kgen.tensor("a", (3, 64), "float16"), kgen.tensor("b", (64, 2), "float16")
    a, b = random_array(rng, (3, 64), "float16"), random_array(rng, (64, 2), "float16")
    got, _ = run(a_node @ b_node, {"a": a, "b": b}, [a_node, b_node], precision="native")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16))


# --- views ----------------------------------------------------------------------------------------
RESHAPES = [(6, 4), (-1,), (4, -1), (2, -1, 2), (24,), (1, 2, 3, 4)]


@pytest.mark.parametrize("target", RESHAPES, ids=str)
def test_reshape(target, rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    got, graph = run(ops.reshape(x, target), {"x": a}, [x])
    assert "reshape" in ops_in(graph)
    assert_close(got, np.reshape(a, target))
    assert_close(got, torch.reshape(to_torch(a), target))


def test_reshape_symbolic_with_minus_one(rng):
    x = kgen.tensor("x", ("N", 6))
    n = kgen.ir.shapes.size_symbol("N")
    node = x.reshape(-1, 2, 3)
    assert node.shape == (n, 2, 3)
    flat = x.reshape(-1)
    assert flat.shape == (6 * n,)
    a = random_array(rng, (5, 6))
    got, _ = run([node, flat, ops.reshape(flat, (-1, 6))], {"x": a}, [x])
    assert_close(got[0], to_torch(a).reshape(-1, 2, 3))
    assert_close(got[1], a.reshape(-1))
    assert_close(got[2], a)


def test_reshape_to_same_shape_is_identity():
    x = kgen.tensor("x", ("N", 3))
    assert ops.reshape(x, ("N", 3)) is x


PERMS = [None, (1, 0, 2), (2, 0, 1), (0, 2, 1), (-1, 0, 1)]


@pytest.mark.parametrize("perm", PERMS, ids=str)
def test_transpose(perm, rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    got, graph = run(ops.transpose(x, perm), {"x": a}, [x])
    assert "transpose" in ops_in(graph)
    assert_close(got, np.transpose(a, perm))
    torch_perm = tuple(reversed(range(3))) if perm is None else perm
    assert_close(got, to_torch(a).permute(torch_perm))


def test_transpose_methods(rng):
    x = kgen.tensor("x", (3, 4))
    a = random_array(rng, (3, 4))
    got, _ = run([x.T, x.transpose(1, 0), ops.swap_last(x)], {"x": a}, [x])
    for g in got:
        assert_close(g, a.T)
    assert ops.transpose(x, (0, 1)) is x


def test_stop_gradient_is_the_identity_without_a_gradient(rng):
    x = kgen.tensor("x", (3,))
    a = random_array(rng, (3,))
    got, graph = run(ops.stop_gradient(x) * x, {"x": a}, [x])
    assert "stop_gradient" in ops_in(graph)
    assert_close(got, a.astype(np.float64) ** 2)
    g, _ = run(kgen.grad(ops.sum(ops.stop_gradient(x) * x), x), {"x": a}, [x])
    assert_close(g, a.astype(np.float64))  # d/dx of c*x with c = x held constant


def test_rand_is_uniform_deterministic_and_shaped():
    seed = kgen.tensor("seed", (), "int32")
    node = ops.rand((40, 50), seed)
    (a,), _ = run([node], {"seed": np.int32(5)}, [seed])
    (b,), _ = run([node], {"seed": np.int32(5)}, [seed])
    (c,), _ = run([node], {"seed": np.int32(6)}, [seed])
    assert a.shape == (40, 50) and 0 <= a.min() and a.max() < 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and abs(a.mean() - 0.5) < 0.02


def test_permute_is_torch_permute(rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    got, _ = run([ops.permute(x, 2, 0, 1), ops.permute(x, (1, 2, 0))], {"x": a}, [x])
    assert_close(got[0], to_torch(a).permute(2, 0, 1))
    assert_close(got[1], to_torch(a).permute(1, 2, 0))
    with pytest.raises(kgen.ShapeError, match="not a permutation"):
        ops.permute(x, 0, 0, 1)


def test_transpose_method_takes_a_tuple(rng):
    x = kgen.tensor("x", (3, 4))
    a = random_array(rng, (3, 4))
    got, _ = run(x.transpose((1, 0)), {"x": a}, [x])
    assert_close(got, a.T)


OUT_OF_RANGE_AXES = {
    "transpose(x2d, (1, 2))": lambda: ops.transpose(kgen.tensor("x", (2, 3)), (1, 2)),
    "transpose(x2d, (2, 3))": lambda: ops.transpose(kgen.tensor("x", (2, 3)), (2, 3)),
    "expand_dims(x2d, 5)": lambda: ops.expand_dims(kgen.tensor("x", (2, 3)), 5),
    "expand_dims(x2d, -4)": lambda: ops.expand_dims(kgen.tensor("x", (2, 3)), -4),
    "iota((3, 4), axis=5)": lambda: ops.iota((3, 4), 5),
    "flatten(x3d, 7)": lambda: ops.flatten(kgen.tensor("x", (2, 3, 4)), 7),
}


@pytest.mark.parametrize("call", sorted(OUT_OF_RANGE_AXES))
def test_out_of_range_axes_are_rejected(call):
    # NumPy and torch raise for each of these; kgen silently picks another axis
    with pytest.raises(kgen.KgenError):
        OUT_OF_RANGE_AXES[call]()


def test_in_range_negative_axes_are_accepted():
    x = kgen.tensor("x", (2, 3))
    assert ops.transpose(x, (-1, -2)).shape == (3, 2)
    assert ops.expand_dims(x, -3).shape == (1, 2, 3)
    assert ops.iota((3, 4), -1).attrs["axis"] == 1


def test_transpose_rejects_non_permutation():
    with pytest.raises(kgen.ShapeError, match="permutation"):
        ops.transpose(kgen.tensor("x", (2, 3, 4)), (0, 0, 1))


BROADCAST_TO = [((3,), (2, 3)), ((2, 1), (2, 4)), ((1, 3), (4, 2, 3)), ((), (2, 2))]


@pytest.mark.parametrize("shapes", BROADCAST_TO, ids=str)
def test_broadcast_to(shapes, rng):
    src, dst = shapes
    x = kgen.tensor("x", src)
    a = random_array(rng, src)
    got, graph = run(ops.broadcast_to(x, dst), {"x": a}, [x])
    assert "broadcast_to" in ops_in(graph)
    assert_close(got, np.broadcast_to(a, dst))
    assert_close(got, torch.broadcast_to(to_torch(a), dst))


def test_broadcast_to_symbolic(rng):
    x, y = kgen.tensor("x", (1, 3)), kgen.tensor("y", ("N", 3))
    node = ops.broadcast_to(x, y.shape) + y
    a, b = random_array(rng, (1, 3)), random_array(rng, (5, 3))
    got, _ = run(node, {"x": a, "y": b}, [x, y])
    assert_close(got, a.astype(np.float64) + b)


def test_broadcast_to_rejects_bad_target():
    with pytest.raises(kgen.ShapeError):
        ops.broadcast_to(kgen.tensor("x", (2, 3)), (4, 3))
    with pytest.raises(kgen.ShapeError):
        ops.broadcast_to(kgen.tensor("x", (2, 3)), (3,))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2], ids=str)
def test_expand_dims(axis, rng):
    x = kgen.tensor("x", (2, 3))
    a = random_array(rng, (2, 3))
    got, graph = run(ops.expand_dims(x, axis), {"x": a}, [x])
    assert "reshape" in ops_in(graph)
    assert_close(got, np.expand_dims(a, axis))
    assert_close(got, to_torch(a).unsqueeze(axis))


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)], ids=str)
def test_squeeze(axis, rng):
    x = kgen.tensor("x", (1, 3, 1))
    a = random_array(rng, (1, 3, 1))
    got, _ = run(ops.squeeze(x, axis), {"x": a}, [x])
    assert_close(got, np.squeeze(a, axis))
    assert_close(got, to_torch(a).squeeze() if axis is None else to_torch(a).squeeze(axis))


def test_squeeze_rejects_non_unit_axis():
    with pytest.raises(kgen.ShapeError, match="not 1"):
        ops.squeeze(kgen.tensor("x", (1, 3)), 1)


@pytest.mark.parametrize("start", [0, 1, 2, -1, -2])
def test_flatten(start, rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    got, _ = run(ops.flatten(x, start), {"x": a}, [x])
    assert_close(got, torch.flatten(to_torch(a), start))


def test_flatten_symbolic(rng):
    x = kgen.tensor("x", ("N", 2, 3))
    node = ops.flatten(x)
    assert node.shape == (kgen.ir.shapes.size_symbol("N"), 6)
    a = random_array(rng, (4, 2, 3))
    got, _ = run(node, {"x": a}, [x])
    assert_close(got, a.reshape(4, 6))


def test_sum_to(rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4)).astype(np.float64)
    outs = [ops.sum_to(x, (3, 4)), ops.sum_to(x, (1, 4)), ops.sum_to(x, (3, 1)), ops.sum_to(x, (2, 3, 4))]
    got, _ = run(outs, {"x": a}, [x])
    assert_close(got[0], a.sum(0))
    assert_close(got[1], a.sum((0, 1))[None, :])
    assert_close(got[2], a.sum((0, 2))[:, None])
    assert_close(got[3], a)


# --- sources --------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_iota(axis):
    node = ops.iota((3, 4), axis)
    got, graph = run(node, {}, [], precision="native")
    assert "iota" in ops_in(graph)
    assert got.dtype == np.int32
    want = torch.arange((3, 4)[axis]).reshape((-1, 1) if axis == 0 else (1, -1)).expand(3, 4)
    np.testing.assert_array_equal(got, want.numpy())


def test_iota_symbolic_and_float(rng):
    x = kgen.tensor("x", ("N", 3))
    a = random_array(rng, (5, 3))
    node = x + ops.iota(("N", 3), 0, "float32")
    got, _ = run(node, {"x": a}, [x])
    assert_close(got, a + np.arange(5)[:, None])


def test_iota_bad_axis():
    with pytest.raises(kgen.KgenError, match="out of range"):
        kgen.Node("iota", (), {"shape": (3,), "axis": 1, "dtype": kgen.int32})


def test_constant(rng):
    arr = random_array(rng, (2, 3))
    outs = [ops.constant(2.5), ops.constant(arr), ops.constant(3, "int32"), ops.constant(True, "bool"),
            ops.constant(np.arange(4, dtype=np.int64))]
    got, graph = run(outs, {}, [], precision="native")
    assert "constant" in ops_in(graph)
    assert [o.dtype for o in outs] == [kgen.float32, kgen.float32, kgen.int32, kgen.bool_, kgen.int64]
    assert got[0].dtype == np.float32 and got[0] == 2.5
    np.testing.assert_array_equal(got[1], arr.astype(np.float32))
    assert got[2].dtype == np.int32 and got[2] == 3
    assert got[3].dtype == np.bool_ and got[3]
    np.testing.assert_array_equal(got[4], np.arange(4))


def test_constant_in_expression(rng):
    x = kgen.tensor("x", (2, 3))
    arr = random_array(rng, (2, 3))
    a = random_array(rng, (2, 3))
    got, _ = run(x * arr + 1.5, {"x": a}, [x])
    assert_close(got, a.astype(np.float64) * arr.astype(np.float64) + 1.5)


def test_size_constant(rng):
    x = kgen.tensor("x", ("N", 3))
    n = kgen.ir.shapes.size_symbol("N")
    node = x.sum() / ops.size_constant(n * 3)
    a = random_array(rng, (7, 3))
    got, _ = run([node, ops.size_constant(n)], {"x": a}, [x])
    assert_close(got[0], a.astype(np.float64).mean())
    assert got[1] == 7


def test_input_passes_through(rng):
    x = kgen.tensor("x", ("N", 2), "float16")
    a = random_array(rng, (3, 2), "float16")
    got, graph = run(x, {"x": a}, [x], precision="native")
    assert ops_in(graph) == {"input"}
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, a)


def test_reference_accepts_torch_tensors_and_sequences(rng):
    x, w = kgen.tensor("x", (2, 3)), kgen.tensor("w", (3,), "bfloat16")
    a, b = random_array(rng, (2, 3)), random_array(rng, (3,), "bfloat16")
    graph = kgen.Graph([x, w], [x * w])
    by_name = kgen.reference.run(graph, {"x": a, "w": b})
    by_order = kgen.reference.run(graph, [torch.tensor(a), torch.tensor(b).to(torch.bfloat16)])
    assert_close(by_order[0], by_name[0], rtol=0, atol=0)


# --- composites -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(axis, rng):
    x = kgen.tensor("x", (4, 5))
    a = random_array(rng, (4, 5))
    got, _ = run([ops.softmax(x, axis), ops.log_softmax(x, axis)], {"x": a}, [x])
    assert_close(got[0], torch.softmax(to_torch(a), axis))
    assert_close(got[1], torch.log_softmax(to_torch(a), axis))
    assert_close(got[0].sum(axis), np.ones(got[0].shape[1 - axis % 2]))


def test_softmax_is_stable_for_large_logits():
    x = kgen.tensor("x", (2, 3))
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]], np.float32)
    got, _ = run([ops.softmax(x), ops.log_softmax(x), ops.logsumexp(x)], {"x": a}, [x], precision="native")
    t = torch.tensor(a)
    assert all(np.isfinite(g).all() for g in got)
    assert_close(got[0], torch.softmax(t, -1), rtol=1e-6, atol=1e-7)
    assert_close(got[1], torch.log_softmax(t, -1), rtol=1e-6, atol=1e-5)
    assert_close(got[2], torch.logsumexp(t, -1), rtol=1e-6)


@pytest.mark.parametrize("axis,keepdims", [(-1, False), (0, False), (1, True), ((0, 2), False), ((0, 2), True),
                                           (None, False)], ids=str)
def test_logsumexp(axis, keepdims, rng):
    x = kgen.tensor("x", (2, 3, 4))
    a = random_array(rng, (2, 3, 4))
    got, _ = run(ops.logsumexp(x, axis, keepdims), {"x": a}, [x])
    dims = tuple(range(3)) if axis is None else axis
    assert_close(got, torch.logsumexp(to_torch(a), dims, keepdims))


def test_logsumexp_keeps_unit_axes_it_does_not_reduce(rng):
    x = kgen.tensor("x", (2, 1, 3))
    a = random_array(rng, (2, 1, 3))
    got, _ = run(ops.logsumexp(x, -1), {"x": a}, [x])
    assert_close(got, torch.logsumexp(to_torch(a), -1))


def test_softmax_with_masked_entries(rng):
    x = kgen.tensor("x", (2, 3))
    a = np.array([[1.0, -np.inf, 2.0], [-np.inf, 0.5, -np.inf]])
    got, _ = run([ops.softmax(x), ops.log_softmax(x), ops.logsumexp(x)], {"x": a}, [x])
    t = torch.tensor(a)
    assert_close(got[0], torch.softmax(t, -1))
    assert_close(got[1], torch.log_softmax(t, -1))
    assert_close(got[2], torch.logsumexp(t, -1))


@pytest.mark.parametrize("row", [[-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0]], ids=["all-minus-inf", "plus-inf"])
def test_logsumexp_of_infinite_rows(row):
    x = kgen.tensor("x", (2, 3))
    a = np.array([row, [1.0, 2.0, 3.0]])
    got, _ = run(ops.logsumexp(x), {"x": a}, [x])
    np.testing.assert_array_equal(got, torch.logsumexp(torch.tensor(a), -1).numpy())


@pytest.mark.parametrize("label_dtype", ["int64", "int32"])
def test_cross_entropy(label_dtype, rng):
    logits, labels = kgen.tensor("logits", ("N", 6)), kgen.tensor("labels", ("N",), label_dtype)
    a = random_array(rng, (8, 6)) * 3
    y = rng.integers(0, 6, size=8).astype(label_dtype)
    node = ops.cross_entropy(logits, labels)
    assert node.shape == ()
    got, _ = run(node, {"logits": a, "labels": y}, [logits, labels])
    assert_close(got, F.cross_entropy(to_torch(a), torch.tensor(y, dtype=torch.int64)))


def test_nll_loss(rng):
    lp, labels = kgen.tensor("lp", (5, 4)), kgen.tensor("labels", (5,), "int64")
    a = random_array(rng, (5, 4))
    y = rng.integers(0, 4, size=5)
    got, _ = run(ops.nll_loss(ops.log_softmax(lp), labels), {"lp": a, "labels": y}, [lp, labels])
    assert_close(got, F.nll_loss(torch.log_softmax(to_torch(a), -1), torch.tensor(y)))
    # nll_loss itself on arbitrary values
    got, _ = run(ops.nll_loss(lp, labels), {"lp": a, "labels": y}, [lp, labels])
    assert_close(got, F.nll_loss(to_torch(a), torch.tensor(y)))


def test_nll_loss_rejects_wrong_ranks():
    with pytest.raises(kgen.ShapeError, match="nll_loss"):
        ops.nll_loss(kgen.tensor("lp", (2, 3, 4)), kgen.tensor("y", (2,), "int64"))


def test_one_hot(rng):
    labels = kgen.tensor("labels", (6,), "int64")
    y = rng.integers(0, 4, size=6)
    got, _ = run(ops.one_hot(labels, 4), {"labels": y}, [labels])
    assert_close(got, F.one_hot(torch.tensor(y), 4).double())
    with pytest.raises(kgen.DTypeError, match="integers"):
        ops.one_hot(kgen.tensor("f", (3,)), 4)


def test_mse(rng):
    p, t = kgen.tensor("p", ("N", 3)), kgen.tensor("t", ("N", 3))
    a, b = random_array(rng, (6, 3)), random_array(rng, (6, 3))
    got, _ = run(ops.mse(p, t), {"p": a, "t": b}, [p, t])
    assert_close(got, F.mse_loss(to_torch(a), to_torch(b)))


def test_binary_cross_entropy(rng):
    p, t = kgen.tensor("p", (4, 5)), kgen.tensor("t", (4, 5))
    a = rng.uniform(0.05, 0.95, size=(4, 5))
    b = rng.uniform(0.0, 1.0, size=(4, 5))
    b[0] = (b[0] > 0.5)  # hard labels too
    got, _ = run(ops.binary_cross_entropy(p, t), {"p": a, "t": b}, [p, t])
    assert_close(got, F.binary_cross_entropy(to_torch(a), to_torch(b)))


def test_binary_cross_entropy_clips_probabilities():
    p, t = kgen.tensor("p", (2,)), kgen.tensor("t", (2,))
    got, _ = run(ops.binary_cross_entropy(p, t), {"p": np.array([0.0, 1.0]), "t": np.array([1.0, 0.0])}, [p, t])
    assert np.isfinite(got)
    assert_close(got, -np.log(1e-7), rtol=1e-6)


# --- lowerings agree with the reference -----------------------------------------------------------
class _TritonArray(np.ndarray):
    """NumPy arrays with Triton's `.to(dtype)`, to evaluate lowering expressions."""

    def to(self, dt):
        if dt == "bfloat16":
            return np.asarray(kgen.ir.dtypes.round_to(np.asarray(self), kgen.bfloat16), np.float64).view(_TritonArray)
        return np.asarray(self).astype(dt).view(_TritonArray)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _nan_aware(np_op):
    """tl.maximum/minimum: with propagate_nan=ALL a NaN operand wins, as np.maximum does."""
    return lambda a, b, propagate_nan=None: np_op(a, b)


def _cast(a, dt):
    return (a if isinstance(a, _TritonArray) else np.asarray(a).view(_TritonArray)).to(dt)


_TL = dict(math=types.SimpleNamespace(erf=np.vectorize(math.erf), floor=np.floor), float64=np.float64,
           cast=_cast, floor=np.floor, exp=np.exp, log=np.log, sqrt=np.sqrt, abs=np.abs, sigmoid=_sigmoid, maximum=_nan_aware(np.maximum),
           minimum=_nan_aware(np.minimum), PropagateNan=types.SimpleNamespace(ALL="all"),
           where=lambda *a: np.asarray(np.where(*a)).view(_TritonArray), exp2=np.exp2, log2=np.log2, float32=np.float32,
           float16=np.float16, bfloat16="bfloat16", int32=np.int32, int64=np.int64, int1=np.bool_)


def _eval_lowering(expr, arrays):
    """The value of a lowering: an expression, or a list of steps naming earlier ones {0}, ..."""
    env = {"tl": types.SimpleNamespace(**_TL)}
    env.update({k: np.asarray(v).view(_TritonArray) for k, v in arrays.items()})
    if isinstance(expr, str):
        return np.asarray(eval(expr, env))
    names = []
    for i, step in enumerate(expr):
        env[f"step{i}"] = np.asarray(eval(step.format(*names), env)).view(_TritonArray)
        names.append(f"step{i}")
    return np.asarray(env[names[-1]])


@pytest.mark.parametrize("name", sorted(set(UNARY) | set(BINARY) | set(COMPARISONS) | {"where"}))
def test_elementwise_lowering_computes_the_reference(name, rng):
    opdef = kgen.ir.TABLE[name]
    assert opdef.kind == "elementwise" and callable(opdef.lower)
    positive = UNARY.get(name, BINARY.get(name, (None, None, None, False)))[3]
    if name == "where":
        nodes = [kgen.tensor("c", (4, 3), "bool"), kgen.tensor("a", (4, 3)), kgen.tensor("b", (4, 3))]
        arrays = {"c": random_array(rng, (4, 3), "bool")}
    else:
        nodes = [kgen.tensor(n, (4, 3)) for n in "ab"[:opdef.arity]]
        arrays = {}
    for n in nodes:
        arrays.setdefault(n.name, random_array(rng, (4, 3), positive=positive).astype(np.float64))
    node = kgen.Node(name, nodes)
    expr = opdef.lower(node, *[n.name for n in nodes])
    got = _eval_lowering(expr, arrays)
    want, _ = run(node, arrays, nodes)
    rtol = 1e-6 if name in ("fmod", "remainder") else 1e-9  # their float64 steps end in a float32 cast
    assert_close(got, want, rtol=rtol, what=expr)


@pytest.mark.parametrize("exponent", [2.0, 3.0, 4.0, 1.0, -1.0, -2.0, 0.5, 1.5, -0.75, 5.0])
def test_pow_lowering_with_constant_exponents(exponent, rng):
    x = kgen.tensor("x", (6,))
    node = x ** exponent
    assert node.op == "pow"
    expr = kgen.ir.TABLE["pow"].lower(node, "x", "b")
    a = random_array(rng, (6,), positive=True).astype(np.float64)
    got = _eval_lowering(expr, {"x": a, "b": np.full(6, exponent)})
    assert_close(got, a ** exponent, rtol=1e-9, what=expr)


@pytest.mark.parametrize("src,dst", [("float32", "float16"), ("float32", "bfloat16"), ("float16", "float32"),
                                     ("float32", "int32"), ("int32", "float32"), ("float32", "bool"),
                                     ("int32", "bool")], ids=str)
def test_cast_lowering_computes_the_reference(src, dst, rng):
    x = kgen.tensor("x", (16,), src)
    node = ops.cast(x, dst)
    a = (random_array(rng, (16,), src) * (3 if src != "int32" else 1)).astype(x.dtype.numpy)
    expr = kgen.ir.TABLE["cast"].lower(node, "x")
    got = _eval_lowering(expr, {"x": a})
    want, _ = run(node, {"x": a}, [x], precision="native")
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=expr)


@pytest.mark.parametrize("value,dtype", [(2.5, "float32"), (-3.0, "float16"), (float("inf"), "float32"),
                                         (float("-inf"), "float32"), (7, "int32"), (True, "bool"), (False, "bool")],
                         ids=str)
def test_constant_lowering(value, dtype):
    node = ops.constant(value, dtype)
    expr = kgen.ir.TABLE["constant"].lower(node, [])
    assert eval(expr) == value
    nan = kgen.ir.TABLE["constant"].lower(ops.constant(float("nan")), [])
    assert np.isnan(eval(nan))


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_lowering_combines_to_the_reference(name, rng):
    spec = kgen.ir.TABLE[name].lower
    assert isinstance(spec, kgen.ir.Reduction)
    for dtype in ("float32",) if spec.scale_by_count else ("float32", "int32"):  # ops.mean makes ints float
        x = kgen.tensor("x", (9,), dtype)
        a = random_array(rng, (9,), dtype)
        acc = eval(spec.init[dtype])
        for v in a:
            acc = _eval_lowering(spec.combine.format(acc="acc", x="x"), {"acc": acc, "x": v})
        if spec.scale_by_count:
            acc = acc / a.size
        want, _ = run(kgen.Node(name, (x,), {"axes": (0,), "keepdims": False}), {"x": a}, [x], precision="native")
        assert_close(acc, want, rtol=1e-6, what=f"{name} {dtype}")


VIEW_CASES = [
    ("reshape", lambda x: ops.reshape(x, (4, 6)), (2, 3, 4)),
    ("reshape", lambda x: ops.reshape(x, (3, 2, 2, 2)), (4, 6)),
    ("transpose", lambda x: ops.transpose(x, (2, 0, 1)), (2, 3, 4)),
    ("transpose", lambda x: ops.transpose(x), (3, 5)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)), (3, 1)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (3, 4)), (4,)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 1, 4)), (1, 1, 4)),
    ("slice", lambda x: x[1:, ::2, 2], (3, 5, 4)),
    ("slice", lambda x: x[2:7:3], (9,)),
    ("pad", lambda x: ops.pad(x, ((1, 2), (0, 3))), (3, 4)),
    ("pad", lambda x: ops.pad_strided(x, (2, 0), (3, 2), (9, 5)), (3, 3)),
]


@pytest.mark.parametrize("case", range(len(VIEW_CASES)))
def test_view_coordinate_maps_agree_with_the_reference(case, rng):
    import sympy
    name, build, shape = VIEW_CASES[case]
    x = kgen.tensor("x", shape)
    node = build(x)
    view = node.inputs[0] if node.op == "reshape" and name != "reshape" else node  # x[..., 2] drops an axis
    assert view.op == name
    a = random_array(rng, shape)
    out, _ = run(view, {"x": a}, [x])
    for idx in np.ndindex(*out.shape):
        src = kgen.ir.TABLE[name].lower(view, [sympy.Integer(i) for i in idx])
        if isinstance(src, kgen.ir.optable.Guarded):  # a pad: zero where a condition fails
            held = all(low <= int(e) < low + step * (count - 1) + 1 and (int(e) - low) % step == 0
                       for e, low, step, count in src.conditions)
            assert out[idx] == (a[tuple(int(c) for c in src.coords)] if held else 0), (idx, src)
        else:
            assert out[idx] == a[tuple(int(c) for c in src)], (idx, src)


def test_matmul_lowering_names_its_template():
    assert kgen.ir.TABLE["matmul"].lower == "matmul"


# --- coverage -------------------------------------------------------------------------------------
TESTED_PRIMITIVES = (set(UNARY) | set(BINARY) | set(COMPARISONS) | set(REDUCTIONS)
                     | {"where", "cast", "matmul", "reshape", "transpose", "broadcast_to", "iota", "constant",
                        "input", "stop_gradient", "rand", "slice", "pad"})
TESTED_FUNCTIONS = {"size_constant", "swap_last", "permute", "dropout", "expand_dims", "squeeze", "flatten", "sum_to", "one_hot",
                    "softmax", "log_softmax", "logsumexp", "cross_entropy", "nll_loss", "mse",
                    "binary_cross_entropy"}
# activations and rounding (kgen/ops.py; trunc_div is integer division, which ops.div builds):
# against torch in tests/ir/test_activations.py and in kernels in tests/kernels/test_activation_kernels.py
TESTED_PRIMITIVES |= {"trunc_div"}
TESTED_FUNCTIONS |= {"trunc", "floor_divide", "clamp", "clip", "gelu", "silu", "leaky_relu", "elu", "softplus",
                     "hardtanh", "relu6"}
# slicing and joining (kgen/ops.py): against NumPy and in kernels in tests/kernels/test_slicing.py
TESTED_FUNCTIONS |= {"getitem", "slice_strided", "pad_strided", "pad", "concatenate", "stack", "split"}
# normalisation (kgen/ops.py composites): against torch, by finite differences, in kernels and
# in pinned kernel counts in tests/ir/test_norms.py
TESTED_FUNCTIONS |= {"layer_norm", "batch_norm"}


# convolution and pooling (kgen/ir/ops_conv.py): their references are checked against torch in
# tests/kernels/test_conv_pool.py, their VJPs in tests/ir/test_vjp.py
# The gradient ops are built by VJP rules only (kgen.ir.ops_conv), no kgen.ops functions.
GRADIENT_PRIMITIVES = {"conv2d_input_grad", "conv2d_weight_grad", "max_pool2d_grad", "max_pool2d_gather",
                       "avg_pool2d_grad"}
TESTED_PRIMITIVES |= {"conv2d", "max_pool2d", "avg_pool2d"} | GRADIENT_PRIMITIVES
# max_pool2d(return_indices=True)'s second result, and the pools kgen.ops composes from the
# 2-D ones (tests/kernels/test_pool_options.py)
INDEX_PRIMITIVES = {"max_pool2d_indices"}
TESTED_PRIMITIVES |= INDEX_PRIMITIVES
TESTED_FUNCTIONS |= {"max_pool1d", "avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool1d"}
# embedding (kgen/ir/ops_gather.py): tests/ir/test_embedding.py and tests/kernels/test_embedding_kernels.py;
# the loss forms (mse_loss among them): tests/nn/test_loss_forms.py
GRADIENT_PRIMITIVES |= {"embedding_grad"}
TESTED_PRIMITIVES |= {"embedding", "embedding_grad"}
TESTED_FUNCTIONS |= {"mse_loss"}
# conv1d, a conv2d one row high: against torch in tests/kernels/test_conv_groups.py
TESTED_FUNCTIONS |= {"conv1d"}
# scan (kgen/ir/ops_loop.py): against NumPy and torch, gradients, kernels in tests/ir/test_scan.py
TESTED_PRIMITIVES |= {"scan"}
TESTED_FUNCTIONS |= {"scan"}
# the persistent scan template op, made from a scan by lowering (fusion rule S1), no kgen.ops
# function: tests/kernels/test_scan_kernel.py and tests/kernels/test_scan_cells.py
LOWERED_PRIMITIVES = {"persistent_scan"}
TESTED_PRIMITIVES |= LOWERED_PRIMITIVES


def test_every_table_op_has_a_test():
    assert set(kgen.ir.TABLE) == TESTED_PRIMITIVES


def test_every_ops_function_has_a_test():
    # the slice primitive is ops.slice_strided (x[...] builds it), not a shadow of Python's slice
    # integer division (trunc_div) is ops.div(a, b, rounding_mode=...) on integers
    assert set(ops.__all__) == (TESTED_PRIMITIVES - {"input", "slice", "trunc_div"} - GRADIENT_PRIMITIVES
                                - INDEX_PRIMITIVES - LOWERED_PRIMITIVES) | TESTED_FUNCTIONS


def test_table_entries_are_well_formed():
    for name, opdef in kgen.ir.TABLE.items():
        assert opdef.name == name
        assert opdef.kind in kgen.ir.optable.KINDS
        if opdef.kind == "reduction":
            assert isinstance(opdef.lower, kgen.ir.Reduction)
        if opdef.kind == "source":
            assert opdef.vjp is None and opdef.arity == 0
