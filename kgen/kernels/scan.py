"""The persistent scan template: a whole `kgen.scan` as one kernel (fusion rules S1 and E6).

Lowering hands it a scan whose body fits (kgen/lowering/scan_fit.py: what fits, and the
layout of its index variables). Each program owns BLOCK_B rows of the carries' leading axis
and keeps every carry in registers as a [BLOCK_B, tile] block (a [n] or [] carry: one row,
row 0), masked to its width; it loops over the steps inside the kernel, the length T a
kernel argument (a symbolic length compiles once), and computes the body's values at block
coordinates as the pointwise template computes its values: the op table's lowering of each
elementwise op, views as index expressions of the loads, the step's inputs loaded at xs[t].
A product v @ W with a loop-invariant W is a tl.dot of v's block with W's [K, tile] tile,
loaded each step (from L2 after the first) at the columns its readers want, with exact
float32 products (input_precision="ieee") as kgen's matmul computes them; a left operand
that is a sum of column pads (scan_fit.column_blocks: the gates' cotangents placed back
into one value) is one tl.dot per block with W's rows of that block, and a step output of
such blocks is stored block by block, so no block is moved in registers. Per step it
stores the step outputs at ys[t] and, when the graph reads it (the gradient does), the
carries before the step at history[t]; after the loop, the last carries. The rows never
meet, so programs need no synchronisation; with `reverse` t runs from T-1 down to 0.

Half-precision values are computed in float32 and rounded when stored.
"""
from __future__ import annotations

from kgen.ir import dtypes, indexing, shapes
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.lowering.scan_fit import column_blocks, stored_blocks, tile
from kgen.lowering.scan_fit import layout as scan_layout


def _widest(dims: dict) -> int:
    return tile(max(1, dims["w"]))


# Shared memory for a program's prefetched weights: sm_80 gives a block 163 KB, less room for
# the dots' staged operands (20 KB at the zoo's sizes).
SHARED_FOR_PREFETCH = 144 * 1024
# Registers a thread that a step's weight tiles may take before they are prefetched instead:
# about half of the 255 ptxas gives a thread (see `_stages`).
WEIGHT_REGISTERS = 128


def _program_weights(dims: dict, rows: int) -> int:
    """Bytes of loop-invariant operands one program reads at each step: the weights, and its
    `rows` rows of the operands with a row per carry row."""
    return dims["weights"] + rows * dims["row_weights"]


def _stages(dims: dict, rows: int, warps: int) -> int:
    """One stage, or two where a step's weight tiles would take more than WEIGHT_REGISTERS a
    thread (the LSTM cell's gradient at the zoo's H = 64: 136 on eight warps) and fit shared
    memory. With one, each step's weight loads wait in registers for their dots (ptxas,
    Triton 3.9, gives the LSTM gradient 255 registers and spills 8 B a thread for sm_90);
    with two, Triton's pipeliner fetches the next step's tiles into shared memory by
    cp.async while this step computes (they do not depend on the carry): 80 registers for
    sm_90 and 212 for sm_80, no spills, 156 KB of shared memory. The LSTM's forward (64
    registers of weights) stays at one: at two, ptxas caps it at 128 registers and spills."""
    weights = _program_weights(dims, rows)
    return 2 if weights / (4 * 32 * warps) > WEIGHT_REGISTERS and weights <= SHARED_FOR_PREFETCH else 1


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """On the interpreter, every row in one program (as few as a [BLOCK_B, W] block of
    INTERPRETER_MAX_BLOCK elements allows: its cost is per op and program, nearly whatever
    the block's size), holding the loop-invariant loads (HOLD_WEIGHTS). On a GPU, 16 rows
    per program: a recurrence is latency-bound, so many small programs run its steps side
    by side; weights reloaded each step, from L2 after the first (held, the LSTM's w_hh
    blocks alone would take 128 registers a thread at H = 64). Eight warps: at the zoo's
    H = 64 on four, ptxas (Triton 3.9) spills 1,296 B a thread of the LSTM cell's forward for
    sm_90 and 4,232 B for sm_80; on eight, none. Stages: `_stages`."""
    if interpreted:
        return {"BLOCK_B": max(16, min(next_pow2(dims["b"]), INTERPRETER_MAX_BLOCK // _widest(dims))),
                "HOLD_WEIGHTS": 1}
    return {"BLOCK_B": 16, "HOLD_WEIGHTS": 0, "num_warps": 8, "num_stages": _stages(dims, 16, 8)}


def _space(dims: dict, tier: str, default: dict):
    """BLOCK_B rows per program (16 to 64, at most the rows' power of two) on 2 to 8 warps,
    with `_stages`'s stages."""
    cap = max(16, next_pow2(dims["b"]))
    blocks, warps = ((16, 32), (4, 8)) if tier == "quick" else ((16, 32, 64), (2, 4, 8))
    for block in blocks:
        for warp in warps:
            rows = min(block, cap)
            yield {"BLOCK_B": rows, "HOLD_WEIGHTS": 0, "num_warps": warp, "num_stages": _stages(dims, rows, warp)}


def _resources(config: dict, work) -> tuple:
    """Per step, the carries and about as many temporaries as [BLOCK_B, W] blocks (W the
    widest tile; eight in all) and, with products, a [W, W] weight tile, spread over the
    threads; a dot stages both operands in shared memory (float32: 4 bytes each), and two
    stages also the program's weights (`_stages`)."""
    dims = dict(work.dims)
    threads = 32 * config.get("num_warps", 4)
    width = _widest(dims)
    block = config["BLOCK_B"] * width
    weight = width * width if dims.get("dots") else 0
    shared = (block + weight) * 4 if weight else 0
    if config.get("num_stages", 1) > 1:
        shared += _program_weights(dims, config["BLOCK_B"])
    return 32 + (8 * block + weight) / threads, shared


def _steps(dims: dict, config: dict) -> int:
    """The time loop: one dependent step per element of the sequence."""
    return max(1, dims["t"])


def _rereads(dims: dict, config: dict) -> int:
    """Every program reads its loop-invariant operands again at each step after the first
    (from L2): the cost model's bytes beyond each buffer once."""
    programs = -(-max(1, dims["b"]) // config["BLOCK_B"])
    return programs * max(0, dims["t"] - 1) * _program_weights(dims, config["BLOCK_B"])


def _elements(config: dict, work) -> int:
    return config["BLOCK_B"] * _widest(dict(work.dims))


SCAN = register(Family("scan", _default, _space, _resources, steps=_steps, elements=_elements, rereads=_rereads))


class ScanWriter(KernelWriter):
    """A KernelWriter that also knows the body's placeholders: a carry is its register block
    (at its own elements only, as scan_fit checked), a step input a load of xs at step t, a
    loop-invariant input the scan's operand; a product is a tl.dot with its weight tile."""

    def __init__(self, name: str, buffers: set, names: dict, root, layout):
        super().__init__(name, buffers, names)
        attrs = root.attrs
        body, k, m = attrs["body"], attrs["carries"], attrs["xs"]
        self.layout = layout
        self.carry_var = {}  # carry placeholder -> its register variable
        self.step_input = dict(zip(body.inputs[k:k + m], root.inputs[k:k + m]))
        self.closure = dict(zip(body.inputs[k + m:], root.inputs[k + m:]))
        self.carries = body.inputs[:k]
        self.hold = self.constexpr("HOLD_WEIGHTS")
        self._masks = {}  # the parts of a mask -> its variable (`mask_var`)
        self._operands = {}  # (a dot's left operand, its width) -> its masked block, once a step

    def mask_var(self, parts: list) -> str:
        """The conjunction of mask variables `parts` as one variable, made once before the
        time loop (the loop body then holds no mask arithmetic: on Triton's interpreter each
        `&` is a NumPy call per step and program)."""
        if len(parts) < 2:
            return parts[0] if parts else None
        key = tuple(parts)
        if key not in self._masks:
            self._masks[key] = self.fresh("mask")
            line = f"{self._masks[key]} = {' & '.join(parts)}"
            self.hoist(line) if self.loop is not None else self.emit(line)
        return self._masks[key]

    def mask_of(self, expr) -> str:
        """The lanes where an index expression stays inside its value: each index variable
        below its extent (rows below R, columns below their width)."""
        used = indexing.index_vars(expr)
        layout, parts = self.layout, []
        if layout.rb in used:
            parts.append("rmask")
        parts += [f"m{w}" for w, v in sorted(layout.cols.items()) if v in used]
        parts += [f"mk{d}" for d, v in sorted(layout.ks.items()) if v in used]
        return self.mask_var(parts)

    def row_mask(self, width: int) -> str:
        """The mask of a [BLOCK_B, tile(width)] block of `width` columns."""
        return "rmask" if width == 1 else self.mask_var(["rmask", f"m{width}"])

    def load(self, node, coords, mask):
        offset = indexing.flat_index(coords, node.shape)
        mask = self.mask_of(offset)
        if self.loop is None or self.layout.t in indexing.index_vars(offset) or not self._varies(offset) \
                or self.guard is not None:
            return super().load(node, coords, mask)
        return self._held(node, offset, mask)

    def _held(self, node, offset, mask: str) -> str:
        """A load in the time loop that is the same at every step (a block of a weight, a
        bias). With HOLD_WEIGHTS 1 it is loaded once, before the loop, and held; with 0,
        loaded at each step. The interpreter holds (a load is a NumPy gather per step and
        program); a GPU reloads, from L2 after the first step (see `_default`)."""
        load = self.load_text(node, f"{self.input_param(node)} + {self.index(offset)}", mask)
        kept, var = self.fresh("w"), self.fresh("x")
        self.hoist(f"if {self.hold}:", f"    {kept} = {load}  # {self.name_of(node)}, held")
        self.emit(f"if {self.hold}:")
        self.emit(f"    {var} = {kept}")
        self.emit("else:")
        self.emit(f"    {var} = {load}", self.name_of(node))
        return var

    def _compute(self, node, coords):
        if node in self.carry_var:
            return self.carry_var[node]  # scan_fit checked it is read at its own elements
        if node in self.step_input:
            return self.value(self.step_input[node], (self.layout.t,) + tuple(coords))
        if node in self.closure:
            return self.value(self.closure[node], coords)
        if node.opdef.kind == "template":  # a product with a loop-invariant weight (scan_fit)
            return self._product(node, coords)
        return super()._compute(node, coords)

    def _product(self, node, coords) -> str:
        layout = self.layout
        _, _, depth, lhs, weight = node.opdef.gemm(node)
        row, column = coords
        self.computed.append(node)
        note = self.note(node)
        terms = []
        for offset, size, values in column_blocks(lhs) or [(0, depth, [lhs])]:  # block @ W[its rows]
            if size == 1:  # an outer product
                v = " + ".join(self.value(value, (row, 0)) for value in values)
                terms.append(self.assign(f"({v}) * {self.value(weight, (offset, column))}", "d", note))
                continue
            inner = layout.col(size)
            v = " + ".join(self.value(value, (row, inner)) for value in values)
            if (v, size) not in self._operands:  # nothing from the pad lanes
                self._operands[(v, size)] = self.assign(f"tl.where({self.row_mask(size)}, {v}, 0.0)", "a", note)
            v = self._operands[(v, size)]
            w = self.value(weight, (offset + layout.krow(size), column))
            # The product is already zero outside rows and columns (both operands are masked), so
            # this tl.where changes no value. It is there for LLVM: without it, sm_90's SLP
            # vectorizer (which Triton runs on sm_90, not on sm_80) aborts the whole process on
            # the LSTM cell's step (four per-gate dots, a tanh of exps on one of them) with
            # `SLPVectorizer.cpp: Assertion ... "must be scheduled at this point"` (triton 3.9).
            # The select between the dot and its readers keeps the vectorizer off that pattern;
            # it costs one select per element per dot. tests/kernels/test_scan_cells_aot.py.
            dot = f'tl.dot({v}, {w}, input_precision="ieee")'
            out_mask = self.mask_of(row + column)
            terms.append(self.assign(f"tl.where({out_mask}, {dot}, 0.0)" if out_mask else dot, "d", note))
        return terms[0] if len(terms) == 1 else self.assign(" + ".join(terms), "d", note)


def _names(root, graph_names: dict) -> dict:
    """The graph's names, and the body's as `<scan> body %3` (the body's values are computed here)."""
    scan = graph_names.get(root, "scan")
    body = root.attrs["body"].names()
    return {**graph_names, **{n: f"{scan} body {name}" for n, name in body.items()}}


@template("persistent_scan")
def emit_persistent_scan(name: str, root, written: set, names: dict, epilogue=(), results=()) -> KernelSource:
    assert not epilogue, "persistent_scan takes no epilogue (its op table entry says so)"
    results = list(results) or [root]
    attrs = root.attrs
    body, k, reverse = attrs["body"], attrs["carries"], attrs["reverse"]
    layout = scan_layout(root)  # the index variables and widths of the body, as scan_fit walked it
    w = ScanWriter(name, written - set(results), _names(root, names), root, layout)
    bb = w.constexpr("BLOCK_B")
    rows, steps = w.int_param("R", layout.rows), w.int_param("T", layout.length)
    w.lanes = w.block_vars = (layout.rb,) + tuple(layout.cols.values()) + tuple(layout.ks.values())
    w.emit(f"rb = (tl.program_id(0) * {bb} + tl.arange(0, {bb}))[:, None]")
    w.emit(f"rmask = rb < {rows}")
    for width in sorted(layout.cols):
        w.emit(f"c{width} = tl.arange(0, {tile(width)})[None, :]")
        w.emit(f"m{width} = c{width} < {width}")
    for depth in sorted(layout.ks):
        w.emit(f"k{depth} = tl.arange(0, {tile(depth)})[:, None]")
        w.emit(f"mk{depth} = k{depth} < {depth}")
    by_result = {tuple(r.attrs["result"]): r for r in results}
    note = w.note(root)

    def held(node) -> tuple:
        """(coords, mask, block shape) of a carry or step output."""
        coords = layout.coords(node)
        width = layout.width(node)
        return coords, w.row_mask(width), f"[{bb}, {1 if width == 1 else tile(width)}]"

    blocked = stored_blocks(body, k)  # step outputs stored block by block (scan_fit.column_blocks)

    def store(result, coords, value: str, mask: str, block: str, step=True) -> None:
        offset = indexing.flat_index(((layout.t,) if step else ()) + tuple(coords), result.shape)
        ptr = w.pointer(w.output_param(result), offset)
        if result.dtype in (dtypes.float16, dtypes.bfloat16):
            value = f"({value}).to(tl.{result.dtype.triton})"
        w.emit(f"tl.store(tl.broadcast_to({ptr}, {block}), {value}, mask={mask})")

    carry_names = []
    for i, place in enumerate(body.inputs[:k]):
        coords, mask, _ = held(place)
        init = w.value(root.inputs[i], coords)
        var = f"h{i}"
        w.emit(f"{var} = tl.where({mask}, {init}, 0.0)", f"{note} carry {i}")
        w.carry_var[place] = var
        carry_names.append(var)
    w.computed.append(root)
    w.open_loop(f"for s in range(0, {steps}):", (layout.t,))  # loads and stores take pointers made before it
    w.emit(f"t = {steps} - 1 - s" if reverse else "t = s")
    for i, place in enumerate(body.inputs[:k]):
        if ("history", i) in by_result:
            coords, mask, block = held(place)
            store(by_result[("history", i)], coords, carry_names[i], mask, block)
    new = []
    for j, out in enumerate(body.outputs):
        if j - k in blocked:
            if ("ys", j - k) in by_result:
                for offset, width, parts in blocked[j - k]:  # each block at its own columns
                    column = layout.col(width)
                    mask = w.row_mask(width)
                    block = f"[{bb}, {1 if width == 1 else tile(width)}]"
                    part = " + ".join(w.value(p, (layout.rb, column)) for p in parts)
                    value = w.assign(f"tl.where({mask}, {part}, 0.0)" if parts else
                                     f"tl.zeros({block}, tl.float32)", "y", note)  # columns no block covers
                    store(by_result[("ys", j - k)], (layout.rb, offset + column), value, mask, block)
            new.append(None)
            continue
        coords, mask, block = held(out)
        value = w.assign(f"tl.where({mask}, {w.value(out, coords)}, 0.0)", "y", note)
        if j >= k and ("ys", j - k) in by_result:
            store(by_result[("ys", j - k)], coords, value, mask, block)
        new.append(value)
    for i in range(k):
        w.emit(f"{carry_names[i]} = {new[i]}", f"{note} carry {i}")
    w.end_loop()
    for i, place in enumerate(body.inputs[:k]):
        if ("carry", i) in by_result:
            coords, mask, block = held(place)
            store(by_result[("carry", i)], coords, carry_names[i], mask, block, step=False)
    w.computed.extend(results)
    width = max([layout.width(o) for o in body.outputs] + list(layout.ks) + [1])
    closure = root.inputs[attrs["carries"] + attrs["xs"]:]
    weights = row_weights = 0  # bytes of the loop-invariant operands: shared by all rows, and per row
    for c in closure:
        itemsize = max(1, c.dtype.bits // 8)
        if c.shape and c.shape[0] == layout.rows:
            row_weights += shapes.numel(c.shape[1:]) * itemsize
        else:
            weights += shapes.numel(c.shape) * itemsize
    dims = {"b": layout.rows, "t": layout.length, "w": width, "weights": weights, "row_weights": row_weights,
            "dots": len(layout.ks)}
    operands = ", ".join(i.type_str() for i in root.inputs)
    summary = (f"kgen {name}: persistent scan of {operands}{', reversed' if reverse else ''}, writes "
               f"{', '.join(names.get(r, '?') for r in results)}. Each program keeps the carries of BLOCK_B rows "
               f"in registers over the T steps.")
    text = w.function(summary)
    return KernelSource(name, "scan", text, w.ordered_params(), [(layout.rows, "BLOCK_B")], tuple(results),
                        w.reads(), (results[0],), SCAN.name, dims)
