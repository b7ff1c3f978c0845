"""Config spaces (kgen.autotune.space): legal candidates per family, in two tiers."""
from __future__ import annotations

import dataclasses

import pytest

from kgen.autotune import costmodel, space
from kgen.errors import KgenError
from kgen.kernels.families import lookup, next_pow2
from kgen.kernels.launch import default_config, kernel_dims

from tune_programs import PROGRAMS, program

FAMILY_PROGRAMS = [name for name in PROGRAMS if name != "two_reductions"]


@pytest.mark.parametrize("name", FAMILY_PROGRAMS)
@pytest.mark.parametrize("n", [1, 777])
def test_spaces_hold_legal_candidates_default_first(name, n):
    kernel, sizes = program(name).kernels[0], {"N": n}
    dims = kernel_dims(kernel, sizes)
    names = {p.name for p in kernel.params if p.kind == "constexpr"}
    quick = space.candidates(kernel, sizes, "sm_80", "quick")
    thorough = space.candidates(kernel, sizes, "sm_90", "thorough")
    default = default_config(kernel, sizes, interpreted=False)
    assert quick[0] == thorough[0] == default
    assert 2 <= len(quick) <= (32 if "SPLIT_K" in names else 16) and len(thorough) > len(quick)  # a handful
    for configs, target in ((quick, "sm_80"), (thorough, "sm_90")):
        assert len({costmodel.config_key(c) for c in configs}) == len(configs)
        work = costmodel.kernel_work(kernel, sizes)
        for config in configs[1:]:
            assert set(config) - {"num_warps", "num_stages"} == names and set(config) == set(default)
            assert space.fits(kernel, config, target, work)
            resources = costmodel.estimate_resources(kernel, config, work, target)
            assert resources.shared_bytes <= costmodel.gpu(target).max_shared_per_block
            assert resources.demand <= space.REGISTER_PRUNE and 32 * config["num_warps"] <= 1024
            if lookup(kernel.config_rule).gemm:
                for block, dim in (("BLOCK_M", "m"), ("BLOCK_N", "n"), ("BLOCK_K", "k")):
                    assert 16 <= config[block] <= max(16, next_pow2(dims[dim]))
                if kernel.config_rule == "matmul_rows":
                    assert config["BLOCK_N"] == default["BLOCK_N"]  # whole rows in a tile
            elif kernel.config_rule == "rows":
                assert config["RBLOCK"] == default["RBLOCK"]  # a row fits in one block
            elif kernel.config_rule == "scan":
                assert 16 <= config["BLOCK_B"] <= max(16, next_pow2(dims["b"])) and config["num_stages"] in (1, 2)
            else:
                assert config["XBLOCK"] <= max(32, next_pow2(dims["x"]))


def test_a_family_the_space_does_not_know_gets_its_default_only(monkeypatch):
    combined = program("two_reductions").kernels[0]
    if combined.config_rule == "combo":  # fusion put both reductions in one launch
        assert space.candidates(combined, {"N": 100}, "sm_90", "thorough") == \
            [default_config(combined, {"N": 100}, False)]
    kernel = dataclasses.replace(program("pointwise").kernels[0], config_rule="a-new-template")
    monkeypatch.setattr(space, "default_config", lambda kernel, sizes, interpreted: {"XBLOCK": 64, "num_warps": 2})
    assert space.candidates(kernel, {"N": 100}, "sm_90", "thorough") == [{"XBLOCK": 64, "num_warps": 2}]


def test_heavy_spills_and_oversized_tiles_are_pruned():
    kernel, sizes = program("matmul_fp32").kernels[0], {"N": 4096}
    work = costmodel.kernel_work(kernel, sizes)
    spilling = {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    assert not space.fits(kernel, spilling, "sm_90", work)  # ptxas takes minutes on this one
    assert spilling not in space.candidates(kernel, sizes, "sm_90", "thorough")
    too_many_threads = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 8, "num_warps": 16, "num_stages": 2}
    assert not space.fits(kernel, too_many_threads, "sm_90", work)


def test_unknown_tier_or_target_is_a_clear_error():
    kernel = program("pointwise").kernels[0]
    with pytest.raises(KgenError, match="unknown tuning tier 'fast': expected one of quick, thorough"):
        space.candidates(kernel, {"N": 4}, "sm_90", "fast")
    with pytest.raises(KgenError, match="target 'sm_70'"):
        space.candidates(kernel, {"N": 4}, "sm_70", "quick")
