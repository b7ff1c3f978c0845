"""Config spaces: the candidate configs of one kernel at concrete sizes for a GPU target,
the set the tuner times (on a GPU) or the cost model ranks (without one).

A config is what `kgen.kernels.launch.plan_launch` takes: the template's block-size
constexprs plus num_warps / num_stages, with the same keys as the family's default
(`kgen.autotune.configs.choose`). Per config family (KernelSource.config_rule):

    pointwise, pool   XBLOCK, num_warps
    reduction         XBLOCK, RBLOCK, num_warps
    rows              XBLOCK, num_warps (RBLOCK holds a whole row: it stays the default's)
    matmul, conv      BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, and SPLIT_K
                      where the GEMM may split its K (kgen.kernels.splitk)
    matmul_rows       BLOCK_M, BLOCK_K, GROUP_M, num_warps, num_stages (BLOCK_N holds whole rows)

Two tiers: "quick", a handful of proven shapes clamped to the problem, and "thorough", the
cartesian product of every power of two in range. GEMMs take GROUP_M 8 (quick) or 1 and 8
(thorough: row tiles walked together, kgen.kernels.matmul.emit_tile_ids). SPLIT_K is 1 or
the default rule's split for the tile (quick), or any of 1, 4, 16, 64 and that split
(thorough), at most what the workspace holds. A family the space does not know ("combo"
kernels, several kernels in one launch, tuned through their parts, or a new template)
gets its default config only.

Every space lists the default config first and keeps candidates that respect the target's
limits: at most 1024 threads, shared memory within the per-block maximum, an estimated
register demand that would not spill heavily (`REGISTER_PRUNE`: such configs are slow and
take ptxas seconds to minutes to compile), blocks no larger than the next power of two of
their extent (and tl.dot's minimum of 16), and at least one element per thread."""
from __future__ import annotations

import itertools

from kgen.autotune import costmodel
from kgen.autotune.configs import GROUP_M, next_pow2, split_k
from kgen.errors import KgenError
from kgen.kernels.launch import default_config, kernel_dims
from kgen.kernels.splitk import max_split

TIERS = ("quick", "thorough")
REGISTER_PRUNE = 320  # estimated registers per thread above which a config is dropped
LAUNCH_OPTIONS = ("num_warps", "num_stages")

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): small tiles for small problems (more
# programs), the usual Triton shapes for large ones (tensor-core dots), and 16-deep K steps
# for exact float32 dots, whose FMA operands sit in registers: with Triton 3.9 on sm_90,
# 32x64x16/4, 128x64x16/8 and 128x128x16/8 warps compile without spilling.
_QUICK_GEMM = ((16, 32, 64, 2, 3), (32, 32, 32, 2, 3), (32, 64, 32, 4, 3), (64, 64, 32, 4, 3), (64, 64, 64, 4, 3),
               (64, 128, 32, 4, 4), (128, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 128, 64, 8, 3),
               (32, 64, 16, 4, 3), (128, 64, 16, 8, 3), (128, 128, 16, 8, 3))
_POW2 = [1 << e for e in range(15)]


def _pointwise(dims: dict, tier: str, default: dict, quick_blocks=(256, 1024, 4096)):
    """XBLOCK lanes per program, up to the extent (at least a warp's worth)."""
    cap = max(32, next_pow2(dims["x"]))
    if tier == "quick":
        for block, warps in itertools.product(quick_blocks, (2, 4, 8)):
            yield {"XBLOCK": min(block, cap), "num_warps": warps}
    else:
        for block, warps in itertools.product(_POW2[5:], (1, 2, 4, 8, 16)):
            if block <= cap:
                yield {"XBLOCK": block, "num_warps": warps}


def _pool(dims: dict, tier: str, default: dict):
    """As pointwise, with smaller blocks: each lane loads a whole window."""
    return _pointwise(dims, tier, default, quick_blocks=(128, 512, 2048))


def _reduction(dims: dict, tier: str, default: dict):
    """XBLOCK outputs per program, reducing RBLOCK elements of each per loop step."""
    xcap, rcap = next_pow2(dims["x"]), max(16, next_pow2(dims["r"]))
    if tier == "quick":
        for x, r, warps in itertools.product((1, 8, 64), (128, 1024), (2, 4, 8)):
            yield {"XBLOCK": min(x, xcap), "RBLOCK": min(r, rcap), "num_warps": warps}
    else:
        for x, r, warps in itertools.product(_POW2[:8], _POW2[4:13], (1, 2, 4, 8, 16)):
            if x <= xcap and r <= rcap:
                yield {"XBLOCK": x, "RBLOCK": r, "num_warps": warps}


def _rows(dims: dict, tier: str, default: dict):
    """XBLOCK whole rows per program; RBLOCK must hold a row, so it stays the default's."""
    xcap, rblock = next_pow2(dims["x"]), default["RBLOCK"]
    xs, warps = ((1, 4, 16, 64), (2, 4, 8)) if tier == "quick" else (_POW2[:10], (1, 2, 4, 8, 16))
    for x, w in itertools.product(xs, warps):
        yield {"XBLOCK": min(x, xcap), "RBLOCK": rblock, "num_warps": w}


def _gemm(dims: dict, tier: str, default: dict):
    """Output tiles BLOCK_M x BLOCK_N stepping BLOCK_K, each at most the extent's power of
    two; for a GEMM that may split its K, SPLIT_K slices per tile."""
    caps = [max(16, next_pow2(dims[d])) for d in ("m", "n", "k")]
    if tier == "quick":
        shapes = _QUICK_GEMM
    else:
        tiles = (16, 32, 64, 128, 256)
        shapes = itertools.product(tiles, tiles, (16, 32, 64, 128), (1, 2, 4, 8), (1, 2, 3, 4, 5))
    for bm, bn, bk, warps, stages in shapes:
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


def _gemm_rows(dims: dict, tier: str, default: dict):
    """As matmul, each tile holding whole rows of the output (its epilogue reduces them)."""
    for config in _gemm(dims, tier, default):
        yield dict(config, BLOCK_N=default["BLOCK_N"])


FAMILIES = {"pointwise": _pointwise, "pool": _pool, "reduction": _reduction, "rows": _rows, "matmul": _gemm,
            "conv": _gemm, "matmul_rows": _gemm_rows}


def constexpr_names(kernel) -> set:
    return {p.name for p in kernel.params if p.kind == "constexpr"}


def fits(kernel, config: dict, target: str, work) -> bool:
    """Whether `config` respects the target's limits and the space's pruning rules
    (`work`: costmodel.kernel_work of the kernel)."""
    warps = config.get("num_warps", 4)
    threads = 32 * warps
    resources = costmodel.estimate_resources(kernel, config, work, target)
    if costmodel.cannot_run(target, warps, resources) or resources.demand > REGISTER_PRUNE:
        return False
    blocks = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
    elements = 1
    for v in blocks.values():
        elements *= v
    if kernel.config_rule in costmodel.GEMM_RULES:
        elements = config["BLOCK_M"] * config["BLOCK_N"]  # accumulators: one per thread at least
    return elements >= threads


def candidates(kernel, sizes: dict, target: str, tier: str = "quick") -> list:
    """The configs to try for `kernel` at `sizes` (size name -> int) on `target`, the
    default first, no duplicates."""
    if tier not in TIERS:
        raise KgenError(f"unknown tuning tier {tier!r}: expected one of {', '.join(TIERS)}")
    costmodel.gpu(target)
    default = default_config(kernel, sizes, interpreted=False)
    family = FAMILIES.get(kernel.config_rule)
    if family is None:
        return [default]
    names = constexpr_names(kernel)
    if set(default) - set(LAUNCH_OPTIONS) != names:
        return [default]  # a template whose constexprs this family does not name: nothing to vary
    work = costmodel.kernel_work(kernel, sizes)
    seen, space = {costmodel.config_key(default)}, [default]
    for config in family(kernel_dims(kernel, sizes), tier, default):
        config = {k: v for k, v in config.items() if k in names or k in default}
        key = costmodel.config_key(config)
        if key not in seen and set(config) == set(default) and fits(kernel, config, target, work):
            seen.add(key)
            space.append(config)
    return space
