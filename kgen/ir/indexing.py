"""Index expressions: where a kernel reads each element, as simplified sympy expressions.

A kernel iterates over index variables (a flat `xindex`, a reduction `rindex`, matmul tile
rows and columns). The coordinates of a tensor are expressions of those variables; views
map coordinates (op table lowerings), and a load reads `base + flat_index(coords)`. Two
functions carry the arithmetic, as in TorchInductor:

    FloorDiv(a, d)            = a // d
    ModularIndexing(a, d, m)  = (a // d) % m

`simplify` knows each index variable's range and applies the rules that make the usual
cases plain, e.g. the coordinates of a row-major tensor read back row-major become `xindex`:

    x -> 0                                              when x < 1
    ModularIndexing(x, 1, n) -> x                       when 0 <= x < n
    ModularIndexing(x, d, m) -> FloorDiv(x, d)          when 0 <= x < d*m
    c*ModularIndexing(x, d, m) + c*m*ModularIndexing(x, d*m, k) -> c*ModularIndexing(x, d, m*k)
    c*ModularIndexing(x, d, m) + c*m*FloorDiv(x, d*m)          -> c*FloorDiv(x, d)
    FloorDiv(q*d*x + r, d) -> q*x + FloorDiv(r, d)
    ModularIndexing(q*d*m*x + r, d, m) -> ModularIndexing(r, d, m)

The functions mean Python's floor division and modulo, also of a negative base (a pad's or
a slice's offset makes one: x - 3); the rules that drop them hold only for a base that is
provably >= 0 (`provably_nonnegative`), and the kernel writer prints a base that may be
negative so that Triton, whose integer // and % truncate as C's do, computes the same.
"""
from __future__ import annotations

import functools
from typing import Sequence

import sympy

_BOUNDS: dict = {}  # index variable (a sympy Dummy) -> exclusive upper bound


def index_var(name: str, bound) -> sympy.Dummy:
    """A fresh index variable ranging over [0, bound)."""
    var = sympy.Dummy(name, integer=True, nonnegative=True)
    _BOUNDS[var] = sympy.sympify(bound)
    return var


def index_vars(expr) -> set:
    """The index variables (as made by `index_var`) that `expr` depends on."""
    return {s for s in sympy.sympify(expr).free_symbols if s in _BOUNDS}


class FloorDiv(sympy.Function):
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, base, divisor):
        if divisor == 1:
            return base
        if base == 0:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer:
            return sympy.Integer(int(base) // int(divisor))
        return None


class ModularIndexing(sympy.Function):
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, base, divisor, modulus):
        if modulus == 1 or base == 0:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer and modulus.is_Integer:
            return sympy.Integer((int(base) // int(divisor)) % int(modulus))
        return None


def strides(shape: Sequence) -> list:
    """Row-major strides of a contiguous tensor of `shape`."""
    out, step = [], sympy.Integer(1)
    for d in reversed(shape):
        out.append(step)
        step = step * d
    return out[::-1]


def flat_index(coords: Sequence, shape: Sequence) -> sympy.Expr:
    return simplify(sum((sympy.sympify(c) * s for c, s in zip(coords, strides(shape))), sympy.Integer(0)))


def unflatten(flat, shape: Sequence) -> list:
    """The coordinates in `shape` of the row-major position `flat`."""
    flat = simplify(sympy.sympify(flat))
    return [simplify(ModularIndexing(flat, s, d)) if d != 1 else sympy.Integer(0)
            for s, d in zip(strides(shape), shape)]


def _split(term):
    """A product as (the factors free of index variables, the rest): 3*N*FloorDiv(x, N)
    splits into (3*N, FloorDiv(x, N))."""
    fixed, varying = [], []
    for factor in sympy.Mul.make_args(term):
        (varying if factor.has(*_BOUNDS) else fixed).append(factor)
    return sympy.Mul(*fixed), sympy.Mul(*varying)


def upper_bound(expr):
    """An inclusive upper bound of a non-negative index expression, or None if unknown."""
    if expr.is_Integer:
        return expr
    if expr in _BOUNDS:
        return _BOUNDS[expr] - 1
    if isinstance(expr, ModularIndexing):
        return expr.args[2] - 1
    if isinstance(expr, FloorDiv):
        inner, div = upper_bound(expr.args[0]), expr.args[1]
        if inner is None:
            return None
        # (q*d + r) // d is q + r // d, and r // d <= -1 for a negative constant r: (3*N - 1) // N
        # is at most 2 (FloorDiv(-1, N) itself would stay unevaluated and the bound not compare)
        terms = sympy.Add.make_args(sympy.expand(inner))
        whole = [t for t in terms if _divides(div, t)]
        rest = sympy.Add(*[t for t in terms if t not in whole])
        if whole and rest.is_Integer and rest < 0:
            return sympy.Add(*[t / div for t in whole]) - 1
        return _simplify_atom(FloorDiv(inner, div))  # (3*N - 1) // 3 is N - 1: simplified, it compares
    if expr.is_Add:
        parts = [upper_bound(a) for a in expr.args]
        return None if any(p is None for p in parts) else sympy.Add(*parts)
    if expr.is_Mul:
        coeff, rest = _split(expr)
        if not coeff.is_positive:
            return None
        if rest == 1:
            return expr  # a product of sizes: constant within a launch
        inner = upper_bound(rest)
        return None if inner is None else coeff * inner
    if expr.is_Symbol and expr.is_positive:  # a size symbol
        return expr
    return None


def lower_bound(expr):
    """An inclusive lower bound of an index expression, or None if unknown. Index variables,
    ModularIndexing and sizes are non-negative; a pad's or slice's offset (x - 3) is not,
    and the rules and the printer must not treat such a base as one."""
    if expr.is_Integer:
        return expr
    if expr in _BOUNDS or isinstance(expr, ModularIndexing) or (expr.is_Symbol and expr.is_positive):
        return sympy.Integer(0)
    if isinstance(expr, FloorDiv):
        inner = lower_bound(expr.args[0])
        return None if inner is None else (sympy.Integer(0) if _is_nonnegative(inner) else None)
    if expr.is_Add:
        parts = [lower_bound(a) for a in expr.args]
        return None if any(p is None for p in parts) else sympy.Add(*parts)
    if expr.is_Mul:
        coeff, rest = _split(expr)
        if rest == 1:
            return expr if expr.is_nonnegative else None  # a product of sizes
        if coeff.is_positive:
            inner = lower_bound(rest)
            return None if inner is None else coeff * inner
        if coeff.is_negative:
            inner = upper_bound(rest)
            return None if inner is None else coeff * inner
    return None


def _is_nonnegative(bound) -> bool:
    return bool(sympy.simplify(bound).is_nonnegative)


@functools.lru_cache(maxsize=1 << 16)
def provably_nonnegative(expr) -> bool:
    """Whether `expr` is >= 0 at every value of its index variables and sizes: where it is
    not, floor division and modulo differ between Python (sympy) and Triton (C's)."""
    bound = lower_bound(expr)
    return bound is not None and _is_nonnegative(bound)


@functools.lru_cache(maxsize=1 << 16)
def _provably_below(expr, limit) -> bool:
    """expr <= ub(expr) < limit, decided by sympy for non-negative size symbols."""
    ub = upper_bound(expr)
    if ub is None:
        return False
    diff = sympy.simplify(sympy.sympify(limit) - ub - 1)
    return bool(diff.is_nonnegative)


def _divides(divisor, term) -> bool:
    """Whether `divisor` divides the index-free coefficient of `term` (sizes are integers)."""
    coeff, _ = _split(term)
    return bool(sympy.simplify(coeff / divisor).is_integer)


def _simplify_atom(atom):
    if isinstance(atom, ModularIndexing):
        base, div, mod = atom.args
        terms = sympy.Add.make_args(base)
        kept = [t for t in terms if not _divides(div * mod, t)]  # multiples of div*mod wrap away
        if len(kept) < len(terms):
            return simplify(ModularIndexing(sympy.Add(*kept), div, mod))
        if provably_nonnegative(base) and _provably_below(base, div * mod):
            return simplify(FloorDiv(base, div))
        return atom
    if isinstance(atom, FloorDiv):
        base, div = atom.args
        terms = sympy.Add.make_args(base)
        whole = [t for t in terms if _divides(div, t)]  # (q*d*t + r) // d = q*t + r // d
        if whole:
            rest = sympy.Add(*[t for t in terms if t not in whole])
            return simplify(sympy.Add(*[t / div for t in whole]) + FloorDiv(rest, div))
        if provably_nonnegative(base) and _provably_below(base, div):
            return sympy.Integer(0)
    return atom


def _merge_terms(expr):
    """Apply the two merge rules of the module docstring to a sum, until none applies."""
    terms = {}
    for term in sympy.Add.make_args(expr):
        coeff, atom = _split(term)
        terms[atom] = terms.get(atom, 0) + coeff
    changed = True
    while changed:
        changed = False
        for atom, coeff in list(terms.items()):
            if not isinstance(atom, ModularIndexing) or atom not in terms:
                continue
            base, div, mod = atom.args
            for partner in (ModularIndexing, FloorDiv):
                for other in list(terms):
                    if not isinstance(other, partner) or other.args[0] != base:
                        continue
                    if sympy.simplify(other.args[1] - div * mod) != 0:
                        continue
                    if sympy.simplify(terms[other] - coeff * mod) != 0:
                        continue
                    merged = (ModularIndexing(base, div, mod * other.args[2]) if partner is ModularIndexing
                              else FloorDiv(base, div))
                    del terms[atom], terms[other]
                    merged = _simplify_atom(merged)
                    terms[merged] = terms.get(merged, 0) + coeff
                    changed = True
                    break
                if changed:
                    break
            if changed:
                break
    return sympy.Add(*(c * a for a, c in terms.items()))


def simplify(expr):
    """Apply the rules of the module docstring bottom-up."""
    return _simplify(sympy.sympify(expr))


@functools.lru_cache(maxsize=1 << 16)  # kernels ask for the same expressions many times
def _simplify(expr):
    if expr.is_Atom:
        return sympy.Integer(0) if _BOUNDS.get(expr) == 1 else expr  # a variable over [0, 1)
    if isinstance(expr, (ModularIndexing, FloorDiv)):
        return _simplify_atom(type(expr)(*(simplify(a) for a in expr.args)))
    expr = expr.func(*(simplify(a) for a in expr.args))
    expr = sympy.expand(expr) if expr.is_Add or expr.is_Mul else expr
    return _merge_terms(expr) if expr.is_Add else expr
