"""Whether a scan's body fits the persistent scan template (kgen/kernels/scan.py), and if not,
why: the recognition half of fusion rule S1 (kgen/lowering/loops.py applies it).

The template runs the whole loop in one kernel: each program owns BLOCK_B rows of the
carries' leading axis, keeps every carry in registers as a [BLOCK_B, tile] block, loops over
the steps inside the kernel (the length is a kernel argument, so a symbolic one is fine) and
computes the body's values at block coordinates, as the pointwise template computes its
values. What it takes:

- carries and step outputs of a float dtype, each [R, n] with one leading R (a size symbol or
  an int) shared by all of them, or all of them [n] or [] (one row); each n static, at most
  MAX_WIDTH;
- a body of elementwise ops (the op table's lowering, random ones excepted), views, scalar
  constants and iota, reading the carries at their own elements only (a carry lives in
  registers: a view that moves its elements, a slice or transpose of it, cannot be read), and
  anything from memory (the step's inputs, the loop-invariant values) at any elements;
- products v @ W (a 2-D GEMM, by the op table's `gemm`) of a per-row value v [R, K] with a
  loop-invariant W [K, M], K static: a tl.dot of v's block with W's [K, M] tile, which is
  read from memory (L2 after the first step) at whatever columns the product's readers want,
  so a column slice of a product is a slice of W; K and the columns read at most MAX_WIDTH
  (a [256, 256] tile: the LSTM's gate blocks at H = 256, which spill on a GPU as they did in
  the hand-written recurrence kernels this template replaced, but run);
- column blocks (`column_blocks`): a per-row value that is a sum of zero pads along its
  columns (a concatenation of column blocks, or the gradient of column slices: the gates'
  cotangents placed back into one [R, 4H] value) is never held whole. As a product's left
  operand it is the sum over its blocks of block @ W[the block's rows] (the dual of the
  column slice of a product), each block computed at its own columns; as a step output whose
  blocks do not overlap, each block is stored at its columns (the columns no block covers:
  zeros); a column slice of such a sum is the blocks inside its window. So the pads never move a carry's elements, and the gradient of a body that slices
  one product into gates fits as the body does.

Anything else (a reduction, a product of two per-step values, a scan in the body, an array
constant, a carry of three axes or of a symbolic width, ...) keeps the scan unrolled, and the
reason names the body's value. `layout` walks the body once, the same way the template will,
and returns the index variables and widths the template declares before its loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from kgen.ir import indexing, shapes
from kgen.ir.graph import topological_order
from kgen.ir.optable import Guarded

MAX_WIDTH = 256  # a carry's or product's columns one program holds in registers


def tile(width: int) -> int:
    """The block extent of `width` columns: its next power of two, at least tl.dot's 16."""
    return max(16, 1 << max(0, int(width) - 1).bit_length())


class Refusal(Exception):
    """The body does not fit the template; the message says why."""


@dataclass
class ScanLayout:
    """The index variables of one persistent scan kernel: rb (its rows), t (the step), a column
    variable per width (`c<w>`, [1, tile] lanes) and a K variable per product depth (`k<K>`,
    [tile, 1] lanes, a weight tile's rows)."""
    rows: object  # R: the carries' leading extent, or 1
    two_d: bool  # carries are [R, n]; else all [n] or []
    length: object
    rb: sympy.Symbol = None
    t: sympy.Symbol = None
    cols: dict = field(default_factory=dict)
    ks: dict = field(default_factory=dict)

    def __post_init__(self):
        self.rb = indexing.index_var("rb", self.rows)
        self.t = indexing.index_var("t", self.length)

    def col(self, width: int):
        if width == 1:
            return sympy.Integer(0)
        if width not in self.cols:
            self.cols[width] = indexing.index_var(f"c{width}", width)
        return self.cols[width]

    def krow(self, depth: int):
        if depth not in self.ks:
            self.ks[depth] = indexing.index_var(f"k{depth}", depth)
        return self.ks[depth]

    def coords(self, node) -> tuple:
        """The block coordinates at which a carry or step output of `node`'s shape is held."""
        if node.ndim == 0:
            return ()
        column = self.col(node.shape[-1])
        return (self.rb, column) if node.ndim == 2 else (column,)

    def width(self, node) -> int:
        return 1 if node.ndim == 0 else node.shape[-1]


def _pad_terms(node, offset: int, terms: list) -> None:
    """Appends (column offset, value) for each term of `node` as a sum of column pads."""
    if node.op == "add" and all(i.shape == node.shape for i in node.inputs):
        for i in node.inputs:
            _pad_terms(i, offset, terms)
        return
    a = node.inputs[0] if node.inputs else None
    columns = node.op in ("pad", "slice") and node.ndim == 2 and tuple(node.attrs["step"]) == (1, 1) and \
        shapes.dims_equal(a.shape[0], node.shape[0]) and isinstance(a.shape[1], int)
    if columns and node.op == "pad" and node.attrs["low"][0] == 0:
        _pad_terms(a, offset + node.attrs["low"][1], terms)
        return
    if columns and node.op == "slice" and node.attrs["start"][0] == 0:  # the blocks inside its window
        start, width, inner = node.attrs["start"][1], node.shape[1], []
        _pad_terms(a, 0, inner)
        if all(o >= start and o + v.shape[1] <= start + width or o + v.shape[1] <= start or o >= start + width
               for o, v in inner):
            terms.extend((offset + o - start, v) for o, v in inner if start <= o < start + width)
            return
    terms.append((offset, node))


def column_blocks(node, disjoint: bool = False) -> list:
    """`node` (a 2-D per-row value) as a sum of zero pads along its columns: [(offset, width,
    values)], values summing to the block at columns [offset, offset + width), in column
    order; [] when it is no such sum (one block, the whole value). With `disjoint` (a step
    output stored block by block), [] also when blocks overlap in part, and the columns no
    block covers are blocks without values (zeros)."""
    if node.ndim != 2 or not isinstance(node.shape[1], int):
        return []
    terms = []
    _pad_terms(node, 0, terms)
    groups = {}
    for offset, value in terms:
        groups.setdefault((offset, value.shape[1]), []).append(value)
    if list(groups) == [(0, node.shape[1])]:
        return []
    blocks = [(offset, width, values) for (offset, width), values in sorted(groups.items())]
    if not disjoint:
        return blocks
    placed, end = [], 0
    for offset, width, values in blocks:
        if offset < end:
            return []
        if offset > end:
            placed.append((end, offset - end, []))
        placed.append((offset, width, values))
        end = offset + width
    if end < node.shape[1]:
        placed.append((end, node.shape[1] - end, []))
    return placed


def stored_blocks(body, k: int) -> dict:
    """{j: column_blocks} of each 2-D step output j stored block by block (a sum of column
    pads whose blocks do not overlap, and no carry as well)."""
    carries = set(body.outputs[:k])
    out = {}
    for j, y in enumerate(body.outputs[k:]):
        blocks = column_blocks(y, disjoint=True) if y not in carries else []
        if blocks:
            out[j] = blocks
    return out


def _broadcast_coords(node, operand, coords) -> list:
    lead = len(coords) - operand.ndim
    return [0 if d == 1 and node.shape[lead + i] != 1 else coords[lead + i] for i, d in enumerate(operand.shape)]


class _Walk:
    """Visits the body's values at the coordinates the template computes them at, raising a
    Refusal at the first one it cannot."""

    def __init__(self, body, k: int, m: int, layout: ScanLayout):
        self.layout, self.names = layout, body.names()
        self.carries, self.xs = set(body.inputs[:k]), set(body.inputs[k:k + m])
        self.closure = set(body.inputs[k + m:])
        self.varying = set(self.carries | self.xs)
        for node in topological_order(body.outputs):
            if any(i in self.varying for i in node.inputs):
                self.varying.add(node)
        self.seen = set()

    def name(self, node) -> str:
        return f"the body's {self.names.get(node, node.op)}" + ("" if node.op == "input" else f" {node.op}")

    def visit(self, node, coords) -> None:
        coords = tuple(indexing.simplify(c) for c in coords)
        if (node, coords) in self.seen:
            return
        self.seen.add((node, coords))
        layout = self.layout
        if node in self.carries:
            if coords != tuple(indexing.simplify(c) for c in layout.coords(node)):  # rows of one: rb is 0
                raise Refusal(f"{self.name(node)} (a carry, held in registers) is read at other elements than "
                              f"its own (a view moving them: a slice, transpose or reshape)")
            return
        if node in self.xs or node in self.closure:
            return  # in memory: any elements
        kind = node.opdef.kind
        if kind == "source":
            if node.op == "constant" and node.shape != ():
                raise Refusal(f"{self.name(node)} is an array constant inside the body")
            return
        if kind == "elementwise":
            if node.opdef.lower == "philox":
                raise Refusal(f"{self.name(node)} draws random numbers, which the template does not per step")
            for i in node.inputs:
                self.visit(i, _broadcast_coords(node, i, coords))
            return
        if kind == "view":
            mapped = node.opdef.lower(node, list(coords))
            self.visit(node.inputs[0], mapped.coords if isinstance(mapped, Guarded) else mapped)
            return
        if kind == "template" and node.opdef.gemm and node.opdef.gemm(node) and node.ndim == 2:
            self.product(node, coords)
            return
        what = {"reduction": "a reduction", "loop": "a scan inside the body",
                "template": "a template op other than a 2-D product"}.get(kind, kind)
        raise Refusal(f"{self.name(node)} is {what}; the template computes elementwise ops, views and products "
                      f"with loop-invariant weights")

    def product(self, node, coords) -> None:
        layout = self.layout
        _, _, depth, lhs, weight = node.opdef.gemm(node)
        if node not in self.varying:
            raise Refusal(f"{self.name(node)} multiplies loop-invariant values inside the body")
        if weight in self.varying:
            raise Refusal(f"{self.name(node)} multiplies by a value that changes per step; the template's "
                          f"products take a loop-invariant right operand")
        row, column = coords
        if not layout.two_d or row != indexing.simplify(layout.rb):
            raise Refusal(f"{self.name(node)} is not over the carries' rows (it is {node.type_str()})")
        lanes = indexing.index_vars(column)
        if len(lanes & set(layout.cols.values())) != 1 or lanes - set(layout.cols.values()):
            raise Refusal(f"{self.name(node)} is read at columns {column}, not a block of lanes of one width")
        (width,) = [w for w, v in layout.cols.items() if v in lanes]
        if width > MAX_WIDTH:
            raise Refusal(f"{self.name(node)} is read at {width} columns: the template holds static widths of at "
                          f"most {MAX_WIDTH}")
        for offset, size, values in column_blocks(lhs) or [(0, depth, [lhs])]:  # a dot per block
            if not isinstance(size, int) or size > MAX_WIDTH:
                raise Refusal(f"{self.name(node)} sums over {size} terms{' in a block' if size != depth else ''}: "
                              f"the template holds static depths of at most {MAX_WIDTH}")
            for value in values:  # block @ W[offset:offset + size]
                self.visit(value, (layout.rb, 0 if size == 1 else layout.col(size)))
            self.visit(weight, (offset + (0 if size == 1 else layout.krow(size)), column))


def _values(body, k: int):
    """(what, node) of every carry and step output, for the reasons' wording."""
    outs = body.outputs
    return [(f"carry {i}", outs[i]) for i in range(k)] + [(f"step output {j}", y) for j, y in enumerate(outs[k:])]


def layout(node) -> ScanLayout:
    """The layout of the scan `node` (any result of its family) in the template, after walking
    its body; raises Refusal saying why the body does not fit."""
    attrs = node.attrs
    body, k, m = attrs["body"], attrs["carries"], attrs["xs"]
    values = _values(body, k)
    if not values:
        raise Refusal("the scan has no carries and no step outputs")
    blocked = stored_blocks(body, k)
    for j, (what, v) in enumerate(values):
        if not v.dtype.is_float:
            raise Refusal(f"{what} is {v.type_str()}; the template holds float carries and step outputs")
        if v.ndim > 2:
            raise Refusal(f"{what} is {v.type_str()}; the template holds [R, n], [n] or [] values")
        if v.ndim == 0:
            continue
        # a step output stored block by block is held a block at a time (the gates' cotangents)
        widths = [width for _, width, _ in blocked[j - k]] if j - k in blocked else [v.shape[-1]]
        if not isinstance(v.shape[-1], int) or max(widths) > MAX_WIDTH:
            held = "" if j - k not in blocked else f" (in column blocks of {', '.join(map(str, widths))})"
            raise Refusal(f"{what} is {v.type_str()}{held}; the template holds static widths of at most "
                          f"{MAX_WIDTH} in registers")
    two_d = [(w, v) for w, v in values if v.ndim == 2]
    first = two_d[0] if two_d else None
    for what, v in values:
        if first and (v.ndim != 2 or not shapes.dims_equal(v.shape[0], first[1].shape[0])):
            raise Refusal(f"{what} is {v.type_str()} and {first[0]} {first[1].type_str()}: the template runs the rows "
                          f"of one leading axis, every carry and step output [R, n] with the same R (or all of them "
                          f"[n] or [])")
    rows = first[1].shape[0] if first else 1
    result = ScanLayout(rows, bool(two_d), attrs["length"])
    walk = _Walk(body, k, m, result)
    for j, v in enumerate(body.outputs):
        if j - k in blocked:
            for offset, width, parts in blocked[j - k]:
                column = result.col(width)
                for part in parts:
                    walk.visit(part, (result.rb, column))
        else:
            walk.visit(v, result.coords(v))
    return result


def refusal(node) -> str:
    """Why the scan `node`'s body does not fit the template, or "" if it does."""
    try:
        layout(node)
    except Refusal as e:
        return str(e)
    return ""
