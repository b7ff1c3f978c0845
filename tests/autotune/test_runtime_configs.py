"""The runtime launches with the autotuner's picks: on a GPU a program reads the config of
each kernel from the autotune cache for its device's target (what `kgen tune` and
`Program.tune` fill), falling back to the family's default. No GPU here: the program is
told it launches on an sm_90 device, and only its launch plans are looked at."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen.autotune.cache import TuneCache
from kgen.kernels import runtime
from kgen.kernels.launch import default_config, plan_launch

from tune_programs import matmul_fp32


def as_if_on_sm90(monkeypatch, program):
    monkeypatch.setattr(runtime.Program, "target", property(lambda self: "sm_90"))
    program.interpreted = False
    return program


def test_a_gpu_program_launches_with_the_cached_config(tmp_path, monkeypatch):
    program = as_if_on_sm90(monkeypatch, kgen.compile(matmul_fp32(), device="cpu"))
    (kernel,) = program.kernels
    cache = TuneCache(tmp_path)
    program.tune_cache = cache
    tuned = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8, "num_warps": 2, "num_stages": 4}
    cache.store(kernel, {"N": 256}, "sm_90", tuned, {"source": "test"})

    assert program.launch_plan(kernel, {"N": 256}).config == tuned
    assert program.launch_plan(kernel, {"N": 256}).grid == plan_launch(kernel, {"N": 256}, False, tuned).grid
    # another size bucket, not tuned: the family's GPU default
    assert program.launch_plan(kernel, {"N": 4096}).config == default_config(kernel, {"N": 4096}, interpreted=False)


def test_an_interpreted_program_ignores_the_cache(tmp_path):
    program = kgen.compile(matmul_fp32(), device="cpu")
    (kernel,) = program.kernels
    cache = TuneCache(tmp_path)
    program.tune_cache = cache
    cache.store(kernel, {"N": 8}, "sm_90", {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8, "num_warps": 2,
                                          "num_stages": 4}, {"source": "test"})
    assert program.launch_plan(kernel, {"N": 8}).config == default_config(kernel, {"N": 8}, interpreted=True)
    assert program.target is None


def test_tuning_needs_a_gpu_and_every_input():
    program = kgen.compile(matmul_fp32(), device="cpu")
    with pytest.raises(kgen.KgenError, match="times kernels on a CUDA GPU"):
        program.tune({"x": np.ones((4, 40), np.float32)})


def test_tuning_names_a_missing_input(monkeypatch):
    program = as_if_on_sm90(monkeypatch, kgen.compile(matmul_fp32(), device="cpu"))
    with pytest.raises(kgen.KgenError, match="missing w, b"):
        program.tune({"x": np.ones((4, 40), np.float32)})


def test_a_function_tunes_with_its_shared_values(monkeypatch):
    """Function.tune passes its inputs and the shared variables' values to Program.tune."""
    x, w = kgen.tensor("x", ("N", 3)), kgen.shared(np.ones((3, 2), np.float32), "w")
    f = kgen.function([x], x @ w, device="cpu")
    seen = {}
    monkeypatch.setattr(f.program, "tune", lambda values, **options: seen.update(values, **options) or [])
    assert f.tune(np.zeros((4, 3), np.float32), tier="thorough") == []
    assert set(seen) == {"x", "w", "tier", "cache", "progress"} and seen["tier"] == "thorough"
    np.testing.assert_array_equal(runtime.to_numpy(seen["w"]), np.ones((3, 2), np.float32))
    with pytest.raises(kgen.KgenError, match="takes 1 inputs"):
        f.tune()
    with pytest.raises(kgen.KgenError, match="times kernels on a CUDA GPU"):
        kgen.function([x], x @ w, device="cpu").tune(np.zeros((4, 3), np.float32))
