"""The reduction templates, with the reduction's elementwise producers fused into them.

- emit_reduction: each program owns XBLOCK outputs and loops over the reduced elements
  RBLOCK at a time.
- emit_rows (fusion rule R6): a row kernel. Each program holds XBLOCK whole rows (RBLOCK
  covers a row) and computes several reductions over them in turn, each able to read the
  ones before it (softmax: the max, then the sum of exp(x - max)), then an epilogue over
  the rows or over the reduced values (cross-entropy's gradient, the per-row loss).

The kept axes flatten to `xindex` and the reduced axes to `rindex`, in any order and over
any set of axes, so a reduction never needs its input transposed first."""
from __future__ import annotations

import itertools

from kgen.ir import shapes
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, POW2, Family, next_pow2, register
from kgen.kernels.writer import KernelSource, KernelWriter, compute_type
from kgen.ir.indexing import flat_index, index_var, unflatten


def _reduction_default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """On the interpreter, the fewest programs, then the fewest loop steps: a program repeats
    its epilogue (an optimizer's update of a bias from its gradient is some 150 interpreted
    ops, Adam's bias corrections included), a loop step a load and a few ops. So XBLOCK
    takes as many outputs as a block holds with RBLOCK at 256 (less for a shorter
    reduction), and RBLOCK what the block leaves, up to 4096: Adam on lstm's bias gradient
    (256 outputs of 1,792 rows) is one program of 7 steps rather than 8 of one."""
    x, r = dims["x"], dims["r"]
    if interpreted:
        xblock = min(next_pow2(x), INTERPRETER_MAX_BLOCK // min(next_pow2(r), 256))
        return {"RBLOCK": min(next_pow2(r), 4096, INTERPRETER_MAX_BLOCK // xblock), "XBLOCK": xblock}
    rblock = min(next_pow2(r), 1024)
    return {"RBLOCK": rblock, "XBLOCK": max(1, min(next_pow2(x), 4096 // rblock)), "num_warps": 4}


def _reduction_space(dims: dict, tier: str, default: dict):
    """XBLOCK outputs per program, reducing RBLOCK elements of each per loop step."""
    xcap, rcap = next_pow2(dims["x"]), max(16, next_pow2(dims["r"]))
    if tier == "quick":
        for x, r, warps in itertools.product((1, 8, 64), (128, 1024), (2, 4, 8)):
            yield {"XBLOCK": min(x, xcap), "RBLOCK": min(r, rcap), "num_warps": warps}
    else:
        for x, r, warps in itertools.product(POW2[:8], POW2[4:13], (1, 2, 4, 8, 16)):
            if x <= xcap and r <= rcap:
                yield {"XBLOCK": x, "RBLOCK": r, "num_warps": warps}


def _block_resources(config: dict, work) -> tuple:
    """Registers grow with the block's elements per thread, per input loaded; shared memory
    holds the warps' partial results. Compiled (Triton 3.9): 8x1024 on 4 warps 80 registers."""
    threads = 32 * config.get("num_warps", 4)
    elements = config["XBLOCK"] * config["RBLOCK"] / threads
    return 24 + 0.75 * elements * (work.loads + 1), 4 * config["XBLOCK"] * config.get("num_warps", 4)


def _rows_default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    """RBLOCK holds a whole row."""
    x, rblock = dims["x"], next_pow2(dims["r"])
    if interpreted:
        return {"RBLOCK": rblock, "XBLOCK": min(next_pow2(x), max(1, INTERPRETER_MAX_BLOCK // rblock))}
    return {"RBLOCK": rblock, "XBLOCK": max(1, min(next_pow2(x), 2048 // rblock)), "num_warps": 4}


def _rows_space(dims: dict, tier: str, default: dict):
    """XBLOCK whole rows per program; RBLOCK must hold a row, so it stays the default's."""
    xcap, rblock = next_pow2(dims["x"]), default["RBLOCK"]
    xs, warps = ((1, 4, 16, 64), (2, 4, 8)) if tier == "quick" else (POW2[:10], (1, 2, 4, 8, 16))
    for x, w in itertools.product(xs, warps):
        yield {"XBLOCK": min(x, xcap), "RBLOCK": rblock, "num_warps": w}


REDUCTION = register(Family("reduction", _reduction_default, _reduction_space, _block_resources,
                            steps=lambda dims, config: -(-dims["r"] // config["RBLOCK"])))
ROWS = register(Family("rows", _rows_default, _rows_space, _block_resources))


def _frame(w: KernelWriter, source, axes):
    """The (xindex, rindex) coordinates of `source`'s elements and their extents; emits the
    program's rows (`xindex`, `xmask`) and returns the block and extent arguments too."""
    kept = [d for i, d in enumerate(source.shape) if i not in axes]
    reduced = [source.shape[a] for a in axes]
    xnumel, rnumel = shapes.numel(kept), shapes.numel(reduced)
    xindex, rindex = index_var("xindex", xnumel), index_var("rindex", rnumel)
    w.lanes, w.block_vars = (xindex,), (xindex, rindex)
    kept_coords, reduced_coords = iter(unflatten(xindex, kept)), iter(unflatten(rindex, reduced))
    coords = [next(reduced_coords) if i in axes else next(kept_coords) for i in range(source.ndim)]
    xb, rb = w.constexpr("XBLOCK"), w.constexpr("RBLOCK")
    xn, rn = w.int_param("xnumel", xnumel), w.int_param("rnumel", rnumel)
    w.emit(f"xindex = tl.program_id(0) * {xb} + tl.arange(0, {xb})[:, None]")
    w.emit(f"xmask = xindex < {xn}")
    return xindex, coords, xnumel, rnumel, xb, rb, rn


def finish(w: KernelWriter, root, acc: str, result: str, count: str, axis: int = 1) -> None:
    """Collapse the accumulator block `acc` of reduction `root` along `axis` into `result`
    (kept 2-D: [BLOCK, 1] for axis 1, [1, BLOCK] for axis 0); `count` is the reduced extent."""
    rule, note = root.opdef.lower, w.note(root)
    expand = "[:, None]" if axis == 1 else "[None, :]"
    w.emit(f"{result} = tl.{rule.finish}({acc}, axis={axis}){expand}", note)
    if rule.nan_aware_finish and root.dtype.is_float:
        w.emit(f"{result} = tl.where(tl.sum(({acc} != {acc}).to(tl.int32), axis={axis}){expand} > 0, "
               f"float('nan'), {result})", note)
    if rule.scale_by_count:
        w.emit(f"{result} = {result} / {count}", note)
    w.computed.append(root)


def row_body(w: KernelWriter, reductions: list, epilogue, written: set, coords, xindex, xnumel, rn: str,
             mask: str, xmask: str, block: str, xblock: str) -> None:
    """The reductions of a row kernel, each over a block of whole rows at `coords` (lanes
    `xindex` down, the row across; `mask` over both, `xmask` over rows), then its epilogue.
    Shared by the row kernel and the matmul kernel that holds whole rows (fusion rule E5)."""
    first = reductions[0]
    for i, root in enumerate(reductions):
        rule = root.opdef.lower
        w.mask = mask
        value = w.value(root.inputs[0], coords)
        acc, result = f"row_acc{i}", f"row_result{i}"
        w.emit(f"{acc} = tl.full({block}, {rule.init[root.dtype.name]}, {compute_type(root.dtype)})", w.note(root))
        w.emit(f"{acc} = tl.where({mask}, {rule.combine.format(acc=acc, x=value)}, {acc})", w.note(root))
        finish(w, root, acc, result, rn)
        if root in written:
            w.store(root, xindex, result, xmask, xblock)
        w.provide(root, unflatten(xindex, root.shape), result)
    source = first.inputs[0]
    for root in sorted(epilogue, key=lambda n: n.id):
        over_rows = root.ndim == source.ndim and all(shapes.dims_equal(a, b) for a, b in zip(root.shape, source.shape))
        # rows of length 1 hold as many elements as the reduced values: the rows' shape decides
        if not over_rows and shapes.dims_equal(shapes.numel(root.shape), xnumel):  # over the reduced values
            w.epilogue(first, unflatten(xindex, first.shape), xindex, [root], xmask, xblock)
        else:  # over the rows
            w.mask = mask
            w.store(root, flat_index(coords, root.shape), w.root_value(root, coords), mask, block)


def emit_rows(name: str, reductions: list, written: set, names: dict, epilogue=()) -> KernelSource:
    """A row kernel computing `reductions` (one input shape and axes; RBLOCK >= a row), in
    order, then `epilogue`: roots over the rows, or over the reduced values."""
    first = reductions[0]
    source, axes = first.inputs[0], first.attrs["axes"]
    w = KernelWriter(name, written - set(reductions) - set(epilogue), names)
    xindex, coords, xnumel, rnumel, xb, rb, rn = _frame(w, source, axes)
    w.emit(f"rindex = tl.arange(0, {rb})[None, :]")
    w.emit(f"mask = xmask & (rindex < {rn})")
    row_body(w, reductions, epilogue, written, coords, xindex, xnumel, rn, "mask", "xmask",
             f"[{xb}, {rb}]", f"[{xb}, 1]")
    summary = (f"kgen {name}: a row kernel over the rows of {shapes.format_shape(source.shape)} along axes "
               f"{tuple(axes)}: " + ", ".join(r.op for r in reductions)
               + (f", then {len(epilogue)} elementwise output(s)." if epilogue else "."))
    writes = tuple(r for r in reductions if r in written) + tuple(epilogue)
    return KernelSource(name, "reduction", w.function(summary), w.ordered_params(),
                        [(xnumel, "XBLOCK")], writes, w.reads(), tuple(w.computed_in_order()),
                        ROWS.name, {"x": xnumel, "r": rnumel})


def emit_reduction(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (source,) = root.inputs
    axes = root.attrs["axes"]
    rule = root.opdef.lower
    w = KernelWriter(name, written - {root} - set(epilogue), names)
    xindex, coords, xnumel, rnumel, xb, rb, rn = _frame(w, source, axes)
    w.emit(f"acc = tl.full([{xb}, {rb}], {rule.init[root.dtype.name]}, {compute_type(root.dtype)})", w.note(root))
    w.emit(f"for roffset in range(0, {rn}, {rb}):")
    w.indent += 1
    w.emit(f"rindex = roffset + tl.arange(0, {rb})[None, :]")
    w.emit(f"mask = xmask & (rindex < {rn})")
    w.mask = "mask"
    value = w.value(source, coords)
    w.emit(f"acc = tl.where(mask, {rule.combine.format(acc='acc', x=value)}, acc)", w.note(root))
    w.end_loop()
    finish(w, root, "acc", "result", rn)
    if root in written:
        w.store(root, xindex, "result", "xmask", f"[{xb}, 1]")
    out_coords = unflatten(xindex, root.shape)
    w.provide(root, out_coords, "result")
    w.epilogue(root, out_coords, xindex, epilogue, "xmask", f"[{xb}, 1]")
    summary = (f"kgen {name}: {root.op} of {shapes.format_shape(source.shape)} over axes "
               f"{tuple(axes)} -> {shapes.format_shape(root.shape)}"
               + (f", then {len(epilogue)} elementwise output(s)." if epilogue else "."))
    writes = ((root,) if root in written else ()) + tuple(epilogue)
    return KernelSource(name, "reduction", w.function(summary), w.ordered_params(),
                        [(xnumel, "XBLOCK")], writes, w.reads(), tuple(w.computed_in_order()),
                        REDUCTION.name, {"x": xnumel, "r": rnumel})
