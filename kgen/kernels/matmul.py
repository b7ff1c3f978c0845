"""The matmul template: a BLOCK_M x BLOCK_N tile of the output per program (grid axis 2
walks the batch), accumulating in float32 over K in BLOCK_K steps.

Operands are read through their views (transposes, broadcast batch dims, reshapes) as
index expressions, so `a @ b.T` reads b in place. float32 operands use exact
("ieee") products, so results match the reference on every device; float16/bfloat16
operands go to tensor cores with float32 accumulation."""
from __future__ import annotations

from kgen.ir import dtypes, shapes
from kgen.kernels.reduction import row_body
from kgen.kernels.side import SideReduction
from kgen.kernels.splitk import GRID_AXIS, SplitK, splittable
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import flat_index, index_var, unflatten


def emit_tile_ids(w: KernelWriter, M: str, N: str, bm: str, bn: str) -> None:
    """`pid_m`, `pid_n`: the output tile of this program, in grouped order. Programs start
    in launch order (grid axis 0 fastest); GROUP_M row tiles at a time are walked down
    their rows, column by column, so programs running together share their A rows and B
    columns in L2 rather than each reading its own. GROUP_M = 1 walks the rows one by one."""
    group = w.constexpr("GROUP_M")
    w.emit(f"tiles_m, tiles_n = tl.cdiv({M}, {bm}), tl.cdiv({N}, {bn})")
    w.emit("launched = tl.program_id(0) + tl.program_id(1) * tiles_m")
    w.emit(f"first_m = launched // ({group} * tiles_n) * {group}")
    w.emit(f"group_rows = tl.minimum(tiles_m - first_m, {group})")
    w.emit(f"pid_m = first_m + launched % ({group} * tiles_n) % group_rows")
    w.emit(f"pid_n = launched % ({group} * tiles_n) // group_rows")
    w.emit(f"rm = (pid_m * {bm} + tl.arange(0, {bm}))[:, None]")
    w.emit(f"rn = (pid_n * {bn} + tl.arange(0, {bn}))[None, :]")


def _operand_coords(operand, batch_coords, rows, cols):
    lead = len(batch_coords) - (operand.ndim - 2)
    batch = [0 if d == 1 else batch_coords[lead + i] for i, d in enumerate(operand.shape[:-2])]
    return batch + [rows, cols]


def _tile(w: KernelWriter, operand, coords, mask: str) -> str:
    """An operand tile, zero outside `mask`: a masked load is so already; a value computed
    in place (a broadcast constant, say) is masked, which also gives it the tile's shape."""
    w.mask = mask
    value = w.value(operand, coords)
    if value in w.masked_loads:
        return value
    return w.assign(f"tl.where({mask}, {value}, 0.0)", "t")


@template("matmul")
def emit_matmul(name: str, root, written: set, names: dict, epilogue=(), side=None, rows=None) -> KernelSource:
    """`side`: (reduction, its epilogue, whether it is kept over the rows), a reduction over
    K computed in the loop (fusion rule E4, kgen.kernels.side). `rows`: (reductions, their
    epilogue), a row kernel over the tile's whole rows (fusion rule E5; BLOCK_N >= N)."""
    a, b = root.inputs
    batch = root.shape[:-2]
    m, n, k = root.shape[-2], root.shape[-1], a.shape[-1]
    bnumel = shapes.numel(batch)

    side_writes = ((side[0], *side[1]) if side else ()) + ((*rows[0], *rows[1]) if rows else ())
    w = KernelWriter(name, written - {root} - set(epilogue) - set(side_writes), names)
    bm, bn, bk = w.constexpr("BLOCK_M"), w.constexpr("BLOCK_N"), w.constexpr("BLOCK_K")
    M, N, K = w.int_param("M", m), w.int_param("N", n), w.int_param("K", k)
    bindex = index_var("bindex", bnumel)
    rm, rn = index_var("rm", m), index_var("rn", n)
    w.lanes = (rm, rn)
    ka, kb = index_var("ka", k), index_var("kb", k)
    w.block_vars = (rm, rn, ka, kb)  # bindex is one value per program
    batch_coords = unflatten(bindex, batch)

    split = SplitK(w, m, n, M, N, K, bm, bn, bk) if not batch and splittable(m, n, k, 1) else None
    if not split:  # (a split GEMM is unbatched: grid axis 2 walks its slices)
        w.emit("bindex = tl.program_id(2)")
    emit_tile_ids(w, M, N, bm, bn)
    if side:
        reduction, side_epilogue, over_rows = side
        side = SideReduction(w, reduction, side_epilogue, over_rows, rm if over_rows else rn,
                             ka if over_rows else kb, bm if over_rows else bn, bk, M if over_rows else N, K,
                             "pid_n" if over_rows else "pid_m")
        side.begin()
    w.emit(f"acc = tl.zeros([{bm}, {bn}], tl.float32)", w.note(root))
    w.emit(f"for koffset in {split.loop_range() if split else f'range(0, {K}, {bk})'}:")
    w.indent += 1
    w.emit(f"ka = koffset + tl.arange(0, {bk})[None, :]")
    w.emit(f"kb = koffset + tl.arange(0, {bk})[:, None]")
    tile_a = _tile(w, a, _operand_coords(a, batch_coords, rm, ka), f"(rm < {M}) & (ka < {K})")
    tile_b = _tile(w, b, _operand_coords(b, batch_coords, kb, rn), f"(kb < {K}) & (rn < {N})")
    if a.dtype in (dtypes.float16, dtypes.bfloat16):  # loads widen halves; dot wants them narrow
        tile_a, tile_b = f"{tile_a}.to(tl.{a.dtype.triton})", f"{tile_b}.to(tl.{b.dtype.triton})"
        w.emit(f"acc = tl.dot({tile_a}, {tile_b}, acc)", w.note(root))
    else:
        w.emit(f'acc = tl.dot({tile_a}, {tile_b}, acc, input_precision="ieee")', w.note(root))
    if side:
        side.accumulate()
    w.end_loop()
    if side:
        side.collapse()
    if split:
        split.gather("acc", root, side)
    w.computed.append(root)
    out_coords, out_mask = batch_coords + [rm, rn], f"(rm < {M}) & (rn < {N})"
    out_offset = flat_index(out_coords, root.shape)
    if root in written:
        w.store(root, out_offset, "acc", out_mask, f"[{bm}, {bn}]")
    w.provide(root, out_coords, "acc")
    w.epilogue(root, out_coords, out_offset, epilogue, out_mask, f"[{bm}, {bn}]")
    rows_out = ()
    if rows:
        reductions, rows_epilogue = rows
        row_body(w, reductions, rows_epilogue, written, [rm, rn], rm, m, N, out_mask, f"rm < {M}",
                 f"[{bm}, {bn}]", f"[{bm}, 1]")
        rows_out = tuple(r for r in reductions if r in written) + tuple(rows_epilogue)
    side_out = side.write(written) if side else ()
    summary = (f"kgen {name}: matmul {shapes.format_shape(a.shape)} @ {shapes.format_shape(b.shape)}"
               f" -> {shapes.format_shape(root.shape)}"
               + (f", then {len(epilogue)} elementwise output(s)" if epilogue else "")
               + (f"; with the {side.root.op} of {shapes.format_shape(side.source.shape)} over K" if side else "")
               + (", then a row kernel over its rows: " + ", ".join(r.op for r in rows[0]) if rows else "")
               + ("; K may split over SPLIT_K programs per tile (kgen.kernels.splitk)" if split else "") + ".")
    writes = ((root,) if root in written else ()) + tuple(epilogue) + rows_out + side_out
    return KernelSource(name, "matmul", w.function(summary), w.ordered_params(),
                        [(m, "BLOCK_M"), (n, "BLOCK_N"), GRID_AXIS if split else (bnumel, None)], writes, w.reads(),
                        tuple(w.computed_in_order()), "matmul_rows" if rows else "matmul", {"m": m, "n": n, "k": k})
