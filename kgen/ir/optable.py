"""The op table: every primitive is one `OpDef`, registered once.

An entry holds everything the pipeline needs to know about an op, side by side:
- `infer(inputs, attrs) -> (dtype, shape)`: its dtype and shape rule (raises KgenError);
- `reference(node, arrays, shape) -> ndarray`: its NumPy meaning (`shape` is the output's
  concrete shape), used by the reference interpreter; with `sized_reference`, it also takes
  the size symbols' values (a constant 1/N; a scan, whose body's shapes hold them);
- `vjp(g, node) -> tuple`: its gradient rule, one cotangent (or None for zero) per input,
  written with kgen.ops so gradients are IR like everything else;
- `lower`: how codegen computes it. For an elementwise op, a function of the operands'
  Triton expressions returning one (or a list of steps, each naming the earlier steps'
  values {0}, {1}, ..., the last being the op's value); for a reduction, a `Reduction`; for a view, a function
  mapping output coordinates to input coordinates (or a `Guarded` mapping, for pad); for a
  "template" op (matmul, conv, pooling: a kernel of its own that reads its operands from
  memory), the name of its template in kgen.kernels.templates;
- `flops(node) -> size expression`: its arithmetic, for `kgen stats` and the cost model.
  Left None, the kind decides: an elementwise op costs one per output element, a
  reduction one per input element, a view or source nothing;
- `gemm(node)`, for a template that multiplies with tl.dot: (M, N, K, A operand,
  B operand) of the one GEMM its kernel computes (fusion rule E4 and the conv templates
  read them), or None for a node that is not one GEMM (a batched matmul). Being set is
  what marks an op's kernel as a dot kernel (half-precision operands use tensor cores);
- `row_epilogue`: the op's GEMM tiles are its result's rows, so a row kernel over them can
  run in its epilogue (fusion rule E5);
- `results`: a template op whose node is one of several results of one kernel
  (`attrs["result"]`): the nodes of the op with the same inputs and other attributes are
  one kernel's outputs (fusion rule E6; the persistent scan's carries, step outputs and
  history);
- `joint_vjp(pairs) -> tuple`: the gradient rule of an op whose nodes are sibling results
  of one computation (`attrs["result"]`; a scan's carries, step outputs and history), given
  (g, node) for every sibling with a cotangent at once: kgen.grad gathers them (the family
  is `family(node)`) and calls it once, so the siblings share one backward (one reverse
  scan, not one per result);
- `vendor(node, operands) -> torch.Tensor`: torch's library op computing the same value
  from torch operands (cuBLAS, cuDNN, ...), which the tuner times beside the kernel.

Bytes are not a per-op fact: every op reads each operand once and writes its result once
(kgen.lowering.stats counts them from the kernels' buffers).

The entries themselves live in ops_*.py next to this file, one block per op: adding an op
is one block there, plus a template in kgen/kernels/ if it is a template op, and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from kgen.errors import UnknownOpError
from kgen.ir import shapes

KINDS = ("source", "elementwise", "reduction", "view", "template", "loop")  # loop: scan (ops_loop.py)


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
    flops: Optional[Callable] = None  # node -> size expression; None: by kind (see the module docstring)
    gemm: Optional[Callable] = None  # node -> (M, N, K, A, B) or None; set only for tl.dot templates
    row_epilogue: bool = False  # a row kernel over the result's rows can run in its epilogue (E5)
    vendor: Optional[Callable] = None  # (node, torch operands) -> torch's library op's result
    sized_reference: bool = False  # reference(node, arrays, shape, sizes): it reads the size symbols' values
    results: bool = False  # one of several results of one kernel (attrs["result"]): fusion rule E6
    joint_vjp: Optional[Callable] = None  # [(g, sibling result)] -> cotangents: one backward per family

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    def flops_of(self, node):
        """The flops of `node` (an op of this entry) as a size expression."""
        if self.flops is not None:
            return self.flops(node)
        if self.kind == "elementwise":
            return shapes.numel(node.shape)
        if self.kind == "reduction":
            return shapes.numel(node.inputs[0].shape)
        return 0


def family(node) -> tuple:
    """The key of the sibling results `node` is one of (`attrs["result"]`): the op, the inputs
    and every other attribute (hashable; a body graph compares by identity)."""
    return (node.op, tuple(i.id for i in node.inputs), tuple(sorted((k, v) for k, v in node.attrs.items()
                                                                     if k != "result")))


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
