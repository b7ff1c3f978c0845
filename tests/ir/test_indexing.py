"""Unit tests of kgen.ir.indexing: simplify, flat_index, unflatten, FloorDiv and
ModularIndexing, and of printing index expressions as Triton/Python code (IndexPrinter)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy

from kgen.ir import shapes
from kgen.kernels.writer import KernelWriter
from kgen.ir.indexing import (FloorDiv, ModularIndexing, flat_index, index_var, simplify,
                                    strides, unflatten, upper_bound)

N = shapes.size_symbol("N")


# --- helpers ---------------------------------------------------------------------------------
def evaluate(expr, env):
    """The integer value of an index expression, with index variables and size symbols
    bound by `env` (walks the tree, so it does not depend on sympy's evaluation rules)."""
    if isinstance(expr, FloorDiv):
        return evaluate(expr.args[0], env) // evaluate(expr.args[1], env)
    if isinstance(expr, ModularIndexing):
        base, div, mod = (evaluate(a, env) for a in expr.args)
        return (base // div) % mod
    if expr.is_Integer:
        return int(expr)
    if expr.is_Symbol:
        return env[expr]
    if expr.is_Add:
        return sum(evaluate(a, env) for a in expr.args)
    if expr.is_Mul:
        out = 1
        for a in expr.args:
            out *= evaluate(a, env)
        return out
    raise TypeError(f"unexpected index expression {expr!r}")


def printer():
    return KernelWriter("k", set(), {}).printer


def transposed_offset(shape, perm, var):
    """The offset into a contiguous `shape` buffer of element `var` (row-major) of
    transpose(buffer, perm): what a kernel reading a transposed view loads."""
    out_shape = tuple(shape[p] for p in perm)
    coords = unflatten(var, out_shape)
    src = [None] * len(shape)
    for k, p in enumerate(perm):
        src[p] = coords[k]
    return flat_index(src, shape)


def numpy_transpose_map(shape, perm):
    n = int(np.prod(shape))
    return np.transpose(np.arange(n).reshape(shape), perm).reshape(-1)


# --- FloorDiv / ModularIndexing --------------------------------------------------------------
def test_integer_arguments_evaluate():
    assert FloorDiv(17, 5) == 3
    assert ModularIndexing(17, 3, 4) == (17 // 3) % 4 == 1
    assert ModularIndexing(17, 1, 5) == 2


def test_trivial_forms():
    y = index_var("y", 100)
    assert FloorDiv(y, 1) == y
    assert FloorDiv(0, 7) == 0
    assert ModularIndexing(y, 3, 1) == 0
    assert ModularIndexing(0, 3, 5) == 0


def test_functions_are_nonnegative_integers():
    y = index_var("y", 100)
    assert FloorDiv(y, 3).is_integer and FloorDiv(y, 3).is_nonnegative
    assert ModularIndexing(y, 3, 4).is_integer and ModularIndexing(y, 3, 4).is_nonnegative


# --- simplify rules --------------------------------------------------------------------------
def test_modular_of_var_below_modulus_is_the_var():
    x = index_var("x", 20)
    assert simplify(ModularIndexing(x, 1, 20)) == x
    assert simplify(ModularIndexing(x, 1, 25)) == x


def test_modular_becomes_floordiv_when_base_below_div_times_mod():
    x = index_var("x", 20)
    assert simplify(ModularIndexing(x, 4, 5)) == FloorDiv(x, 4)
    assert simplify(ModularIndexing(x, 4, 6)) == FloorDiv(x, 4)


def test_modular_kept_when_base_may_wrap():
    y = index_var("y", 100)
    assert simplify(ModularIndexing(y, 4, 5)) == ModularIndexing(y, 4, 5)
    assert simplify(ModularIndexing(y, 1, 7)) == ModularIndexing(y, 1, 7)


def test_floordiv_of_var_below_divisor_is_zero():
    x = index_var("x", 20)
    assert simplify(FloorDiv(x, 20)) == 0
    assert simplify(FloorDiv(x, 21)) == 0
    assert simplify(FloorDiv(x, 19)) == FloorDiv(x, 19)


def test_merge_modular_with_modular():
    # c*MI(x, d, m) + c*m*MI(x, d*m, k) -> c*MI(x, d, m*k)
    y = index_var("y", 100)
    got = simplify(3 * ModularIndexing(y, 1, 4) + 12 * ModularIndexing(y, 4, 5))
    assert got == 3 * ModularIndexing(y, 1, 20)


def test_merge_modular_with_modular_then_drops_the_modulus():
    x = index_var("x", 20)
    assert simplify(3 * ModularIndexing(x, 1, 4) + 12 * ModularIndexing(x, 4, 5)) == 3 * x


def test_merge_modular_with_floordiv():
    # c*MI(x, d, m) + c*m*FloorDiv(x, d*m) -> c*FloorDiv(x, d)
    y = index_var("y", 100)
    assert simplify(2 * ModularIndexing(y, 3, 4) + 8 * FloorDiv(y, 12)) == 2 * FloorDiv(y, 3)
    assert simplify(ModularIndexing(y, 1, 4) + 4 * FloorDiv(y, 4)) == y


def test_no_merge_when_coefficients_disagree():
    y = index_var("y", 100)
    expr = 3 * ModularIndexing(y, 1, 4) + 11 * ModularIndexing(y, 4, 5)
    assert simplify(expr) == expr


def test_no_merge_across_different_bases():
    y, z = index_var("y", 100), index_var("z", 100)
    expr = ModularIndexing(y, 1, 4) + 4 * FloorDiv(z, 4)
    assert simplify(expr) == expr


def test_symbolic_bounds():
    z = index_var("z", N * 784)
    assert simplify(ModularIndexing(z, 784, N)) == FloorDiv(z, 784)
    assert simplify(ModularIndexing(z, 1, 784 * N)) == z
    assert simplify(FloorDiv(z, 784 * N)) == 0


def test_upper_bound():
    x, y = index_var("x", 20), index_var("y", 100)
    assert upper_bound(3 * x + 2) == 59
    assert upper_bound(ModularIndexing(y, 2, 7)) == 6
    assert upper_bound(sympy.Integer(5)) == 5


# --- strides, flat_index, unflatten ----------------------------------------------------------
def test_strides():
    assert strides((3, 4, 5)) == [20, 5, 1]
    assert strides((N, 28, 28)) == [784, 28, 1]
    assert strides((2, N, 3)) == [3 * N, 3, 1]
    assert strides(()) == []


@pytest.mark.parametrize("shape", [(60,), (3, 4, 5), (1, 4, 1, 5), (2, 1), (7, 1, 1)])
def test_unflatten_then_flatten_is_identity_static(shape):
    x = index_var("x", int(np.prod(shape)))
    assert flat_index(unflatten(x, shape), shape) == x


@pytest.mark.parametrize("shape", [("N", 784), ("N", 28, 28), ("N", 1, 5), ("N",), ("N", 4, 1)])
def test_unflatten_then_flatten_is_identity_symbolic(shape):
    shape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(shape))
    assert flat_index(unflatten(x, shape), shape) == x


@pytest.mark.parametrize("shape", [(2, "N", 3), (3, "N"), ("B", "N")])
def test_unflatten_then_flatten_is_identity_size_symbol_not_leading(shape):
    shape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(shape))
    assert flat_index(unflatten(x, shape), shape) == x


@pytest.mark.parametrize("shape", [(2, "N", 3), (3, "N"), ("B", "N")])
def test_unflatten_then_flatten_is_numerically_identity(shape):
    """Even where simplify leaves it unsimplified, the row-major round trip is the identity."""
    shape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(shape))
    expr = flat_index(unflatten(x, shape), shape)
    symbols = {s: v for s, v in zip(sorted(shapes.numel(shape).free_symbols, key=str), (2, 3))}
    n = int(shapes.numel(shape).subs(symbols))
    assert [evaluate(expr, {x: i, **symbols}) for i in range(n)] == list(range(n))


def test_unflatten_row_major_coordinates():
    x = index_var("x", 60)
    assert unflatten(x, (3, 4, 5)) == [FloorDiv(x, 20), ModularIndexing(x, 5, 4), ModularIndexing(x, 1, 5)]
    z = index_var("z", N * 784)
    assert unflatten(z, (N, 28, 28)) == [FloorDiv(z, 784), ModularIndexing(z, 28, 28), ModularIndexing(z, 1, 28)]


def test_unflatten_unit_dims_are_zero():
    x = index_var("x", 20)
    coords = unflatten(x, (1, 4, 1, 5))
    assert coords[0] == 0 and coords[2] == 0


def test_unflatten_numeric():
    shape = (3, 4, 5)
    x = index_var("x", 60)
    coords = unflatten(x, shape)
    for i in range(60):
        assert tuple(evaluate(c, {x: i}) for c in coords) == np.unravel_index(i, shape)


def test_transpose_then_flatten_expression():
    x = index_var("x", 12)
    # a [3,4] buffer read as its [4,3] transpose at flat position x
    assert transposed_offset((3, 4), (1, 0), x) == FloorDiv(x, 3) + 4 * ModularIndexing(x, 1, 3)
    y = index_var("y", 60)
    assert transposed_offset((3, 4, 5), (2, 1, 0), y) == (
        FloorDiv(y, 12) + 20 * ModularIndexing(y, 1, 3) + 5 * ModularIndexing(y, 3, 4))


def test_transpose_symbolic_expression():
    x = index_var("x", 3 * N)
    # a [N,3] buffer read as its [3,N] transpose
    assert transposed_offset((N, 3), (1, 0), x) == 3 * ModularIndexing(x, 1, N) + FloorDiv(x, N)


def test_reshape_round_trip_through_other_shape():
    # reading a [N,784] buffer through a reshape to [N,28,28]: back to xindex
    z = index_var("z", N * 784)
    coords = unflatten(z, (N, 28, 28))
    assert flat_index(unflatten(flat_index(coords, (N, 28, 28)), (N, 784)), (N, 784)) == z


# --- numeric checks against NumPy ------------------------------------------------------------
def _random_cases(seed, count, max_ndim=4, max_dim=4):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        nd = int(rng.integers(1, max_ndim + 1))
        shape = tuple(int(s) for s in rng.integers(1, max_dim + 1, size=nd))
        perm = tuple(int(p) for p in rng.permutation(nd))
        cases.append((shape, perm))
    return cases


@pytest.mark.parametrize("shape,perm", _random_cases(0, 40))
def test_transpose_offsets_match_numpy(shape, perm):
    n = int(np.prod(shape))
    x = index_var("x", n)
    offset = transposed_offset(shape, perm, x)
    got = np.array([evaluate(offset, {x: i}) for i in range(n)])
    np.testing.assert_array_equal(got, numpy_transpose_map(shape, perm))
    # sympy's own substitution agrees too
    for i in (0, n // 2, n - 1):
        assert int(offset.subs(x, i)) == got[i]


def _reshape_transpose_reshape_cases(seed, count):
    rng = np.random.default_rng(seed)

    def factor(n):
        out = []
        while n > 1:
            d = int(rng.choice([d for d in range(2, n + 1) if n % d == 0]))
            out.append(d)
            n //= d
        if rng.random() < 0.3:
            out.insert(int(rng.integers(0, len(out) + 1)), 1)
        return tuple(out) or (1,)

    cases = []
    for _ in range(count):
        n = int(rng.choice([6, 8, 12, 24, 30]))
        s1 = factor(n)
        cases.append((factor(n), s1, tuple(int(p) for p in rng.permutation(len(s1))), factor(n)))
    return cases


@pytest.mark.parametrize("s0,s1,perm,s2", _reshape_transpose_reshape_cases(1, 25))
def test_view_chain_offsets_match_numpy(s0, s1, perm, s2):
    """buffer[s0] -> reshape s1 -> transpose perm -> reshape s2, read row-major."""
    n = int(np.prod(s0))
    x = index_var("x", n)
    t_shape = tuple(s1[p] for p in perm)
    ct = unflatten(flat_index(unflatten(x, s2), s2), t_shape)
    c1 = [None] * len(s1)
    for k, p in enumerate(perm):
        c1[p] = ct[k]
    offset = flat_index(unflatten(flat_index(c1, s1), s0), s0)
    got = np.array([evaluate(offset, {x: i}) for i in range(n)])
    want = np.transpose(np.arange(n).reshape(s1), perm).reshape(-1)
    np.testing.assert_array_equal(got, want)


def _symbolic_cases(seed, count):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        nd = int(rng.integers(1, 4))
        dims = [int(s) for s in rng.integers(1, 5, size=nd)]
        pos = int(rng.integers(0, nd + 1))
        shape = tuple(dims[:pos] + ["N"] + dims[pos:])
        cases.append((shape, tuple(int(p) for p in rng.permutation(nd + 1))))
    return cases


@pytest.mark.parametrize("shape,perm", _symbolic_cases(2, 25))
def test_symbolic_transpose_offsets_match_numpy(shape, perm):
    sshape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(sshape))
    offset = transposed_offset(sshape, perm, x)
    for n_value in (1, 2, 3):
        concrete = tuple(n_value if d == N else d for d in sshape)
        n = int(np.prod(concrete))
        got = np.array([evaluate(offset, {x: i, N: n_value}) for i in range(n)])
        np.testing.assert_array_equal(got, numpy_transpose_map(concrete, perm))


# --- printing --------------------------------------------------------------------------------
def test_printer_uses_floordiv_and_mod():
    x = index_var("x", 100)
    p = printer()
    assert p.doprint(FloorDiv(x, 4)) == "(x // 4)"
    assert p.doprint(ModularIndexing(x, 1, 7)) == "(x % 7)"
    assert p.doprint(ModularIndexing(x, 3, 7)) == "((x // 3) % 7)"


def test_printer_size_symbols_become_arguments():
    w = KernelWriter("k", set(), {})
    text = w.printer.doprint(3 * N + 1)
    assert "s_N" in text and "N" not in text.replace("s_N", "")
    assert [p.name for p in w.params] == ["s_N"] and w.params[0].kind == "int"


@pytest.mark.parametrize("shape,perm", _random_cases(3, 30))
def test_printed_static_offsets_are_python_and_match_numpy(shape, perm):
    n = int(np.prod(shape))
    x = index_var("x", n)
    text = printer().doprint(transposed_offset(shape, perm, x))
    code = compile(text, "<index>", "eval")  # valid Python
    got = np.array([eval(code, {"x": i}) for i in range(n)])
    np.testing.assert_array_equal(got, numpy_transpose_map(shape, perm))


@pytest.mark.parametrize("shape,perm", [(("N", 3), (1, 0)), ((3, "N"), (1, 0)), (("N", 2, 3), (0, 2, 1)),
                                        ((2, 3, "N"), (2, 0, 1))])
def test_printed_symbolic_offsets_match_numpy(shape, perm):
    sshape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(sshape))
    code = compile(printer().doprint(transposed_offset(sshape, perm, x)), "<index>", "eval")
    for n_value in (1, 2, 3):
        concrete = tuple(n_value if d == N else d for d in sshape)
        got = np.array([eval(code, {"x": i, "s_N": n_value}) for i in range(int(np.prod(concrete)))])
        np.testing.assert_array_equal(got, numpy_transpose_map(concrete, perm))




@pytest.mark.parametrize("expr_of", [
    lambda x: FloorDiv(x, 4 * N),
    lambda x: ModularIndexing(x, 1, 4 * N),
    lambda x: ModularIndexing(x, 2 * N, 3),
    lambda x: FloorDiv(x + 1, 4),
    lambda x: ModularIndexing(x + 1, 1, 4),
], ids=["floordiv-product-divisor", "mod-product-modulus", "mod-product-divisor", "floordiv-sum-base",
        "mod-sum-base"])
def test_printed_compound_arguments_evaluate_correctly(expr_of):
    x = index_var("x", 100)
    expr = expr_of(x)
    code = compile(printer().doprint(expr), "<index>", "eval")
    for i in range(0, 100, 7):
        for n_value in (2, 3):
            assert eval(code, {"x": i, "s_N": n_value}) == evaluate(expr, {x: i, N: n_value})


@pytest.mark.parametrize("shape,perm", [(("N", 2, 3), (1, 0, 2)), ((2, 2, "N"), (1, 2, 0)),
                                        (("N", 3, 4), (1, 0, 2))])
def test_printed_symbolic_transposes_that_divide_by_a_size(shape, perm):
    sshape = shapes.as_shape(shape)
    x = index_var("x", shapes.numel(sshape))
    code = compile(printer().doprint(transposed_offset(sshape, perm, x)), "<index>", "eval")
    concrete = tuple(2 if d == N else d for d in sshape)
    got = np.array([eval(code, {"x": i, "s_N": 2}) for i in range(int(np.prod(concrete)))])
    np.testing.assert_array_equal(got, numpy_transpose_map(concrete, perm))


# --- negative bases: Python's floor semantics in sympy, C's truncation in Triton ----------------
class _CInt(np.ndarray):
    """int64 arrays whose // and % truncate toward zero, as Triton's integer ops do."""

    def __floordiv__(self, other):
        a, b = np.asarray(self), np.asarray(other)
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).view(_CInt)

    def __rfloordiv__(self, other):
        return np.asarray(other).view(_CInt).__floordiv__(self)

    def __mod__(self, other):
        return (np.asarray(self) - np.asarray(other) * np.asarray(self // other)).view(_CInt)

    def __rmod__(self, other):
        return np.asarray(other).view(_CInt).__mod__(self)


class _TL:
    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b).view(_CInt)


def _as_triton(expr, var, values):
    """`expr` as the kernel writer prints it, evaluated with Triton's (C's) integer // and %."""
    text = printer().doprint(expr)
    return np.asarray(eval(text, {"tl": _TL}, {var.name: np.asarray(values, np.int64).view(_CInt)}))


@pytest.mark.parametrize("seed", range(40))
def test_bases_that_may_be_negative_keep_their_value_simplified_and_printed(seed):
    """A pad's or slice's offset gives a base like 2*(x // 3) + x % 3 - 3, negative for some
    x (found by kgen.fuzz: a gradient through x0[1, 1:] read its input at the wrong place)."""
    rng = np.random.default_rng(seed)
    bound = int(rng.integers(4, 13))
    x = index_var("x", bound)
    k, m = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    base = (int(rng.integers(-6, 4)) + int(rng.integers(0, 3)) * x + int(rng.integers(0, 3)) * FloorDiv(x, k)
            + int(rng.integers(0, 3)) * ModularIndexing(x, 1, m))
    d = int(rng.integers(1, 4))
    expr = ModularIndexing(base, d, m) if seed % 2 else FloorDiv(base, d) + ModularIndexing(base, 1, m)
    values = np.arange(bound)
    want = np.array([evaluate(expr, {x: int(v)}) for v in values])
    simplified = simplify(expr)
    np.testing.assert_array_equal([evaluate(simplified, {x: int(v)}) for v in values], want, err_msg=str(simplified))
    np.testing.assert_array_equal(np.broadcast_to(_as_triton(simplified, x, values), want.shape), want,
                                  err_msg=printer().doprint(simplified))


def test_the_fuzzers_gradient_through_a_slice_reads_its_input_where_the_reference_does():
    import kgen
    from kgen import ops
    x0 = kgen.tensor("x0", (2, 3, 1))
    v = ops.abs(x0[1, 1:, 0::1])
    cot = kgen.tensor("cot", v.shape)
    grad, = kgen.grad(ops.sum(v * cot), [x0])
    data = np.array([0.6, -1.9, -1.8, -0.8, 0.7, 1.2], np.float32).reshape(2, 3, 1)
    weights = np.array([1.5, 1.0], np.float32).reshape(2, 1)
    got = np.asarray(kgen.function([x0, cot], [grad])(data, weights)[0])
    np.testing.assert_allclose(got, kgen.reference.run(kgen.Graph([x0, cot], [grad]), [data, weights])[0])
