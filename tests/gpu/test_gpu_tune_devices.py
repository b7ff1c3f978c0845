"""Timed tuning spread over every visible GPU, a worker process per device
(kgen.autotune.workers, `kgen tune --devices 0,1,...`). On the interpreter
(KGEN_TEST_DEVICE=cpu) the workers are pinned to two "cpu" devices and launch on Triton's
interpreter, which checks the same pool code; on a GPU, every CUDA device is listed."""
from __future__ import annotations

import math

import numpy as np
import torch

import kgen
from kgen import ops
from kgen.autotune import tuner
from kgen.autotune.cache import TuneCache
from kgen.cli import main
from gpu_fixtures import device, on_gpu, size  # noqa: F401 (fixtures)


def once(fn) -> float:
    """The interpreter's stand-in for do_bench: run once, take one microsecond (it pickles)."""
    fn()
    return 1.0


def test_candidates_timed_on_every_device_are_each_checked_and_kept(device, on_gpu, size, tmp_path, rng):
    x, w = kgen.tensor("x", ("N", 96)), kgen.tensor("w", (96, 64))
    program = kgen.compile(kgen.Graph([x, w], [ops.relu(x @ w)]), device=str(device))
    n = size(512, 8)
    inputs = {"x": rng.standard_normal((n, 96)).astype(np.float32),
              "w": rng.standard_normal((96, 64)).astype(np.float32)}
    if on_gpu:
        devices, launcher, timer, target = list(range(torch.cuda.device_count())), None, None, tuner.device_target()
    else:
        devices, launcher, timer, target = ["cpu", "cpu"], tuner.interpreter_launcher, once, "sm_90"
    bench = tuner.Bench(program, inputs, {"N": n}, launcher=launcher, timer=timer, devices=devices)
    cache = TuneCache(tmp_path)
    [result] = tuner.tune_program(program, {"N": n}, [target], cache=cache, bench=bench, workers=2)
    timings = result.record["timings"]
    assert result.source == "measured" and len(timings) == result.compiled >= 2
    assert all(math.isfinite(t["us"]) and t["us"] > 0 and t["problem"] == "" for t in timings)  # checked, timed
    assert result.measured_us == min(t["us"] for t in timings)
    assert cache.lookup(program.kernels[0], {"N": n}, target) == result.config
    if on_gpu:  # the command, on every device
        listed = ",".join(map(str, devices))
        assert main(["tune", "linreg", "--target", target, "--batch", "64", "--devices", listed,
                     "--cache", str(tmp_path / "cli")]) == 0
