"""Config spaces: the candidate configs of one kernel at concrete sizes for a GPU target,
the set the tuner times (on a GPU) or the cost model ranks (without one).

A config is what `kgen.kernels.launch.plan_launch` takes: the template's block-size
constexprs plus num_warps / num_stages, with the same keys as the kernel's default. Each
kernel family (kgen.kernels.families, looked up by KernelSource.config_rule) proposes the
candidates of its tiers, beside its template:

    pointwise, pool   XBLOCK, num_warps
    reduction         XBLOCK, RBLOCK, num_warps
    rows              XBLOCK, num_warps (RBLOCK holds a whole row: it stays the default's)
    matmul, conv      BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages, and SPLIT_K
                      where the GEMM may split its K (kgen.kernels.splitk)
    matmul_rows       BLOCK_M, BLOCK_K, GROUP_M, num_warps, num_stages (BLOCK_N holds whole rows)

Two tiers: "quick", a handful of proven shapes clamped to the problem, and "thorough", the
cartesian product of every power of two in range. A family with no space ("combo" kernels,
several kernels in one launch, tuned through their parts), or one not registered, gets its
default config only.

Every space lists the default config first and keeps candidates that respect the target's
limits: at most 1024 threads, shared memory within the per-block maximum, an estimated
register demand that would not spill heavily (`REGISTER_PRUNE`: such configs are slow and
take ptxas seconds to minutes to compile), blocks no larger than the next power of two of
their extent (and tl.dot's minimum of 16), and at least one element per thread."""
from __future__ import annotations

from kgen.autotune import costmodel
from kgen.errors import KgenError
from kgen.kernels import families
from kgen.kernels.families import TIERS
from kgen.kernels.launch import default_config, kernel_dims

REGISTER_PRUNE = 320  # estimated registers per thread above which a config is dropped
LAUNCH_OPTIONS = ("num_warps", "num_stages")


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
    family = families.lookup(kernel.config_rule)
    if family.gemm:
        elements = config["BLOCK_M"] * config["BLOCK_N"]  # accumulators: one per thread at least
    elif family.elements is not None:
        elements = family.elements(config, work)
    return elements >= threads


def candidates(kernel, sizes: dict, target: str, tier: str = "quick") -> list:
    """The configs to try for `kernel` at `sizes` (size name -> int) on `target`, the
    default first, no duplicates."""
    if tier not in TIERS:
        raise KgenError(f"unknown tuning tier {tier!r}: expected one of {', '.join(TIERS)}")
    costmodel.gpu(target)
    default = default_config(kernel, sizes, interpreted=False)
    family = families.FAMILIES.get(kernel.config_rule)
    if family is None or family.space is None:
        return [default]
    names = constexpr_names(kernel)
    if set(default) - set(LAUNCH_OPTIONS) != names:
        return [default]  # a template whose constexprs this family does not name: nothing to vary
    work = costmodel.kernel_work(kernel, sizes)
    seen, space = {costmodel.config_key(default)}, [default]
    for config in family.space(kernel_dims(kernel, sizes), tier, default):
        config = {k: v for k, v in config.items() if k in names or k in default}
        key = costmodel.config_key(config)
        if key not in seen and set(config) == set(default) and fits(kernel, config, target, work):
            seen.add(key)
            space.append(config)
    return space
