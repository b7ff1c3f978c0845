"""The pointwise template: one flat index over the output shape, any number of outputs of
that shape, each computed from its fused elementwise/view producers."""
from __future__ import annotations

import itertools

from kgen.ir import shapes
from kgen.kernels.families import INTERPRETER_MAX_BLOCK, POW2, Family, next_pow2, register
from kgen.kernels.writer import KernelSource, KernelWriter
from kgen.ir.indexing import index_var, unflatten


def _default(dims: dict, interpreted: bool, half_dot: bool) -> dict:
    x = dims["x"]
    if interpreted:
        return {"XBLOCK": min(next_pow2(x), INTERPRETER_MAX_BLOCK)}
    return {"XBLOCK": min(max(next_pow2(x), 128), 1024), "num_warps": 4}


def lanes_space(dims: dict, tier: str, default: dict, quick_blocks=(256, 1024, 4096)):
    """XBLOCK lanes per program, up to the extent (at least a warp's worth)."""
    cap = max(32, next_pow2(dims["x"]))
    if tier == "quick":
        for block, warps in itertools.product(quick_blocks, (2, 4, 8)):
            yield {"XBLOCK": min(block, cap), "num_warps": warps}
    else:
        for block, warps in itertools.product(POW2[5:], (1, 2, 4, 8, 16)):
            if block <= cap:
                yield {"XBLOCK": block, "num_warps": warps}


def lanes_resources(config: dict, work) -> tuple:
    """Registers grow with the lanes each thread holds, per input loaded; no shared memory.
    Compiled (Triton 3.9): XBLOCK 1024 on 4 warps 28-30 registers, 4096 on 4 warps 72."""
    threads = 32 * config.get("num_warps", 4)
    return 12 + 2 * config["XBLOCK"] / threads * max(1, work.loads), 0


POINTWISE = register(Family("pointwise", _default, lanes_space, lanes_resources))


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
                        POINTWISE.name, {"x": numel})
