"""The reduction template: each program owns XBLOCK outputs and loops over the reduced
elements RBLOCK at a time, with the reduction's elementwise producers fused into the loop.

The kept axes flatten to `xindex` and the reduced axes to `rindex`, in any order and over
any set of axes, so a reduction never needs its input transposed first."""
from __future__ import annotations

from kgen.ir import shapes
from kgen.kernels.writer import KernelSource, KernelWriter, compute_type
from kgen.lowering.indexing import index_var, unflatten


def emit_reduction(name: str, root, written: set, names: dict, epilogue=()) -> KernelSource:
    (source,) = root.inputs
    axes = root.attrs["axes"]
    rule = root.opdef.lower
    kept = [d for i, d in enumerate(source.shape) if i not in axes]
    reduced = [source.shape[a] for a in axes]
    xnumel, rnumel = shapes.numel(kept), shapes.numel(reduced)

    w = KernelWriter(name, written - {root} - set(epilogue), names)
    xindex, rindex = index_var("xindex", xnumel), index_var("rindex", rnumel)
    w.lanes, w.block_vars = (xindex,), (xindex, rindex)
    kept_coords, reduced_coords = iter(unflatten(xindex, kept)), iter(unflatten(rindex, reduced))
    coords = [next(reduced_coords) if i in axes else next(kept_coords) for i in range(source.ndim)]

    acc_type = compute_type(root.dtype)
    init = rule.init[root.dtype.name]
    xb, rb = w.constexpr("XBLOCK"), w.constexpr("RBLOCK")
    xn, rn = w.int_param("xnumel", xnumel), w.int_param("rnumel", rnumel)
    w.emit(f"xindex = tl.program_id(0) * {xb} + tl.arange(0, {xb})[:, None]")
    w.emit(f"xmask = xindex < {xn}")
    w.emit(f"acc = tl.full([{xb}, {rb}], {init}, {acc_type})")
    w.emit(f"for roffset in range(0, {rn}, {rb}):")
    w.indent += 1
    w.emit(f"rindex = roffset + tl.arange(0, {rb})[None, :]")
    w.emit(f"mask = xmask & (rindex < {rn})")
    w.mask = "mask"
    value = w.value(source, coords)
    w.emit(f"acc = tl.where(mask, {rule.combine.format(acc='acc', x=value)}, acc)")
    w.end_loop()
    w.emit(f"result = tl.{rule.finish}(acc, axis=1)[:, None]")
    if rule.nan_aware_finish and root.dtype.is_float:
        w.emit("result = tl.where(tl.sum((acc != acc).to(tl.int32), axis=1)[:, None] > 0, float('nan'), result)")
    if rule.scale_by_count:
        w.emit(f"result = result / {rn}")
    w.computed.append(root)
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
                        "reduction", {"x": xnumel, "r": rnumel})
