"""The offline cost model (kgen.autotune.costmodel) and the compile facts it reads: its
picks are legal for every template family at several sizes on sm_80 and sm_90, and its
predictions behave as occupancy, waves and the roofline say they must."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess

import pytest

from kgen.autotune import costmodel, space, tuner
from kgen.autotune.cache import TuneCache
from kgen.kernels import aot
from kgen.kernels.launch import kernel_dims, plan_launch

from tune_programs import program

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# (program, size N, target): every family, two sizes or more each, both targets.
CASES = [("pointwise", 1, "sm_80"), ("pointwise", 5000, "sm_90"),
         ("column_sum", 3, "sm_90"), ("column_sum", 4000, "sm_80"),
         ("row_sum", 2, "sm_80"), ("row_sum", 3000, "sm_90"),
         ("softmax_rows", 1, "sm_90"), ("softmax_rows", 1000, "sm_80"),
         ("matmul_fp32", 1, "sm_80"), ("matmul_fp32", 700, "sm_90"), ("matmul_fp32", 700, "sm_80"),
         ("matmul_fp16", 16, "sm_90"), ("matmul_fp16", 1000, "sm_80"), ("matmul_fp16", 1000, "sm_90"),
         ("matmul_softmax", 3, "sm_80"), ("matmul_softmax", 500, "sm_90"),
         ("conv2d", 1, "sm_90"), ("conv2d", 16, "sm_80"),
         ("conv2d_input_grad", 2, "sm_90"), ("conv2d_weight_grad", 2, "sm_80"), ("conv2d_weight_grad", 16, "sm_90"),
         ("max_pool", 1, "sm_80"), ("max_pool", 64, "sm_90"), ("avg_pool", 3, "sm_90"),
         ("two_reductions", 5, "sm_90")]


@pytest.mark.parametrize("name,n,target", CASES)
def test_cost_model_picks_a_legal_config(name, n, target, tmp_path):
    prog, sizes = program(name), {"N": n}
    results = tuner.tune_program(prog, sizes, [target], "quick", TuneCache(tmp_path), workers=1)
    assert [r.kernel for r in results] == [k.name for k in prog.kernels]
    limits = costmodel.gpu(target)
    for kernel, result in zip(prog.kernels, results):
        configs = space.candidates(kernel, sizes, target, "quick")
        if kernel.parts:  # a combo: each part's pick is from its own space (test_tune_combo.py)
            assert result.source == "parts tuned alone"
            for part, pick in zip(kernel.parts, result.record["parts"]):
                assert pick["config"] in space.candidates(part, sizes, target, "quick")
        else:
            assert result.config in configs
            assert result.source == "cost model" if len(configs) > 1 else result.source.startswith("default")
        assert math.isfinite(result.predicted_us) and result.predicted_us > costmodel.LAUNCH_US
        if len(configs) > 1 and not kernel.parts:
            assert 1 <= result.compiled <= tuner.COMPILED_PER_ROUND["quick"] * tuner.ROUNDS
        binary = aot.compile_kernel(prog.source, kernel, target, result.config)  # it compiles
        warps = result.config.get("num_warps", 4)
        assert 32 * warps <= 1024 and binary.num_warps == warps
        assert 0 < binary.registers <= limits.max_registers_per_thread
        assert binary.shared_bytes <= limits.max_shared_per_block
        facts = costmodel.from_facts(tuner.compile_facts.Facts(binary.registers, binary.spill_bytes,
                                                               binary.shared_bytes))
        assert costmodel.blocks_per_sm(target, warps, facts) >= 1
        for block, extent in _blocks_and_extents(kernel, sizes, result.config):
            assert block <= max(16, 32 * warps, 1 << max(0, extent - 1).bit_length()), (block, extent)


def _blocks_and_extents(kernel, sizes, config):
    """(block size, the extent it tiles) for each grid axis with a block."""
    dims = {str(v): d for v, d in zip(kernel.dims.values(), kernel_dims(kernel, sizes).values())}
    for extent, block in kernel.grid:
        if block and str(extent) in dims:
            yield config[block], dims[str(extent)]


def test_model_pick_is_ranked_first_among_compiled_candidates(tmp_path):
    prog, sizes, target = program("matmul_fp32"), {"N": 700}, "sm_90"
    kernel = prog.kernels[0]
    result = tuner.tune_program(prog, sizes, [target], "quick", TuneCache(tmp_path), workers=1)[0]
    compiled = [r for r in result.record["ranking"] if r["compiled"]]
    assert compiled and compiled[0]["config"] == result.config
    assert result.record["ranking"][0]["predicted_us"] <= result.predicted_us + 1e-9
    assert plan_launch(kernel, sizes, False, result.config).grid[0] >= 1


# --- predictions -------------------------------------------------------------------------------------
def _pointwise_prediction(n, target="sm_90", config=None):
    kernel = program("pointwise").kernels[0]
    config = config or {"XBLOCK": 1024, "num_warps": 4}
    return costmodel.predict(kernel, {"N": n}, target, config)


def test_large_pointwise_is_memory_bound_at_hbm_bandwidth():
    n = 1 << 20  # 40M floats read and written: 335 MB
    prediction = _pointwise_prediction(n)
    ideal = 2 * 4 * 40 * n / (costmodel.gpu("sm_90").hbm_gbps * 1e9) * 1e6
    assert prediction.bound == "memory"
    assert ideal <= prediction.us <= 1.25 * ideal + costmodel.LAUNCH_US
    assert _pointwise_prediction(n, "sm_80").us > 1.4 * prediction.us  # A100 has 61% of H100's bandwidth


def test_one_program_more_than_a_full_wave_costs_another_wave():
    kernel = program("pointwise").kernels[0]
    config = {"XBLOCK": 1024, "num_warps": 4}
    resources = costmodel.estimate_resources(kernel, config, costmodel.kernel_work(kernel, {"N": 1}), "sm_90")
    wave = costmodel.gpu("sm_90").sms * costmodel.blocks_per_sm("sm_90", 4, resources)
    full = _pointwise_prediction(wave * 1024 // 40, config=config)  # 40 elements per row, 1024 per program
    assert full.programs == wave and full.waves == 1
    more = _pointwise_prediction(-(-(wave * 1024 + 1) // 40), config=config)  # the first row past the wave
    assert more.programs == wave + 1 and more.waves == 2
    assert more.us - full.us >= costmodel.gpu("sm_90").memory_latency_ns * 1e-3


def test_occupancy_counts_registers_in_warp_units_and_shared_memory():
    res = costmodel.Resources(registers=220, spill_bytes=0, shared_bytes=32768, demand=220, compiled=True)
    # 224 registers x 32 lanes per warp: 9 warps fit in 64K registers, so 2 blocks of 4 warps
    assert costmodel.blocks_per_sm("sm_90", 4, res) == 2
    lean = costmodel.Resources(32, 0, 0, 32, True)
    assert costmodel.blocks_per_sm("sm_90", 4, lean) == 16  # 2048 threads per SM
    big_shared = costmodel.Resources(32, 0, 100_000, 32, True)
    assert costmodel.blocks_per_sm("sm_80", 4, big_shared) == 1 and costmodel.blocks_per_sm("sm_90", 4, big_shared) == 2


def test_spills_and_oversized_blocks_are_penalised():
    kernel = program("matmul_fp32").kernels[0]
    sizes, config = {"N": 4096}, {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    clean = costmodel.Resources(128, 0, 16384, 128, True)
    spilling = costmodel.Resources(255, 512, 16384, 383, True)
    assert costmodel.predict(kernel, sizes, "sm_90", config, spilling).us > \
        costmodel.predict(kernel, sizes, "sm_90", config, clean).us
    too_big = costmodel.Resources(128, 0, 300_000, 128, True)
    prediction = costmodel.predict(kernel, sizes, "sm_90", config, too_big)
    assert prediction.us == math.inf and "shared memory" in prediction.bound


def test_big_half_precision_matmul_is_compute_bound_near_tensor_core_peak():
    kernel = program("matmul_fp16").kernels[0]
    sizes, config = {"N": 1 << 20}, {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    prediction = costmodel.predict(kernel, sizes, "sm_90", config)
    ideal = 2 * (1 << 20) * 48 * 64 / (costmodel.gpu("sm_90").fp16_tflops * 1e12) * 1e6
    assert prediction.bound in ("compute", "memory") and prediction.us >= ideal


def test_unknown_target_is_a_clear_error():
    with pytest.raises(Exception, match="expected one of sm_80, sm_90"):
        costmodel.predict(program("pointwise").kernels[0], {"N": 4}, "sm_61", {"XBLOCK": 128, "num_warps": 4})


# --- compile facts from the cubin ---------------------------------------------------------------------
def _cuobjdump():
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else shutil.which("cuobjdump")


@pytest.mark.skipif(_cuobjdump() is None, reason="no cuobjdump to compare with")
def test_registers_and_spills_from_the_cubin_equal_cuobjdumps(tmp_path):
    prog = program("matmul_fp16")
    kernel = prog.kernels[0]
    # 256x128 fp16 accumulators on 4 warps spill on sm_90 (ptxas: 255 registers)
    for config in ({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 2, "num_stages": 2},
                   {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}):
        binary = aot.compile_kernel(prog.source, kernel, "sm_90", config)
        path = tmp_path / "k.cubin"
        path.write_bytes(binary.cubin)
        usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", str(path)], capture_output=True,
                               text=True, check=True).stdout
        reg, stack = map(int, re.search(r"REG:(\d+) STACK:(\d+)", usage).groups())
        assert (binary.registers, binary.spill_bytes) == (reg, stack)
    assert binary.registers == 255 and binary.spill_bytes > 0


def test_compile_facts_are_cached_and_failures_are_scored_not_fatal(tmp_path):
    prog = program("pointwise")
    kernel = prog.kernels[0]
    cache = TuneCache(tmp_path)
    ok = {"XBLOCK": 256, "num_warps": 2}
    first = tuner.compile_facts.gather(prog.source, [(kernel, ok)], "sm_80", 1, cache.facts)[0]
    assert first.ok and first.registers > 0
    assert cache.facts.get(tuner.compile_facts.kernel_hash(kernel), "sm_80", ok)["registers"] == first.registers
    bad = {"XBLOCK": 3, "num_warps": 2}  # not a power of two: Triton refuses tl.arange(0, 3)
    facts = tuner.compile_facts.gather(prog.source, [(kernel, bad), (kernel, ok)], "sm_80", 1, cache.facts)
    assert not facts[0].ok and "power of 2" in facts[0].error and facts[1] == first


def test_compile_facts_of_several_candidates_come_from_a_process_pool(tmp_path):
    prog = program("pointwise")
    kernel = prog.kernels[0]
    requests = [(kernel, {"XBLOCK": block, "num_warps": 4}) for block in (128, 512, 2048)]
    pooled = tuner.compile_facts.gather(prog.source, requests, "sm_90", 2)
    alone = [tuner.compile_facts.compile_one(aot.kernel_job(prog.source, k, "sm_90", c)) for k, c in requests]
    assert [vars(f) for f in pooled] == [dict(a, error="") for a in alone]
    assert pooled[0].registers < pooled[2].registers  # more elements per thread, more registers


def test_split_k_pays_for_a_long_k_over_few_tiles_and_its_tail_bounds_it():
    """A weight gradient with one output tile and K = N*100: the model predicts the
    default split far faster than no split, and charges a split beyond need for the last
    program's serial read of every slice's partial."""
    kernel, sizes = program("conv2d_weight_grad").kernels[0], {"N": 4096}
    default = space.candidates(kernel, sizes, "sm_90", "quick")[0]
    assert default["SPLIT_K"] > 1
    split = costmodel.predict(kernel, sizes, "sm_90", default).us
    unsplit = costmodel.predict(kernel, sizes, "sm_90", dict(default, SPLIT_K=1)).us
    assert 10 * split < unsplit
    tails = [costmodel.predict(kernel, sizes, "sm_90", dict(default, SPLIT_K=s)).us for s in (256, 4096)]
    assert tails[1] > tails[0]
