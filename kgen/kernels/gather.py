"""The gather templates: embedding (rows of a table read by index) and its gradient (rows of
g added into the table's rows by index). One lane per element of the gathered value
[*S, D], XBLOCK lanes per program.

    embedding       out[s, d] = weight[indices[s], d]
    embedding_grad  out[v, d] = sum of g[s, d] over indices[s] == v (not at padding_idx)

The gather is a template, not an indirect load in the pointwise writer: the writer's loads
are affine index expressions of the lanes (kgen.ir.indexing), which a data-dependent row is
not, and a template of its own keeps that so. It is epilogue-capable (fusion rule E1), so a
following scale, add (positions) or activation runs in the same kernel.

The scatter-add uses atomics: each lane adds its element of g into a float32 workspace
(tl.atomic_add), which is scratch the launcher keeps between launches, zero at first; the
program that finishes last (counted by an atomic counter, as split-K's tiles are, see
kgen.kernels.splitk) copies the workspace into the output, which may be half precision, and
zeroes it again for the next launch. So the output needs no zeroing kernel, and one launch
does all. The cost: on a GPU the additions into one row happen in whatever order the
programs run, so float sums over repeated indices are not bit-for-bit reproducible from run
to run (the interpreter runs programs in order, and is); and the last program copies all
V*D elements alone, which a table of millions of elements would feel (not measured: this
machine has no GPU). The deterministic alternatives cost more by construction: a gather
formulation (each output row scans every index) does V times the work, a one-hot matmul V
times the flops with an [*S, V] operand in memory, and a sort of the indices by row needs
a sort kgen does not have.

An index outside [0, V) reads a zero row and adds nowhere (masked), as the op table's
reference defines it: no lane reads or writes outside the table.
"""
from __future__ import annotations

from kgen.ir import dtypes, indexing, shapes
from kgen.ir.indexing import FloorDiv, ModularIndexing, index_var, unflatten
from kgen.kernels.conv import define
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.pointwise import lanes_resources, lanes_space
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """One lane per element, an index load and a row load each: pointwise's blocks."""
    x = dims["x"]
    if interpreted:
        return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
    return {"XBLOCK": min(max(next_pow2(x), 128), 1024), "num_warps": 4}


GATHER = register(Family("gather", _default, lanes_space, lanes_resources))


def _lanes(w: KernelWriter, numel):
    """Open the kernel: XBLOCK lanes of xindex over `numel` elements, masked by xmask."""
    xindex = index_var("xindex", numel)
    w.lanes = (xindex,)
    block = w.constexpr("XBLOCK")
    w.emit(f"xindex = tl.program_id(0) * {block} + tl.arange(0, {block})")
    w.emit(f"xmask = xindex < {w.int_param('xnumel', numel)}")  # the grid may hold one lane more
    w.mask = "xmask"
    return xindex, block


def _row_index(w: KernelWriter, indices, xindex, width: int, rows: int, block: str, padding=None):
    """Load the index of this lane's row (xindex // width) and define `ok` (xmask, the index
    inside [0, rows), and not `padding`) and `erow`, the index where ok holds and 0 elsewhere,
    as an index variable over [0, rows)."""
    row = define(w, "row", FloorDiv(xindex, width), shapes.numel(indices.shape), "xindex")
    index = w.value(indices, unflatten(row, indices.shape))
    if index in w.uniform:  # one index for every lane (a scalar index): a block, for the masks
        index = w.assign(f"tl.zeros([{block}], tl.int32) + {index}", "u")
    conditions = [f"({index} >= 0)", f"({index} < {rows})"] + ([f"({index} != {padding})"] if padding is not None else [])
    w.emit(f"ok = xmask & {' & '.join(conditions)}")
    w.emit(f"erow = tl.where(ok, {index}, 0)")
    return index_var("erow", rows)


def _describe(name: str, root) -> str:
    operands = " and ".join(i.type_str() for i in root.inputs)
    return f"kgen {name}: {root.op} of {operands} -> {root.type_str()}."


@template("embedding")
def emit_embedding(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    indices, weight = root.inputs
    rows, width = weight.shape
    w = KernelWriter(name, written - {root} - set(epilogue), names)
    numel = shapes.numel(root.shape)
    xindex, block = _lanes(w, numel)
    col = define(w, "col", ModularIndexing(xindex, 1, width), width, "xindex")
    erow = _row_index(w, indices, xindex, width, rows, block)
    w.mask = "ok"  # rows outside the table load nothing and read 0.0
    value = w.value(weight, [erow, col])
    if value in w.uniform:
        value = w.assign(f"tl.zeros([{block}], tl.float32) + {value}", "u")
    w.emit(f"picked = tl.where(ok, {value}, 0.0)", w.note(root))
    w.computed.append(root)
    if root in written:
        w.store(root, xindex, "picked", "xmask", f"[{block}]")
    coords = unflatten(xindex, root.shape)
    w.provide(root, coords, "picked")
    w.epilogue(root, coords, xindex, tuple(epilogue), "xmask", f"[{block}]")
    summary = _describe(name, root) + (f" Then {len(epilogue)} elementwise output(s)." if epilogue else "")
    writes = ((root,) if root in written else ()) + tuple(epilogue)
    return KernelSource(name, "gather", w.function(summary), w.ordered_params(), [(numel, "XBLOCK")],
                        writes, w.reads(), tuple(w.computed_in_order()), GATHER.name, {"x": numel})


@template("embedding_grad")
def emit_embedding_grad(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    assert not epilogue, "embedding_grad takes no epilogue (its op table entry says so)"
    g, indices = root.inputs
    rows, width = root.shape
    w = KernelWriter(name, written - {root}, names)
    numel = shapes.numel(g.shape)
    # the grid has one lane more than g has elements: an empty g still runs the one program
    # that writes the (zero) result
    xindex, block = _lanes(w, numel)
    col = define(w, "col", ModularIndexing(xindex, 1, width), width, "xindex")
    erow = _row_index(w, indices, xindex, width, rows, block, root.attrs.get("padding_idx"))
    value = w.value(g, unflatten(xindex, g.shape))
    if value in w.uniform:
        value = w.assign(f"tl.zeros([{block}], tl.float32) + {value}", "u")
    size = rows * width
    acc = w.scratch_param("scatter_ws", dtypes.float32, size, zeroed=True)
    counter = w.scratch_param("scatter_counter", dtypes.int32, 1, zeroed=True)
    note = w.note(root)
    target = indexing.simplify(erow * width + col)
    where = f"{acc} + {w.index(target)}"
    if not indexing.index_vars(target):  # a table of one element: one address, spread over the lanes
        where = f"tl.broadcast_to({where}, [{block}])"
    w.emit(f"tl.atomic_add({where}, {value}, mask=ok)", note)
    w.emit("tl.debug_barrier()  # every lane's add issued before the count")
    w.emit(f'done = tl.atomic_add({counter}, 1, sem="acq_rel", scope="gpu")')
    programs = f"tl.cdiv({w.int_param('xnumel', numel)} + 1, {block})"  # not tl.num_programs: a combo's grid is larger
    w.emit(f"if done == {programs} - 1:  # the last program: copy the sums out, zero the workspace")
    w.indent += 1
    w.emit(f"for start in range(0, {size}, {block}):")
    w.indent += 1
    w.emit(f"at = start + tl.arange(0, {block})")
    w.emit(f"inside = at < {size}")
    w.emit(f"total = tl.load({acc} + at, mask=inside, other=0.0, volatile=True)", note)
    w.computed.append(root)
    out = index_var("at", size)
    w.lanes = (out,)
    w.store(root, out, "total", "inside", f"[{block}]")
    w.emit(f"tl.store({acc} + at, tl.zeros([{block}], tl.float32), mask=inside)")
    w.indent -= 1
    w.emit(f"tl.atomic_xchg({counter}, 0)  # ready for the next launch")
    w.indent -= 1
    return KernelSource(name, "gather", w.function(_describe(name, root)), w.ordered_params(),
                        [(numel + 1, "XBLOCK")], (root,), w.reads(), tuple(w.computed_in_order()), GATHER.name,
                        {"x": numel + 1})
