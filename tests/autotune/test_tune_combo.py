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
