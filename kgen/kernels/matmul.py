"""The matmul template: a BLOCK_M x BLOCK_N tile of the output per program (grid axis 2
walks the batch), accumulating in float32 over K in BLOCK_K steps.

Operands are read through their views (transposes, broadcast batch dims, reshapes) as
index expressions, so `a @ b.T` reads b in place. float32 operands use exact
("ieee") products, so results match the reference on every device; float16/bfloat16
operands go to tensor cores with float32 accumulation."""
from __future__ import annotations

import itertools

from kgen.ir import dtypes, shapes
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, Family, next_pow2, register
from kgen.kernels.reduction import row_body
from kgen.kernels.side import SideReduction
from kgen.kernels.splitk import GRID_AXIS, SplitK, max_split, split_k, splittable
from kgen.kernels.templates import template
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import flat_index, index_var, unflatten


GROUP_M = 8  # row tiles a GEMM walks together by default (`emit_tile_ids`), Triton's usual

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): small tiles for small problems (more
# programs), the usual Triton shapes for large ones (tensor-core dots), and 16-deep K steps
# for exact float32 dots, whose FMA operands sit in registers: with Triton 3.9 on sm_90,
# 32x64x16/4, 128x64x16/8 and 128x128x16/8 warps compile without spilling.
_QUICK_GEMM = ((16, 32, 64, 2, 3), (32, 32, 32, 2, 3), (32, 64, 32, 4, 3), (64, 64, 32, 4, 3), (64, 64, 64, 4, 3),
               (64, 128, 32, 4, 4), (128, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 128, 64, 8, 3),
               (32, 64, 16, 4, 3), (128, 64, 16, 8, 3), (128, 128, 16, 8, 3))


def _matmul_default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """On the interpreter, tiles of up to 64K elements; tall ones when N and K are small. On a
    GPU the default depends on the dot. A float32 dot is exact (input_precision="ieee"): FMA
    products, where each thread holds its whole BLOCK_K slice of both operand tiles in
    registers, so its tiles are at most 64x64 with BLOCK_K 16. Larger ones spill: with Triton
    3.9 for sm_90, cnn's conv at 128x64x32 on 4 warps spills 504 B per thread, and ptxas takes
    three times as long to compile it as at 64x64x16, which spills nothing. A half-precision
    dot runs on tensor cores from shared memory and takes the usual 32-deep K steps."""
    m, n, k = dims["m"], dims["n"], dims["k"]
    if interpreted:
        block_n, block_k = min(max(next_pow2(n), 16), 256), min(max(next_pow2(k), 16), 256)
        block_m = min(max(next_pow2(m), 16), INTERPRETER_MAX_BLOCK // max(block_n, block_k))
        return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32 if half_dot else 16, "num_warps": 4, "num_stages": 3}


def _matmul_rows_default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """A matmul's, with BLOCK_N holding whole rows (fusion rule E5)."""
    config = _matmul_default(dims, interpreted, half_dot)
    config["BLOCK_N"] = max(next_pow2(dims["n"]), 16)
    if interpreted:
        config["BLOCK_M"] = min(config["BLOCK_M"], max(16, INTERPRETER_MAX_BLOCK // max(config["BLOCK_N"], config["BLOCK_K"])))
    return config


def gemm_space(dims: dict, tier: str, default: dict):
    """Output tiles BLOCK_M x BLOCK_N stepping BLOCK_K, each at most the extent's power of
    two, GROUP_M row tiles walked together (quick) or 1 and GROUP_M (thorough); for a GEMM
    that may split its K, SPLIT_K slices per tile: 1 or `split_k`'s for the tile (quick), or
    also 4, 16 and 64 (thorough), at most what the workspace holds."""
    caps = [max(16, next_pow2(dims[d])) for d in ("m", "n", "k")]
    if tier == "quick":
        tilings = _QUICK_GEMM
    else:
        tiles = (16, 32, 64, 128, 256)
        tilings = itertools.product(tiles, tiles, (16, 32, 64, 128), (1, 2, 4, 8), (1, 2, 3, 4, 5))
    for bm, bn, bk, warps, stages in tilings:
        bm, bn, bk = (min(b, cap) for b, cap in zip((bm, bn, bk), caps))
        for group in ((GROUP_M,) if tier == "quick" else (1, GROUP_M)):
            config = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "num_warps": warps,
                      "num_stages": stages}
            if "SPLIT_K" not in default:
                yield config
                continue
            most, rule = max_split(dims["m"], dims["n"]), split_k(dims, config, interpreted=False)
            for split in sorted({1, rule} | ({4, 16, 64} if tier == "thorough" else set())):
                if split <= most:
                    yield dict(config, SPLIT_K=split)


def _matmul_rows_space(dims: dict, tier: str, default: dict):
    """A matmul's, each tile holding whole rows of the output (its epilogue reduces them)."""
    for config in gemm_space(dims, tier, default):
        yield dict(config, BLOCK_N=default["BLOCK_N"])


def gemm_resources(config: dict, work) -> tuple:
    """Registers for the accumulators (two each for exact float32 dots) and the operand tiles.
    Compiled (Triton 3.9): float32 32x32x32 on 4 warps 108 registers, 64x64x32/4 220,
    64x128x32/4 255 and a 40 B spill, 128x128x32/4 255 and 1392 B; float16 64x64x32/4 132-139.
    float32 operand tiles are software-pipelined in shared memory (stages - 1 buffers);
    half-precision ones are widened and narrowed in registers and staged once."""
    threads = 32 * config.get("num_warps", 4)
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    accumulators, operands = bm * bn / threads, (bm * bk + bk * bn) / threads
    per_accumulator = 2.0 if work.dot == "fp32" else 1.0
    buffers = max(1, config.get("num_stages", 3) - 1) if work.dot == "fp32" else 1
    return 60 + per_accumulator * accumulators + 1.5 * operands, buffers * (bm * bk + bk * bn) * work.dot_bytes


def gemm_steps(dims: dict, config: dict) -> int:
    """BLOCK_K steps over one split-K slice of K (all of K without a split)."""
    kslice = -(-dims["k"] // config.get("SPLIT_K", 1))
    return -(-kslice // config["BLOCK_K"])


MATMUL = register(Family("matmul", _matmul_default, gemm_space, gemm_resources, gemm_steps, gemm=True))
MATMUL_ROWS = register(Family("matmul_rows", _matmul_rows_default, _matmul_rows_space, gemm_resources, gemm_steps,
                              gemm=True))


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
                        tuple(w.computed_in_order()), (MATMUL_ROWS if rows else MATMUL).name, {"m": m, "n": n, "k": k})
