"""Symbolic shapes (broadcasting, reshape, axes, binding) and dtypes (lookup, promotion,
bfloat16 rounding, native-precision reference)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

import kgen
from kgen import ops
from kgen.ir import dtypes, shapes
from ir_helpers import assert_close, random_array, run

N = shapes.size_symbol("N")
M = shapes.size_symbol("M")


# --- dims and shapes --------------------------------------------------------------------------
def test_as_shape_accepts_ints_names_and_expressions():
    assert shapes.as_shape(("N", 3)) == (N, 3)
    assert shapes.as_shape(5) == (5,)
    assert shapes.as_shape("N") == (N,)
    assert shapes.as_shape((2 * N, np.int64(4))) == (2 * N, 4)
    assert shapes.as_shape((sympy.Integer(3),)) == (3,) and isinstance(shapes.as_shape((sympy.Integer(3),))[0], int)
    assert kgen.tensor("x", ("N", 3)).shape == (N, 3)


@pytest.mark.parametrize("bad", [-1, "2N", "N M", 1.5, True, None])
def test_as_dim_rejects(bad):
    with pytest.raises(kgen.ShapeError):
        shapes.as_dim(bad)


def test_size_symbols_are_positive_integers():
    assert N.is_integer and N.is_positive
    assert shapes.size_symbol("N") == N  # same name, same symbol
    assert shapes.dims_equal(2 * N, N * 2)
    assert shapes.dims_equal(N * 784, 784 * N)
    assert not shapes.dims_equal(N, M)
    assert shapes.numel((N, 3, 4)) == 12 * N
    assert shapes.numel((2, 3)) == 6 and isinstance(shapes.numel((2, 3)), int)
    assert shapes.format_shape((N, 2 * N, 3)) == "[N,2*N,3]"


def test_evaluate_and_symbols():
    assert shapes.evaluate(3, {}) == 3
    assert shapes.evaluate(2 * N + 1, {"N": 4}) == 9
    assert shapes.symbols_of((N, 3, M * N)) == {"N", "M"}
    with pytest.raises(kgen.ShapeError, match="unbound"):
        shapes.evaluate(N * M, {"N": 2})


# --- broadcasting ------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,want", [
    ((N, 3), (3,), (N, 3)),
    ((N, 1), (1, 5), (N, 5)),
    ((N, 3), (N, 3), (N, 3)),
    ((1,), (N,), (N,)),
    ((N,), (1,), (N,)),
    ((), (N, 2), (N, 2)),
    ((2 * N, 1), (N * 2, 7), (2 * N, 7)),
    ((4, 1, 3), (5, 1), (4, 5, 3)),
], ids=str)
def test_broadcast_shapes(a, b, want):
    got = shapes.broadcast_shapes(a, b)
    assert len(got) == len(want) and all(shapes.dims_equal(g, w) for g, w in zip(got, want))
    if shapes.is_static(a) and shapes.is_static(b):
        assert got == np.broadcast_shapes(a, b)


def test_broadcast_symbol_against_static_size_fails_naming_both():
    x, y = kgen.tensor("x", ("N",)), kgen.tensor("y", (784,))
    with pytest.raises(kgen.ShapeError) as info:
        x + y
    message = str(info.value)
    assert "N" in message and "784" in message
    assert "broadcast" in message
    with pytest.raises(kgen.ShapeError, match=r"N.*784"):
        shapes.broadcast_shapes((N,), (784,))


def test_broadcast_two_symbols_fails():
    with pytest.raises(kgen.ShapeError, match=r"N.*M"):
        kgen.tensor("x", ("N", 3)) * kgen.tensor("y", ("M", 3))


def test_broadcast_static_mismatch_fails():
    with pytest.raises(kgen.ShapeError, match=r"3.*4"):
        shapes.broadcast_shapes((2, 3), (4,))


def test_broadcast_result_runs_with_bound_sizes(rng):
    x, b = kgen.tensor("x", ("N", 1)), kgen.tensor("b", (1, "M"))
    node = x * b
    assert node.shape == (N, M)
    a, c = random_array(rng, (3, 1)), random_array(rng, (1, 4))
    got, _ = run(node, {"x": a, "b": c}, [x, b])
    assert_close(got, a.astype(np.float64) * c)


# --- reshape -------------------------------------------------------------------------------------
def test_reshape_numel_mismatch_names_both_sizes():
    with pytest.raises(kgen.ShapeError) as info:
        ops.reshape(kgen.tensor("x", (2, 3)), (4, 2))
    message = str(info.value)
    assert "6" in message and "8" in message and "[2,3]" in message and "[4,2]" in message


def test_reshape_symbolic_numel():
    x = kgen.tensor("x", ("N", 4))
    assert ops.reshape(x, (2 * N, 2)).shape == (2 * N, 2)
    assert ops.reshape(x, (N, 2, 2)).shape == (N, 2, 2)
    with pytest.raises(kgen.ShapeError):
        ops.reshape(x, (N, 3))
    with pytest.raises(kgen.ShapeError):
        ops.reshape(x, (4, 4))  # N elements are not a fixed 16


def test_reshape_symbolic_minus_one():
    x = kgen.tensor("x", ("N", 6))
    assert ops.reshape(x, (-1,)).shape == (6 * N,)
    assert ops.reshape(x, (-1, 3)).shape == (2 * N, 3)
    assert ops.reshape(x, ("N", -1, 2)).shape == (N, 3, 2)
    assert ops.reshape(ops.reshape(x, (-1,)), (-1, 6)) .shape == (N, 6)


@pytest.mark.parametrize("target", [(-1, 4), (-1, -1), (5, -1)], ids=str)
def test_reshape_minus_one_errors(target):
    with pytest.raises(kgen.ShapeError):
        ops.reshape(kgen.tensor("x", ("N", 6)), target)


def test_reshape_minus_one_static_not_divisible():
    with pytest.raises(kgen.ShapeError):
        ops.reshape(kgen.tensor("x", (2, 3)), (-1, 4))


def test_reshape_rejects_negative_dims():
    with pytest.raises(kgen.ShapeError):
        ops.reshape(kgen.tensor("x", (2, 3)), (-2, -3))


# --- axes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,rank,want", [
    (None, 3, (0, 1, 2)), (0, 3, (0,)), (-1, 3, (2,)), ((2, 0), 3, (0, 2)), ((-1, -3), 3, (0, 2)),
    ([1], 2, (1,)), ((), 2, ()), (0, 0, ()), (None, 0, ()),
], ids=str)
def test_normalize_axes(axis, rank, want):
    assert shapes.normalize_axes(axis, rank) == want


@pytest.mark.parametrize("axis,rank", [(3, 3), (-4, 3), (1, 0), ((0, 5), 2)], ids=str)
def test_normalize_axes_out_of_range(axis, rank):
    with pytest.raises(kgen.ShapeError, match="out of range"):
        shapes.normalize_axes(axis, rank)


@pytest.mark.parametrize("axis", [(1.0,), "0", 1.0], ids=str)
def test_normalize_axes_rejects_non_int_axes(axis):
    with pytest.raises(kgen.ShapeError, match="must be an int"):
        shapes.normalize_axes(axis, 2)


def test_normalize_axes_float_scalar_axis():
    with pytest.raises(kgen.ShapeError, match="must be an int"):
        ops.sum(kgen.tensor("x", (2, 3)), 1.0)


@pytest.mark.parametrize("axis", [(0, 0), (2, -1), (0, 2, -3)], ids=str)
def test_normalize_axes_repeats(axis):
    with pytest.raises(kgen.ShapeError, match="repeats"):
        shapes.normalize_axes(axis, 3)


def test_normalize_axes_names_what():
    with pytest.raises(kgen.ShapeError, match="dim 5"):
        shapes.normalize_axes(5, 2, what="dim")


def test_normalize_axes_minus_one_on_a_scalar():
    # torch.sum(torch.tensor(2.), -1) works: a scalar's axis 0 or -1 names nothing to reduce
    assert shapes.normalize_axes(-1, 0) == ()
    assert shapes.normalize_axes(0, 0) == ()
    s = kgen.tensor("s", ())
    assert ops.sum(s, -1) is s


def test_reduction_axis_errors_surface_with_the_op():
    x = kgen.tensor("x", (2, 3))
    with pytest.raises(kgen.ShapeError, match="out of range"):
        ops.sum(x, 2)
    with pytest.raises(kgen.ShapeError, match="repeats"):
        ops.max(x, (0, -2))


# --- binding concrete shapes -----------------------------------------------------------------------
def test_bind_shape_binds_symbols():
    sizes = {}
    shapes.bind_shape((N, 3, 2 * N), (4, 3, 8), sizes, "input 'x'")
    assert sizes == {"N": 4}


@pytest.mark.parametrize("declared,actual,pattern", [
    ((N, 3), (4, 3, 1), r"input 'x'.*rank 2.*rank 3"),
    ((N, 3), (4, 5), r"input 'x'.*axis 1 is 5, expected 3"),
    ((N, 2 * N), (3, 5), r"input 'x'.*axis 1 is 5.*2\*N = 6"),
], ids=["rank", "static", "expression"])
def test_bind_shape_errors_name_the_input(declared, actual, pattern):
    with pytest.raises(kgen.ShapeError, match=pattern):
        shapes.bind_shape(declared, actual, {}, "input 'x'")


def test_bind_shape_conflicting_symbol_names_the_input():
    sizes = {}
    shapes.bind_shape((N, 3), (4, 3), sizes, "input 'x'")
    with pytest.raises(kgen.ShapeError, match=r"input 'w'.*N = 4"):
        shapes.bind_shape((N,), (5,), sizes, "input 'w'")


def test_bind_shape_expression_only_dim_names_the_input():
    with pytest.raises(kgen.ShapeError, match="input 'x'"):
        shapes.bind_shape((2 * N,), (5,), {}, "input 'x'")


def test_reference_binds_sizes_across_inputs(rng):
    x, w = kgen.tensor("x", ("N", 3)), kgen.tensor("w", ("N",))
    node = x * ops.expand_dims(w, 1)
    graph = kgen.Graph([x, w], [node])
    a, b = random_array(rng, (5, 3)), random_array(rng, (5,))
    (got,) = kgen.reference.run(graph, {"x": a, "w": b})
    assert_close(got, a.astype(np.float64) * b[:, None])
    with pytest.raises(kgen.ShapeError, match=r"input 'w'.*N = 5"):
        kgen.reference.run(graph, {"x": a, "w": random_array(rng, (4,))})


# --- dtypes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling,want", [
    ("float32", dtypes.float32), ("f32", dtypes.float32), (np.float32, dtypes.float32), (torch.float32, dtypes.float32),
    ("float16", dtypes.float16), ("f16", dtypes.float16), (np.float16, dtypes.float16), (torch.float16, dtypes.float16),
    ("bfloat16", dtypes.bfloat16), ("bf16", dtypes.bfloat16), (torch.bfloat16, dtypes.bfloat16),
    ("int32", dtypes.int32), (np.int32, dtypes.int32), ("int64", dtypes.int64), (torch.int64, dtypes.int64),
    ("bool", dtypes.bool_), ("bool_", dtypes.bool_), (np.bool_, dtypes.bool_), (torch.bool, dtypes.bool_),
    (dtypes.float16, dtypes.float16), (np.dtype("int64"), dtypes.int64),
], ids=str)
def test_dtype_lookup(spelling, want):
    assert dtypes.dtype(spelling) is want


@pytest.mark.parametrize("bad", ["float64", np.float64, torch.float64, "int8", np.uint8, object, "nope"], ids=str)
def test_dtype_lookup_rejects(bad):
    with pytest.raises(kgen.DTypeError, match="float32"):  # the message lists what is supported
        dtypes.dtype(bad)


def test_tensor_rejects_float64():
    with pytest.raises(kgen.DTypeError):
        kgen.tensor("x", (3,), "float64")


@pytest.mark.parametrize("a,b,want", [
    ("float32", "int32", "float32"), ("int64", "float16", "float16"), ("bfloat16", "int64", "bfloat16"),
    ("float16", "bfloat16", "float32"), ("bfloat16", "float16", "float32"),
    ("float16", "float32", "float32"), ("bfloat16", "float32", "float32"),
    ("int32", "int64", "int64"), ("bool", "int32", "int32"), ("bool", "float16", "float16"),
    ("float16", "float16", "float16"),
], ids=str)
def test_promote(a, b, want):
    got = dtypes.promote(dtypes.dtype(a), dtypes.dtype(b))
    assert got is dtypes.dtype(want)
    assert dtypes.promote(dtypes.dtype(b), dtypes.dtype(a)) is got
    # torch agrees
    ta = torch.ones(2, dtype=dtypes.dtype(a).torch)
    tb = torch.ones(2, dtype=dtypes.dtype(b).torch)
    assert (ta + tb).dtype == got.torch


@pytest.mark.parametrize("a,b,want", [
    ("float16", "bfloat16", "float32"), ("int32", "float16", "float16"), ("int32", "int64", "int64"),
    ("float32", "float16", "float32"),
], ids=str)
def test_ops_promote_and_insert_casts(a, b, want, rng):
    x, y = kgen.tensor("x", (3,), a), kgen.tensor("y", (3,), b)
    node = x * y
    assert node.dtype is dtypes.dtype(want)
    assert all(i.dtype is node.dtype for i in node.inputs)
    va, vb = random_array(rng, (3,), a), random_array(rng, (3,), b)
    got, graph = run(node, {"x": va, "y": vb}, [x, y])
    if a != want or b != want:
        assert "cast" in {n.op for n in graph.nodes}
    assert_close(got, va.astype(np.float64) * vb.astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "int32", "int64"])
def test_python_scalar_adopts_tensor_dtype(dtype):
    x = kgen.tensor("x", (3,), dtype)
    for node in (x + 2, 2 * x, x - 1, x * np.int64(3), ops.maximum(x, 0)):
        assert node.dtype is dtypes.dtype(dtype), node
        assert not any(i.op == "cast" for i in node.inputs)


def test_python_float_scalar_makes_ints_float32():
    x = kgen.tensor("x", (3,), "int32")
    assert (x + 2.5).dtype is kgen.float32
    assert (x * np.float64(0.5)).dtype is kgen.float32
    assert (kgen.tensor("h", (3,), "float16") + 2.5).dtype is kgen.float16


def test_constant_dtypes():
    assert ops.constant(1.0).dtype is kgen.float32
    assert ops.constant(np.ones(3)).dtype is kgen.float32  # float64 arrays become float32
    assert ops.constant(np.ones(3, np.float16)).dtype is kgen.float16
    assert ops.constant(np.int64(4)).dtype is kgen.int64
    assert ops.constant(True).dtype is kgen.bool_


def test_elementwise_rejects_mixed_dtypes_at_node_level():
    x, y = kgen.tensor("x", (3,)), kgen.tensor("y", (3,), "float16")
    with pytest.raises(kgen.DTypeError, match="share a dtype"):
        kgen.Node("add", (x, y))


def test_matmul_rejects_integers_at_node_level():
    a, b = kgen.tensor("a", (2, 3), "int32"), kgen.tensor("b", (3, 2), "int32")
    with pytest.raises(kgen.DTypeError, match="floating"):
        kgen.Node("matmul", (a, b))
    assert ops.matmul(a, b).dtype is kgen.float32  # ops.matmul makes them float


# --- bfloat16 rounding --------------------------------------------------------------------------------
def _torch_bf16(x):
    return torch.tensor(x).to(torch.bfloat16).float().numpy()


def test_round_to_bfloat16_matches_torch_on_random_values(rng):
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
                        rng.uniform(-4, 4, 2000)]).astype(np.float32)
    got = dtypes.round_to(x, dtypes.bfloat16)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _torch_bf16(x))


def test_round_to_bfloat16_ties_to_even():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)  # bfloat16 spacing at 1.0
    x = np.array([one + ulp / 2,  # halfway between 1 and 1+ulp: even is 1
                  one + 3 * ulp / 2,  # halfway between 1+ulp and 1+2ulp: even is 1+2ulp
                  one + ulp / 2 + 2.0 ** -20,  # just above halfway: rounds up
                  one + ulp / 2 - 2.0 ** -20,  # just below halfway: rounds down
                  -(one + ulp / 2), -(one + 3 * ulp / 2)], np.float32)
    want = np.array([1.0, 1 + 2 * ulp, 1 + ulp, 1.0, -1.0, -(1 + 2 * ulp)], np.float32)
    got = dtypes.round_to(x, dtypes.bfloat16)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, _torch_bf16(x))


def test_round_to_bfloat16_special_values():
    big = np.float32(3.3895e38)  # above bfloat16's largest finite: rounds to inf
    tiny = np.float32(1e-40)  # a float32 subnormal
    x = np.array([np.inf, -np.inf, 0.0, -0.0, big, -big, tiny, np.finfo(np.float32).max], np.float32)
    got = dtypes.round_to(x, dtypes.bfloat16)
    np.testing.assert_array_equal(got, _torch_bf16(x))
    assert np.signbit(got[3])
    nan = dtypes.round_to(np.array([np.nan, 1.0], np.float32), dtypes.bfloat16)
    assert np.isnan(nan[0]) and nan[1] == 1.0


def test_round_to_other_dtypes():
    x = np.array([1.0001, 2.5, -3.7])
    assert dtypes.round_to(x, dtypes.float16).dtype == np.float16
    np.testing.assert_array_equal(dtypes.round_to(x, dtypes.float16), x.astype(np.float16))
    assert dtypes.round_to(x, dtypes.float32).dtype == np.float32
    assert dtypes.round_to(np.array([1, 0, 2]), dtypes.bool_).dtype == np.bool_


# --- native precision keeps dtypes ---------------------------------------------------------------------
def test_native_reference_keeps_dtypes(rng):
    h = kgen.tensor("h", ("N", 3), "float16")
    i = kgen.tensor("i", ("N", 3), "int32")
    bf = kgen.tensor("bf", (3,), "bfloat16")
    outs = [h * 2.0, ops.sum(h, 1), ops.exp(h), h > 1.0, i + 1, ops.cast(h, "float32"), bf * 3.0,
            ops.cast(h, "bfloat16"), ops.mean(i, 0)]
    arrays = {"h": random_array(rng, (4, 3), "float16"), "i": random_array(rng, (4, 3), "int32"),
              "bf": random_array(rng, (3,), "bfloat16")}
    got, _ = run(outs, arrays, [h, i, bf], precision="native")
    assert [g.dtype for g in got] == [np.float16, np.float16, np.float16, np.bool_, np.int32, np.float32,
                                      np.float32, np.float32, np.float32]
    # bfloat16 values are stored in float32 but are bfloat16's
    for g in (got[6], got[7]):
        np.testing.assert_array_equal(g, dtypes.round_to(g, dtypes.bfloat16))
    # and float64 precision computes every float in float64
    got64, _ = run(outs, arrays, [h, i, bf])
    assert [g.dtype for g in got64] == [np.float64, np.float64, np.float64, np.bool_, np.int32, np.float64,
                                        np.float64, np.float64, np.float64]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_native_half_arithmetic_matches_torch_eager(dtype, rng):
    tdt = dtypes.dtype(dtype).torch
    a_node, b_node, c_node = (kgen.tensor(n, (64,), dtype) for n in "abc")
    a, b, c = (random_array(rng, (64,), dtype) for _ in range(3))
    node = (a_node * b_node + c_node) / b_node - a_node
    got, _ = run(node, {"a": a, "b": b, "c": c}, [a_node, b_node, c_node], precision="native")
    ta, tb, tc = (torch.tensor(v).to(tdt) for v in (a, b, c))
    want = ((ta * tb + tc) / tb - ta).float().numpy()
    np.testing.assert_array_equal(got.astype(np.float32), want)


def test_native_differs_from_float64_for_half(rng):
    h = kgen.tensor("h", (256,), "float16")
    a = random_array(rng, (256,), "float16")
    node = h / 3.0
    native, _ = run(node, {"h": a}, [h], precision="native")
    exact, _ = run(node, {"h": a}, [h])
    assert native.dtype == np.float16 and exact.dtype == np.float64
    assert not np.array_equal(native.astype(np.float64), exact)
    assert_close(native, exact, rtol=1e-3)


def test_reference_rejects_unknown_precision():
    x = kgen.tensor("x", (2,))
    with pytest.raises(kgen.KgenError, match="precision"):
        kgen.reference.run(kgen.Graph([x], [x]), {"x": np.ones(2)}, precision="float32")


@pytest.mark.parametrize("dtype,name", [
    (dt, n) for dt in ("float16", "bfloat16") for n in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "neg", "abs")
])
def test_native_half_unary_rounds_once_like_torch(dtype, name):
    # kernels compute half types in float32 and round once; so does torch on CPU
    dt = dtypes.dtype(dtype)
    x = kgen.tensor("x", (1201,), dtype)
    values = np.linspace(-9, 9, 1201) if name not in ("log", "sqrt") else np.linspace(0.01, 50, 1201)
    a = dtypes.round_to(values, dt)
    got, _ = run(getattr(ops, name)(x), {"x": a}, [x], precision="native")
    want = getattr(torch, name)(torch.tensor(a).to(dt.torch))
    got64 = got.astype(np.float64)
    want64 = want.float().numpy().astype(np.float64)
    step = 2.0 ** (-10 if dt is dtypes.float16 else -7)  # one ulp relative to the binade
    ulp = np.maximum(2.0 ** np.floor(np.log2(np.maximum(np.abs(want64), 2.0 ** -14))) * step, 2.0 ** -24)
    assert np.max(np.abs(got64 - want64) / ulp) <= 1.0
