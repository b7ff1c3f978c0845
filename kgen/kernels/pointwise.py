"""The pointwise template: one flat index over the output shape, any number of outputs of
that shape, each computed from its fused elementwise/view producers."""
from __future__ import annotations

from kgen.ir import shapes
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import index_var, unflatten


def emit_pointwise(name: str, roots: list, written: set, names: dict) -> KernelSource:
    shape = roots[0].shape
    numel = shapes.numel(shape)
    w = KernelWriter(name, written - set(roots), names)
    xindex = index_var("xindex", numel)
    w.lanes = w.block_vars = (xindex,)
    coords = unflatten(xindex, shape)
    block = w.constexpr("XBLOCK")
    w.emit(f"xindex = tl.program_id(0) * {block} + tl.arange(0, {block})")
    w.emit(f"xmask = xindex < {w.int_param('xnumel', numel)}")
    w.mask = "xmask"
    for root in roots:
        value = w.root_value(root, coords)
        w.store(root, xindex, value, "xmask", f"[{block}]")  # outputs are row-major: offset = xindex
    summary = f"kgen {name}: pointwise over {shapes.format_shape(shape)}, writes {len(roots)} output(s)."
    return KernelSource(name, "pointwise", w.function(summary), w.ordered_params(),
                        [(numel, "XBLOCK")], tuple(roots), w.reads(), tuple(w.computed_in_order()),
                        "pointwise", {"x": numel})
