"""The op table: every primitive is one `OpDef`, registered once.

An entry holds everything the pipeline needs to know about an op, side by side:
- `infer(inputs, attrs) -> (dtype, shape)`: its dtype and shape rule (raises KgenError);
- `reference(node, arrays, shape) -> ndarray`: its NumPy meaning (`shape` is the output's
  concrete shape), used by the reference interpreter;
- `vjp(g, node) -> tuple`: its gradient rule, one cotangent (or None for zero) per input,
  written with kgen.ops so gradients are IR like everything else;
- `lower`: how codegen computes it. For an elementwise op, a function of the operands'
  Triton expressions returning one; for a reduction, a `Reduction`; for a view, a function
  mapping output coordinates to input coordinates (or a `Guarded` mapping, for pad); for a
  "template" op (matmul, conv, pooling: a kernel of its own that reads its operands from
  memory), the name of its template in kgen.kernels.templates.

The entries themselves live in ops_*.py next to this file, one block per op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from kgen.errors import UnknownOpError

KINDS = ("source", "elementwise", "reduction", "view", "template")


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str
    infer: Callable
    reference: Callable
    vjp: Optional[Callable]  # None: the op passes no gradient (comparisons, sources)
    lower: Any = None
    arity: Optional[int] = None  # None: any number of inputs
    epilogue: bool = False  # a template whose kernel can apply elementwise consumers to its result

    def __post_init__(self):
        assert self.kind in KINDS, self.kind


@dataclass(frozen=True)
class Reduction:
    """How a reduction op lowers: its start value per dtype, its combine (Triton source),
    and the tl reduction that collapses the accumulator block."""
    init: dict  # dtype name -> start value (Triton source)
    combine: str  # format string over {acc} and {x}
    finish: str  # tl.<finish>(acc, axis=...) collapses the reduced block
    scale_by_count: bool = False  # mean: divide the sum by the reduced element count
    nan_aware_finish: bool = False  # tl.<finish> may drop NaN: the template restores it


@dataclass(frozen=True)
class Guarded:
    """A view's mapping that holds only where its conditions do, the view being zero
    elsewhere (pad). A condition (expr, low, step, count) holds where low <= expr <
    low + step*(count-1) + 1 and expr - low is a multiple of step."""
    coords: list
    conditions: list


TABLE: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in TABLE:
        raise ValueError(f"op {opdef.name!r} is registered twice")
    TABLE[opdef.name] = opdef
    return opdef


def lookup(name: str) -> OpDef:
    try:
        return TABLE[name]
    except KeyError:
        known = ", ".join(sorted(TABLE))
        raise UnknownOpError(f"unknown op {name!r}: the op table has {known}") from None
