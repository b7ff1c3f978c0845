"""Combo kernels (several independent kernels in one launch) are tuned part by part, and
the joined config launches and compiles."""
from __future__ import annotations

import pytest

import kgen
from kgen import ops
from kgen.autotune import tuner
from kgen.autotune.cache import TuneCache
from kgen.kernels import aot
from kgen.kernels.launch import default_config, plan_launch

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_a_combo_kernel_gets_its_parts_picks(tmp_path):
    a, b = kgen.tensor("a", ("N", 48)), kgen.tensor("b", (48, 40))
    program = kgen.compile(kgen.Graph([a, b], [a @ b, ops.sum(a, 0), ops.exp(b)]), device="cpu")
    (combo,) = program.kernels
    assert combo.kind == "combo"
    sizes = {"N": 256}
    (result,) = tuner.tune_program(program, sizes, ["sm_90"], cache=TuneCache(tmp_path))
    assert result.source == "parts tuned alone" and len(result.record["parts"]) == len(combo.parts)
    default = default_config(combo, sizes, interpreted=False)
    assert set(result.config) == set(default)  # every part's constexprs, under its prefix
    for i, part in enumerate(result.record["parts"]):
        picked = {k: v for k, v in part["config"].items() if k not in ("num_warps", "num_stages")}
        assert {k: result.config[f"p{i}_{k}"] for k in picked} == picked
    assert result.config["num_warps"] == max(p["config"]["num_warps"] for p in result.record["parts"])
    assert plan_launch(combo, sizes, interpreted=False, config=result.config).grid[0] > 0
    assert aot.compile_kernel(program.source, combo, "sm_90", result.config).cubin
    assert TuneCache(tmp_path).lookup(combo, sizes, "sm_90") == result.config


def test_a_combo_kernel_is_timed_part_by_part_then_as_one_launch(tmp_path, rng):
    """The measuring path (launcher and timer swapped for the interpreter's and a count of
    programs, as in test_tuner.py): each part's candidates are timed and checked, and the
    joined config is timed and checked as the combo launch, beside the combo's default."""
    import math

    import numpy as np

    a, b = kgen.tensor("a", ("N", 48)), kgen.tensor("b", (48, 40))
    program = kgen.compile(kgen.Graph([a, b], [a @ b, ops.sum(a, 0), ops.exp(b)]), device="cpu")
    (combo,) = program.kernels
    sizes = {"N": 96}
    launched = []

    def launcher(source, kernel, target, config):
        run = tuner.interpreter_launcher(source, kernel, target, config)

        def counted(grid, args):
            run(grid, args)
            launched.append((kernel.name, dict(config), math.prod(grid)))
        return counted

    def programs_launched(fn):  # a deterministic stand-in for do_bench: fewer programs, faster
        fn()
        return float(launched[-1][2])

    inputs = {"a": rng.uniform(-1, 1, (96, 48)).astype(np.float32), "b": rng.uniform(-1, 1, (48, 40)).astype(np.float32)}
    bench = tuner.Bench(program, inputs, sizes, launcher=launcher, timer=programs_launched, device="cpu")
    cache = TuneCache(tmp_path)
    (result,) = tuner.tune_program(program, sizes, ["sm_90"], cache=cache, bench=bench, workers=1)

    parts = result.record["parts"]
    assert [p["kernel"] for p in parts] == [p.name for p in combo.parts]
    assert all(p["source"] == "measured" and math.isfinite(p["measured_us"]) for p in parts)
    assert {name for name, _, _ in launched} == {combo.name} | {p.name for p in combo.parts}
    default = default_config(combo, sizes, interpreted=False)
    timings = result.record["timings"]
    assert [t["config"] for t in timings][1:] == ([default] if timings[0]["config"] != default else [])
    assert all(math.isfinite(t["us"]) and t["problem"] == "" for t in timings)  # checked against the reference
    best = min(timings, key=lambda t: t["us"])
    assert result.config == best["config"] and result.measured_us == best["us"]
    assert result.source.startswith("measured")
    assert cache.lookup(combo, sizes, "sm_90") == result.config
