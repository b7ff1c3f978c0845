"""Generated kernels against the reference interpreter on random inputs (Triton's
interpreter on CPU tensors), and kgen.check itself."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kgen
import kgen.compiler
from kgen import ops
from kgen.check import CheckReport, KernelCheck
from kgen.tolerance import output_error
from conftest import assert_matches_reference, random_array, run_compiled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # masked-off lanes under the interpreter

SIZES = [1, 7, 13, 1000]
F16 = dict(rtol=1e-2, atol=1e-2)


def graph(inputs, outputs):
    return kgen.Graph(inputs, outputs)


# --- elementwise ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", SIZES)
def test_unary(rng, n):
    x = kgen.tensor("x", (n,))
    g = graph([x], [ops.exp(x), -x, ops.abs(x), ops.tanh(x), ops.sigmoid(x), ops.relu(x)])
    assert_matches_reference(g, {"x": random_array(rng, (n,))})


@pytest.mark.parametrize("n", SIZES)
def test_unary_positive_domain(rng, n):
    x = kgen.tensor("x", (n,))
    g = graph([x], [ops.log(x), ops.sqrt(x)])
    assert_matches_reference(g, {"x": random_array(rng, (n,), positive=True)})


@pytest.mark.parametrize("n", SIZES)
def test_binary(rng, n):
    x, y = kgen.tensor("x", (n,)), kgen.tensor("y", (n,))
    g = graph([x, y], [x + y, x - y, x * y, x / y, ops.maximum(x, y), ops.minimum(x, y),
                       2.0 - x, 3.0 / y, x * 0.5 + 1.0])
    assert_matches_reference(g, {"x": random_array(rng, (n,)), "y": random_array(rng, (n,))})


@pytest.mark.parametrize("n", SIZES)
def test_where(rng, n):
    x, y = kgen.tensor("x", (n,)), kgen.tensor("y", (n,))
    c = kgen.tensor("c", (n,), "bool")
    g = graph([x, y, c], [ops.where(x > y, x, y), ops.where(c, x * 2.0, -y), ops.where(c, x, 0.0)])
    assert_matches_reference(g, {"x": random_array(rng, (n,)), "y": random_array(rng, (n,)),
                                 "c": random_array(rng, (n,), "bool")})


@pytest.mark.parametrize("n", SIZES)
def test_pow(rng, n):
    x, y = kgen.tensor("x", (n,)), kgen.tensor("y", (n,))
    g = graph([x, y], [x ** 2, x ** 0.5, x ** -1, x ** y, x ** 3.0, x ** 1.5, 2.0 ** y])
    assert_matches_reference(g, {"x": random_array(rng, (n,), positive=True), "y": random_array(rng, (n,))})


def test_pow_small_integer_exponents_of_negative_bases(rng):
    x = kgen.tensor("x", (13,))
    g = graph([x], [x ** 2, x ** 3, x ** -1, x ** -2, x ** 4.0])
    assert_matches_reference(g, {"x": random_array(rng, (13,))})


def test_pow_zero_exponent_of_negative_base():
    x = kgen.tensor("x", (4,))
    g = graph([x], [x ** 0.0])
    got = run_compiled(g, {"x": np.array([-2.0, -0.5, 0.5, 2.0], np.float32)})[0]
    np.testing.assert_array_equal(got, np.ones(4, np.float32))


def test_grad_of_pow_one_at_negative_inputs():
    x = kgen.tensor("x", (4,))
    g = graph([x], [kgen.grad(ops.sum(x ** 1.0), x)])
    got = run_compiled(g, {"x": np.array([-2.0, -0.5, 0.5, 2.0], np.float32)})[0]
    np.testing.assert_array_equal(got, np.ones(4, np.float32))


@pytest.mark.parametrize("n", SIZES)
def test_comparisons_produce_bools(rng, n):
    x, y = kgen.tensor("x", (n,)), kgen.tensor("y", (n,))
    outs = [x < y, x <= y, x > y, x >= y, ops.equal(x, y), ops.not_equal(x, y), x > 0.0]
    g = graph([x, y], outs)
    xv = random_array(rng, (n,))
    yv = np.where(rng.random(n) < 0.3, xv, random_array(rng, (n,)))  # some ties
    assert_matches_reference(g, {"x": xv, "y": yv})
    got = run_compiled(g, {"x": xv, "y": yv})
    assert all(o.dtype == np.bool_ for o in got)
    np.testing.assert_array_equal(got[0], xv < yv)
    np.testing.assert_array_equal(got[4], xv == yv)


@pytest.mark.parametrize("n", SIZES)
def test_int32_arithmetic(rng, n):
    i, j = kgen.tensor("i", (n,), "int32"), kgen.tensor("j", (n,), "int32")
    outs = [i + j, i - j, i * j, ops.maximum(i, j), ops.minimum(i, j), -i, ops.abs(i), ops.relu(i),
            i * 3 + 1, ops.where(i > j, i, j), ops.cast(i, "float32") / 2.0]
    g = graph([i, j], outs)
    iv, jv = random_array(rng, (n,), "int32"), random_array(rng, (n,), "int32")
    assert_matches_reference(g, {"i": iv, "j": jv})
    got = run_compiled(g, {"i": iv, "j": jv})
    assert got[0].dtype == np.int32
    np.testing.assert_array_equal(got[2], iv * jv)


@pytest.mark.parametrize("n", SIZES)
def test_cast_to_int_and_bool(rng, n):
    x = kgen.tensor("x", (n,))
    i = kgen.tensor("i", (n,), "int32")
    g = graph([x, i], [ops.cast(x * 3.0, "int32"), ops.cast(x, "bool"), ops.cast(i, "bool"),
                       ops.cast(ops.cast(i, "bool"), "float32"), ops.cast(i, "int64")])
    assert_matches_reference(g, {"x": random_array(rng, (n,)), "i": random_array(rng, (n,), "int32")})


@pytest.mark.parametrize("n", SIZES)
def test_cast_round_trip_through_float16_rounds(rng, n):
    x = kgen.tensor("x", (n,))
    g = graph([x], [ops.cast(ops.cast(x, "float16"), "float32")])
    xv = random_array(rng, (n,))
    (got,) = run_compiled(g, {"x": xv})
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, xv.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got, kgen.reference.run(g, {"x": xv}, "native")[0])
    report = kgen.check(g, {"x": xv})
    assert len(report.rows) == 1 and report.rows[0].error < 1e-3  # within float16's rounding


def test_check_accepts_float16_round_trip(rng):
    x = kgen.tensor("x", (13,))
    g = graph([x], [ops.cast(ops.cast(x, "float16"), "float32")])
    kgen.check(g, {"x": random_array(rng, (13,))}, strict=True)


def test_check_accepts_mixed_precision_matmul(rng):
    a, b = kgen.tensor("a", (8, 16)), kgen.tensor("b", (16, 4))
    out = ops.cast(ops.cast(a, "float16") @ ops.cast(b, "float16"), "float32")
    kgen.check(graph([a, b], [out]), {"a": random_array(rng, (8, 16)), "b": random_array(rng, (16, 4))},
               strict=True)


def test_pointwise_over_several_programs(rng):
    x = kgen.tensor("x", (70000,))  # more than one XBLOCK under the interpreter
    assert_matches_reference(graph([x], [ops.exp(x) - x]), {"x": random_array(rng, (70000,))})


def test_float16_elementwise(rng):
    h = kgen.tensor("h", (7, 13), "float16")
    v = kgen.tensor("v", (13,), "float16")
    g = graph([h, v], [ops.exp(h) * v + 1.0, ops.relu(h - v), h * 2.0])
    assert_matches_reference(g, {"h": random_array(rng, (7, 13), "float16"), "v": random_array(rng, (13,), "float16")},
                             **F16)


# --- broadcasting --------------------------------------------------------------------------
def test_broadcast_both_directions(rng):
    a, b, c = kgen.tensor("a", (7, 1)), kgen.tensor("b", (1, 13)), kgen.tensor("c", (13,))
    g = graph([a, b, c], [a + b, b - a, a * c, c / a, ops.where(a > b, a, c)])
    assert_matches_reference(g, {"a": random_array(rng, (7, 1)), "b": random_array(rng, (1, 13)),
                                 "c": random_array(rng, (13,))})


def test_broadcast_scalar_and_3d(rng):
    x = kgen.tensor("x", (3, 7, 13))
    s = kgen.tensor("s", ())
    a, c = kgen.tensor("a", (7, 1)), kgen.tensor("c", (13,))
    g = graph([x, s, a, c], [x * s + c, ops.broadcast_to(a, (3, 7, 13)) - x, s * 2.0, ops.broadcast_to(s, (4,))])
    assert_matches_reference(g, {"x": random_array(rng, (3, 7, 13)), "s": random_array(rng, ()),
                                 "a": random_array(rng, (7, 1)), "c": random_array(rng, (13,))})


def test_symbolic_broadcast(rng):
    x = kgen.tensor("x", ("N", 3))
    w, b = kgen.tensor("w", (3,)), kgen.tensor("b", ("N", 1))
    g = graph([x, w, b], [ops.relu(x * w + b)])
    for n in (1, 7):
        assert_matches_reference(g, {"x": random_array(rng, (n, 3)), "w": random_array(rng, (3,)),
                                     "b": random_array(rng, (n, 1))})


def test_uniform_outputs(rng):
    s = kgen.tensor("s", ())
    i = kgen.tensor("i", (), "int32")
    x = kgen.tensor("x", (7,))
    outs = [ops.broadcast_to(s, (7,)), ops.broadcast_to(i * 2, (7,)), ops.broadcast_to(ops.constant(True), (7,)),
            ops.broadcast_to(s > 0.0, (7,)), ops.broadcast_to(ops.constant(0.0), (2, 3)), x > s]
    g = graph([s, i, x], outs)
    for sv in (1.5, -1.5):
        assert_matches_reference(g, {"s": np.float32(sv), "i": np.int32(3), "x": random_array(rng, (7,))})


def test_views_of_inputs_as_outputs(rng):
    x = kgen.tensor("x", (4, 6))
    g = graph([x], [x.T, x.reshape(3, 8), ops.broadcast_to(x.reshape(4, 1, 6), (4, 2, 6)), x])
    xv = random_array(rng, (4, 6))
    assert_matches_reference(g, {"x": xv})
    got = run_compiled(g, {"x": xv})
    np.testing.assert_array_equal(got[0], xv.T)
    np.testing.assert_array_equal(got[3], xv)


def test_iota_and_one_hot(rng):
    w = kgen.tensor("w", (4,))
    lab = kgen.tensor("lab", (6,), "int32")
    g = graph([w, lab], [ops.iota((3, 5), 1), ops.one_hot(lab, 4), ops.iota((3, 5), 0, "float32") * w.sum()])
    assert_matches_reference(g, {"w": random_array(rng, (4,)), "lab": rng.integers(0, 4, size=6).astype(np.int32)})


# --- reductions ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 13), (1, 1000), (1000, 7), (13, 1), (1, 1)])
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduce_2d(rng, op, shape):
    x = kgen.tensor("x", shape)
    f = getattr(ops, op)
    g = graph([x], [f(x, 0), f(x, 1), f(x), f(x, 1, keepdims=True), f(x, 0, keepdims=True), f(x, None, keepdims=True)])
    assert_matches_reference(g, {"x": random_array(rng, shape)})


def test_reduce_3d_axes(rng):
    x = kgen.tensor("x", (3, 7, 13))
    g = graph([x], [ops.sum(x, 1), ops.max(x, 1, keepdims=True), ops.mean(x, (0, 2)),
                    ops.sum(x, (0, 2), keepdims=True), ops.max(x, (1, 2)), ops.mean(x, -1)])
    assert_matches_reference(g, {"x": random_array(rng, (3, 7, 13))})


def test_reduce_max_of_negative_values(rng):
    x = kgen.tensor("x", (5, 9))
    g = graph([x], [ops.max(x, 1), ops.max(x)])
    assert_matches_reference(g, {"x": -random_array(rng, (5, 9), positive=True) - 100.0})


def test_reduce_long_rows_loop(rng):
    x = kgen.tensor("x", (2, 5000))  # more than one RBLOCK per row
    assert_matches_reference(graph([x], [ops.sum(x, 1), ops.max(x, 1), ops.mean(x, 0)]),
                             {"x": random_array(rng, (2, 5000))}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 9])
def test_reduce_symbolic_size(rng, n):
    x = kgen.tensor("x", ("N", 5))
    g = graph([x], [ops.sum(x, 0), ops.mean(x, 1), ops.max(x), ops.mean(x), ops.sum(x * x, 1, keepdims=True)])
    assert_matches_reference(g, {"x": random_array(rng, (n, 5))})


def test_symbolic_program_runs_at_several_sizes(rng):
    x = kgen.tensor("x", ("N", 5))
    g = graph([x], [ops.sum(ops.exp(x), 1), ops.relu(x) * 2.0])
    program = kgen.compile(g)
    for n in (3, 1, 8, 3):
        xv = random_array(rng, (n, 5))
        got = program.run({x: program.to_tensor(xv, x)})
        np.testing.assert_allclose(got[0].numpy(), np.exp(xv).sum(1), rtol=1e-5)
        np.testing.assert_allclose(got[1].numpy(), np.maximum(xv, 0) * 2.0)


def test_reduce_int32(rng):
    i = kgen.tensor("i", (7, 13), "int32")
    assert_matches_reference(graph([i], [ops.sum(i, 1), ops.max(i, 0), ops.max(i)]),
                             {"i": random_array(rng, (7, 13), "int32")})


def test_reduce_float16(rng):
    h = kgen.tensor("h", (7, 13), "float16")
    assert_matches_reference(graph([h], [ops.sum(h, 1), ops.max(h, 0), ops.mean(h)]),
                             {"h": random_array(rng, (7, 13), "float16")}, **F16)


def test_reduce_views_and_broadcasts(rng):
    x = kgen.tensor("x", (3, 7, 13))
    r = kgen.tensor("r", (1, 13))
    g = graph([x, r], [ops.sum(x.transpose(2, 0, 1), 1), ops.sum(ops.exp(x).reshape(21, 13), 0),
                       ops.sum(ops.broadcast_to(r, (7, 13)), 0), ops.max(ops.broadcast_to(r, (7, 13)) * 2.0, 1)])
    assert_matches_reference(g, {"x": random_array(rng, (3, 7, 13)), "r": random_array(rng, (1, 13))})


def test_reduce_max_int64_below_int32_range():
    i = kgen.tensor("i", (7,), "int64")
    values = np.array([-3_000_000_000 - k for k in range(7)], np.int64)
    (got,) = run_compiled(graph([i], [ops.max(i)]), {"i": values})
    assert got == values.max()




def test_nan_propagates_through_max():
    x = kgen.tensor("x", (5,))
    g = graph([x], [ops.max(x), ops.relu(x), ops.maximum(x, ops.constant(0.5))])
    xv = np.array([1.0, np.nan, 2.0, -1.0, 3.0], np.float32)
    for got, want in zip(run_compiled(g, {"x": xv}), kgen.reference.run(g, {"x": xv})):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_nan_propagates_through_sum_and_exp():
    x = kgen.tensor("x", (5,))
    xv = np.array([1.0, np.nan, 2.0, -1.0, 3.0], np.float32)
    got = run_compiled(graph([x], [ops.sum(x), ops.exp(x)]), {"x": xv})
    assert np.isnan(got[0]) and np.isnan(got[1][1]) and not np.isnan(got[1][0])


# --- matmul --------------------------------------------------------------------------------
@pytest.mark.parametrize("m,k,n", [(1, 7, 13), (13, 1000, 7), (7, 1, 13), (1, 1, 1), (33, 17, 5), (300, 3, 20)])
def test_matmul_2d(rng, m, k, n):
    a, b = kgen.tensor("a", (m, k)), kgen.tensor("b", (k, n))
    assert_matches_reference(graph([a, b], [a @ b]), {"a": random_array(rng, (m, k)), "b": random_array(rng, (k, n))},
                             rtol=1e-4, atol=1e-4)


def test_matmul_batched_with_broadcast_batch(rng):
    a, b = kgen.tensor("a", (2, 1, 5, 7)), kgen.tensor("b", (3, 7, 4))
    c = kgen.tensor("c", (5, 7))
    g = graph([a, b, c], [a @ b, c @ b, ops.matmul(ops.swap_last(b), c.T)])
    assert_matches_reference(g, {"a": random_array(rng, (2, 1, 5, 7)), "b": random_array(rng, (3, 7, 4)),
                                 "c": random_array(rng, (5, 7))})


def test_matmul_transposed_operands(rng):
    a, b = kgen.tensor("a", (7, 5)), kgen.tensor("b", (4, 7))
    g = graph([a, b], [a.T @ b.T, ops.swap_last(a) @ ops.swap_last(b), (b @ a).T])
    assert_matches_reference(g, {"a": random_array(rng, (7, 5)), "b": random_array(rng, (4, 7))})


@pytest.mark.parametrize("m,k,n", [(13, 24, 7), (1, 16, 33), (64, 32, 48)])
def test_matmul_float16(rng, m, k, n):
    a, b = kgen.tensor("a", (m, k), "float16"), kgen.tensor("b", (k, n), "float16")
    g = graph([a, b], [a @ b])
    assert kgen.compile(g).kernels[0].roots[0].dtype is kgen.float16
    assert_matches_reference(g, {"a": random_array(rng, (m, k), "float16"), "b": random_array(rng, (k, n), "float16")},
                             **F16)


def test_matmul_1d_operands(rng):
    v, w = kgen.tensor("v", (7,)), kgen.tensor("w", (7,))
    m1, m2 = kgen.tensor("m1", (7, 5)), kgen.tensor("m2", (3, 7))
    outs = [ops.matmul(v, w), ops.matmul(v, m1), ops.matmul(m2, v)]
    assert [o.shape for o in outs] == [(), (5,), (3,)]
    assert_matches_reference(graph([v, w, m1, m2], outs),
                             {"v": random_array(rng, (7,)), "w": random_array(rng, (7,)),
                              "m1": random_array(rng, (7, 5)), "m2": random_array(rng, (3, 7))})


def test_matmul_symbolic_sizes(rng):
    a, b = kgen.tensor("a", ("N", "K")), kgen.tensor("b", ("K", 3))
    x, w = kgen.tensor("x", ("B", 5, 7)), kgen.tensor("w", (7, 4))
    g = graph([a, b, x, w], [a @ b, x @ w])
    assert_matches_reference(g, {"a": random_array(rng, (4, 9)), "b": random_array(rng, (9, 3)),
                                 "x": random_array(rng, (3, 5, 7)), "w": random_array(rng, (7, 4))})


def test_matmul_with_fused_operands_and_epilogue(rng):
    a = kgen.tensor("a", (6, 7))
    g = graph([a], [ops.exp(a) @ (a.T * 2.0), ops.relu(a @ a.T) + 1.0,
                    a @ ops.broadcast_to(ops.constant(1.5), (7, 3)), a @ ops.constant(np.ones((7, 2)))])
    assert_matches_reference(g, {"a": random_array(rng, (6, 7))})


# --- composites and gradients --------------------------------------------------------------
def test_softmax_rows(rng):
    x = kgen.tensor("x", (7, 13))
    g = graph([x], [ops.softmax(x), ops.log_softmax(x), ops.logsumexp(x), ops.softmax(x, 0)])
    xv = random_array(rng, (7, 13)) * 5.0
    assert_matches_reference(g, {"x": xv})
    sm = run_compiled(g, {"x": xv})[0]
    np.testing.assert_allclose(sm.sum(1), np.ones(7), rtol=1e-5)


def test_cross_entropy(rng):
    x = kgen.tensor("x", ("N", 13))
    lab = kgen.tensor("lab", ("N",), "int32")
    g = graph([x, lab], [ops.cross_entropy(x, lab)])
    xv, lv = random_array(rng, (7, 13)), rng.integers(0, 13, size=7).astype(np.int32)
    assert_matches_reference(g, {"x": xv, "lab": lv})
    (got,) = run_compiled(g, {"x": xv, "lab": lv})
    logp = torch.log_softmax(torch.from_numpy(xv).double(), 1)
    want = -logp[torch.arange(7), torch.from_numpy(lv).long()].mean()
    assert math.isclose(float(got), float(want), rel_tol=1e-5)


def _mlp():
    x = kgen.tensor("x", ("N", 6))
    w1, b1, w2 = kgen.tensor("w1", (6, 8)), kgen.tensor("b1", (8,)), kgen.tensor("w2", (8, 4))
    y = kgen.tensor("y", ("N",), "int32")
    loss = ops.cross_entropy(ops.tanh(x @ w1 + b1) @ w2, y)
    return [x, w1, b1, w2, y], loss


def test_mlp_gradient(rng):
    inputs, loss = _mlp()
    x, w1, b1, w2, y = inputs
    grads = kgen.grad(loss, [w1, b1, w2])
    g = graph(inputs, [loss] + grads)
    values = {"x": random_array(rng, (5, 6)), "w1": random_array(rng, (6, 8)), "b1": random_array(rng, (8,)),
              "w2": random_array(rng, (8, 4)), "y": rng.integers(0, 4, size=5).astype(np.int32)}
    assert_matches_reference(g, values)
    # and against torch autograd
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in values.items() if k != "y"}
    for k in ("w1", "b1", "w2"):
        t[k].requires_grad_(True)
    h = torch.tanh(t["x"] @ t["w1"] + t["b1"]) @ t["w2"]
    torch.nn.functional.cross_entropy(h, torch.from_numpy(values["y"]).long()).backward()
    got = run_compiled(g, values)
    for gv, k in zip(got[1:], ("w1", "b1", "w2")):
        np.testing.assert_allclose(gv, t[k].grad.numpy(), rtol=1e-4, atol=1e-5)


def test_gradient_through_max_mean_and_broadcast(rng):
    x = kgen.tensor("x", ("N", 6))
    w = kgen.tensor("w", (6, 8))
    y = kgen.tensor("y", ("N",))
    loss = ops.mse(ops.sigmoid(x @ w).sum(1), y) + ops.max(w * w) + ops.mean(ops.sqrt(w * w + 1.0))
    g = graph([x, w, y], [loss] + kgen.grad(loss, [w, x]))
    assert_matches_reference(g, {"x": random_array(rng, (5, 6)), "w": random_array(rng, (6, 8)),
                                 "y": random_array(rng, (5,))})


# --- symbolic shapes with the size not leading ----------------------------------------------


def _run_padded(graph_, node, array):
    """Run with the input's storage padded, so wrong offsets read memory we own."""
    program = kgen.compile(graph_)
    big = torch.zeros(array.size * 16 + 64, dtype=torch.float32)
    big[:array.size] = torch.from_numpy(array.reshape(-1))
    tensor = big[:array.size].reshape(array.shape)
    return [o.numpy() for o in program.run({node: tensor})]


def test_pointwise_over_size_symbol_in_the_middle(rng):
    x = kgen.tensor("x", (2, "N", 3))
    xv = random_array(rng, (2, 2, 3))
    (got,) = _run_padded(graph([x], [ops.exp(x)]), x, xv)
    np.testing.assert_allclose(got, np.exp(xv), rtol=1e-6)


def test_transpose_of_symbolic_batch(rng):
    x = kgen.tensor("x", ("N", 2, 3))
    xv = random_array(rng, (2, 2, 3))
    (got,) = _run_padded(graph([x], [x.transpose(1, 0, 2) * 1.0]), x, xv)
    np.testing.assert_array_equal(got, xv.transpose(1, 0, 2))


def test_reshape_transpose_of_symbolic_batch(rng):
    x = kgen.tensor("x", ("N", 12))
    xv = random_array(rng, (2, 12))
    (got,) = _run_padded(graph([x], [x.reshape("N", 3, 4).transpose(0, 2, 1)]), x, xv)
    np.testing.assert_array_equal(got, xv.reshape(2, 3, 4).transpose(0, 2, 1))


def test_symbolic_shapes_with_the_size_leading(rng):
    x = kgen.tensor("x", ("N", 12))
    g = graph([x], [ops.exp(x.reshape("N", 3, 4)).sum(2), x.reshape("N", 3, 4).transpose(1, 2, 0) * 2.0])
    assert_matches_reference(g, {"x": random_array(rng, (1, 12))})


# --- kgen.check ----------------------------------------------------------------------------
def test_check_report_has_one_row_per_kernel(rng):
    inputs, loss = _mlp()
    g = graph(inputs, [loss] + kgen.grad(loss, inputs[1:4]))
    program = kgen.compile(g)
    values = {"x": random_array(rng, (5, 6)), "w1": random_array(rng, (6, 8)), "b1": random_array(rng, (8,)),
              "w2": random_array(rng, (8, 4)), "y": rng.integers(0, 4, size=5).astype(np.int32)}
    report = kgen.check(g, values)
    assert report.ok
    assert [r.kernel for r in report.rows] == [k.name for k in program.kernels]
    assert [r.kind for r in report.rows] == [k.kind for k in program.kernels]
    assert [r.nodes for r in report.rows] == [len(k.nodes) for k in program.kernels]
    for r in report.rows:
        assert math.isfinite(r.error) and 0.0 <= r.error <= r.tolerance
    text = str(report)
    assert f"{len(report.rows)}/{len(report.rows)} kernels within tolerance" in text
    assert report.raise_for_failures() is report


def test_check_accepts_sequence_inputs(rng):
    x, y = kgen.tensor("x", (7,)), kgen.tensor("y", (7,))
    report = kgen.check(graph([x, y], [x * y]), [random_array(rng, (7,)), random_array(rng, (7,))], strict=True)
    assert report.ok and len(report.rows) == 1


def test_check_report_raises_for_failures():
    rows = [KernelCheck("k0_pointwise", "pointwise", 3, 0.0, 1e-4),
            KernelCheck("k1_reduction_sum", "reduction", 2, 5e-3, 1e-4)]
    report = CheckReport(rows)
    assert not report.ok and rows[0].ok and not rows[1].ok
    with pytest.raises(kgen.CheckError, match="k1_reduction_sum"):
        report.raise_for_failures()
    assert "FAIL" in str(report) and "1/2 kernels within tolerance" in str(report)
    assert CheckReport([rows[0]]).raise_for_failures().ok


def _sabotaged_compile(monkeypatch, edit):
    """Make kgen.check compile programs whose module source is edited by `edit`."""
    real = kgen.compiler.compile

    def compile_(g, device=None):
        p = real(g, device)
        return type(p)(p.graph, p.plan, p.kernels, edit(p.source), device)

    monkeypatch.setattr(kgen.compiler, "compile", compile_)


def test_check_catches_a_wrong_kernel(rng, monkeypatch):
    x = kgen.tensor("x", (13,))
    g = graph([x], [ops.exp(x) * 2.0])
    values = {"x": random_array(rng, (13,))}
    assert kgen.check(g, values).ok
    _sabotaged_compile(monkeypatch, lambda src: src.replace("* 2.0)", "* 2.001)"))
    report = kgen.check(g, values)
    assert not report.ok and 1e-4 < report.rows[0].error < 1e-2
    with pytest.raises(kgen.CheckError):
        kgen.check(g, values, strict=True)


def test_check_catches_a_kernel_that_skips_outputs(rng, monkeypatch):
    """Outputs are poisoned with NaN first: a kernel that writes nothing fails."""
    x = kgen.tensor("x", (13,))
    g = graph([x], [ops.exp(x)])
    _sabotaged_compile(monkeypatch, lambda src: src.replace("tl.store(", "0 and tl.store("))
    report = kgen.check(g, {"x": random_array(rng, (13,))})
    assert report.rows[0].error == math.inf and not report.ok


def test_check_catches_a_kernel_that_writes_half_its_output(rng, monkeypatch):
    x = kgen.tensor("x", (7, 13))
    g = graph([x], [ops.sum(x, 1)])
    _sabotaged_compile(monkeypatch, lambda src: src.replace("mask=xmask)", "mask=xmask & (xindex < 3))"))
    report = kgen.check(g, {"x": random_array(rng, (7, 13))})
    assert not report.ok and report.rows[0].error == math.inf


def test_check_error_counts_missing_nans():
    assert output_error(np.array([1.0, 2.0]), np.array([np.nan, 2.0])) > 0.0


def test_check_error_measure():
    assert output_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert output_error(np.array([np.nan]), np.array([1.0])) == math.inf
    assert output_error(np.zeros(3), np.zeros(4)) == math.inf
    assert output_error(np.array([True, False]), np.array([True, True])) == 1.0
    assert math.isclose(output_error(np.array([101.0]), np.array([100.0])), 0.01)  # relative for large values
    assert math.isclose(output_error(np.array([0.011]), np.array([0.01])), 0.001)  # absolute for small ones
