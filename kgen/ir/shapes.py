"""Shapes whose dimensions are ints or sympy expressions of named sizes (the batch `N`).

A symbolic size is a positive-integer sympy Symbol, so `N*784` and `784*N` are the same
dimension and a compiled graph serves every value of `N`.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence, Union

import sympy

from kgen.errors import ShapeError

Dim = Union[int, sympy.Expr]
Shape = tuple  # tuple[Dim, ...]


def size_symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, positive=True)


def as_dim(d) -> Dim:
    """An int or sympy dimension from an int, a name ("N") or a sympy expression."""
    if isinstance(d, bool):
        raise ShapeError(f"a dimension must be an int or a size name, got {d!r}")
    if isinstance(d, int):
        if d < 0:
            raise ShapeError(f"a dimension must be >= 0, got {d}")
        return d
    if isinstance(d, str):
        if not d.isidentifier():
            raise ShapeError(f"a symbolic dimension must be a name like 'N', got {d!r}")
        return size_symbol(d)
    if isinstance(d, sympy.Basic):
        d = sympy.sympify(d)
        return int(d) if d.is_Integer else d
    if hasattr(d, "__index__"):
        return as_dim(int(d))
    raise ShapeError(f"a dimension must be an int or a size name, got {d!r}")


def as_shape(shape: Iterable) -> Shape:
    if isinstance(shape, (int, str)):
        shape = (shape,)
    return tuple(as_dim(d) for d in shape)


@functools.lru_cache(maxsize=8192)
def dims_equal(a: Dim, b: Dim) -> bool:
    """Whether two dims are equal for every binding of their symbols (cached: fusion asks
    the same questions many times, and sympy's simplify is slow)."""
    if a == b:
        return True
    if isinstance(a, int) and isinstance(b, int):
        return False
    return sympy.simplify(sympy.sympify(a) - b) == 0


def numel(shape: Sequence[Dim]) -> Dim:
    n = sympy.Integer(1)
    for d in shape:
        n = n * d
    return int(n) if n.is_Integer else n


def is_static(shape: Sequence[Dim]) -> bool:
    return all(isinstance(d, int) for d in shape)


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting of shapes with symbolic dims; a symbol only meets 1 or itself."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        chosen: Dim = 1
        for d in dims:
            if d == 1:
                continue
            if chosen == 1:
                chosen = d
            elif not dims_equal(chosen, d):
                shown = " and ".join(format_shape(s) for s in shapes)
                raise ShapeError(f"shapes {shown} do not broadcast: axis {i - rank} has "
                                 f"sizes {format_dim(chosen)} and {format_dim(d)}")
        out.append(chosen)
    return tuple(out)


def normalize_axes(axis, rank: int, what: str = "axis") -> tuple:
    """Axes as a sorted tuple of non-negative ints; None means every axis."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, (list, tuple)):
        axes = tuple(axis)
    elif isinstance(axis, int) and not isinstance(axis, bool):
        axes = (axis,)
    else:
        raise ShapeError(f"{what} must be an int or a tuple of ints, got {axis!r}")
    if rank == 0:  # a scalar has one axis to name, 0 or -1, as in torch
        if any(a not in (0, -1) for a in axes):
            raise ShapeError(f"{what} {axis!r} is out of range for a tensor of rank 0")
        return ()
    out = [check_axis(a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise ShapeError(f"{what} {axis!r} repeats an axis")
    return tuple(sorted(out))


def check_axis(axis, rank: int, what: str = "axis") -> int:
    """`axis` as a non-negative int; ShapeError unless -rank <= axis < rank."""
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ShapeError(f"{what} must be an int, got {axis!r}")
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank


def format_dim(d: Dim) -> str:
    return str(d).replace(" ", "")


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ",".join(format_dim(d) for d in shape) + "]"


def evaluate(expr: Dim, bindings: dict) -> int:
    """The int value of a dimension once its symbols are bound (symbol name -> int)."""
    if isinstance(expr, int):
        return expr
    value = sympy.sympify(expr).subs({size_symbol(k): v for k, v in bindings.items()})
    if not value.is_Integer:
        raise ShapeError(f"size {expr} is unbound: {sorted(map(str, value.free_symbols))} not given")
    return int(value)


def symbols_of(shape: Sequence[Dim]) -> set:
    out = set()
    for d in shape:
        if not isinstance(d, int):
            out |= {s.name for s in d.free_symbols}
    return out


def static_numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def bind_shape(declared: Sequence[Dim], actual: Sequence[int], bindings: dict, what: str) -> None:
    """Check `actual` against `declared`, binding its size symbols into `bindings`
    (name -> int). Raises ShapeError naming `what` on a mismatch."""
    if len(declared) != len(actual):
        raise ShapeError(f"{what}: expected shape {format_shape(declared)} (rank {len(declared)}), "
                         f"got {list(actual)} (rank {len(actual)})")
    for axis, (d, a) in enumerate(zip(declared, actual)):
        if isinstance(d, int):
            if d != a:
                raise ShapeError(f"{what}: expected shape {format_shape(declared)}, got {list(actual)} "
                                 f"(axis {axis} is {a}, expected {d})")
        elif isinstance(d, sympy.Symbol):
            if d.name in bindings and bindings[d.name] != a:
                raise ShapeError(f"{what}: axis {axis} is {a}, but {d.name} = {bindings[d.name]} "
                                 f"from an earlier input (expected shape {format_shape(declared)})")
            bindings[d.name] = a
    for axis, (d, a) in enumerate(zip(declared, actual)):  # expressions such as 2*N
        if isinstance(d, (int, sympy.Symbol)):
            continue
        unbound = [s for s in d.free_symbols if s.name not in bindings]
        if len(unbound) == 1:  # the first input to show the size: solve for it
            solutions = [v for v in sympy.solve(sympy.Eq(d.subs({size_symbol(k): v for k, v in bindings.items()}), a),
                                                unbound[0]) if v.is_Integer and v > 0]
            if not solutions:
                raise ShapeError(f"{what}: axis {axis} is {a}, which {format_dim(d)} cannot equal "
                                 f"(expected shape {format_shape(declared)})")
            bindings[unbound[0].name] = int(solutions[0])
        elif unbound:
            raise ShapeError(f"{what}: axis {axis} is {format_dim(d)}, whose sizes "
                             f"{sorted(s.name for s in unbound)} no input gives alone")
        if evaluate(d, bindings) != a:
            raise ShapeError(f"{what}: axis {axis} is {a}, expected {format_dim(d)} = {evaluate(d, bindings)}")
