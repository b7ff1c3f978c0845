"""The autotuner's measuring path (kgen.autotune.tuner), run on Triton's interpreter: no GPU
here, so the launcher and the timer are swapped for the interpreter's and a count of
programs, and everything else (checking every candidate against the reference, scoring
failures, recording the cost model's pick, the vendor comparison) is the GPU code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kgen.autotune import space, tuner
from kgen.autotune.cache import TuneCache
from kgen.ir import shapes
from kgen.ir.reference import evaluate

from tune_programs import program

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _broken(config) -> bool:
    return config["num_warps"] == 8  # the candidates this test's launcher breaks


def test_timings_check_every_candidate_and_score_failures_as_infinitely_slow(tmp_path, rng):
    prog, sizes = program("pointwise"), {"N": 37}
    kernel = prog.kernels[0]
    launched = []

    def launcher(source, kernel, target, config):
        run = tuner.interpreter_launcher(source, kernel, target, config)

        def counted(grid, args):
            run(grid, args)
            launched.append((dict(config), math.prod(grid)))
            if _broken(config):  # a candidate whose outputs are wrong
                for param, arg in zip(kernel.params, args):
                    if param.kind == "out":
                        arg.zero_()
        return counted

    def programs_launched(fn):  # a deterministic stand-in for do_bench: fewer programs, faster
        fn()
        return float(launched[-1][1])

    x = rng.uniform(-2, 2, size=(37, 40)).astype(np.float32)
    bench = tuner.Bench(prog, {"x": x}, sizes, launcher=launcher, timer=programs_launched, device="cpu")
    cache = TuneCache(tmp_path)
    [result] = tuner.tune_program(prog, sizes, ["sm_90"], cache=cache, bench=bench, workers=1)

    configs = space.candidates(kernel, sizes, "sm_90", "quick")
    timings = result.record["timings"]
    assert result.source == "measured" and len(timings) == len(configs) == result.compiled
    assert all(c in [config for config, _ in launched] for c in configs)  # every candidate ran
    for row in timings:
        if _broken(row["config"]):
            assert row["us"] == math.inf and "disagrees with the reference" in row["problem"]
        else:
            assert math.isfinite(row["us"]) and row["problem"] == ""
    assert result.failed == sum(_broken(c) for c in configs) >= 1
    assert not _broken(result.config)
    assert result.measured_us == min(r["us"] for r in timings)
    assert result.model_config in configs and "model_pick_measured_us" in result.record
    assert result.record["vendor_us"] is None  # no library op for a pointwise kernel
    assert cache.lookup(kernel, sizes, "sm_90") == result.config
    stored = cache.record(kernel, sizes, "sm_90")
    assert stored["source"] == "measured"
    assert [r["us"] for r in stored["timings"] if _broken(r["config"])] == [None] * result.failed  # JSON


def test_a_candidate_that_cannot_launch_is_scored_not_fatal():
    prog, sizes = program("pointwise"), {"N": 3}

    def failing(source, kernel, target, config):
        raise RuntimeError("out of resources: shared memory")

    bench = tuner.Bench(prog, {"x": np.ones((3, 40), np.float32)}, sizes, launcher=failing, device="cpu")
    us, problem = bench.score(prog.kernels[0], {"XBLOCK": 128, "num_warps": 4}, "sm_90")
    assert us == math.inf and problem == "RuntimeError: out of resources: shared memory"


def test_bench_needs_every_graph_input():
    with pytest.raises(Exception, match="missing x"):
        tuner.Bench(program("pointwise"), {}, {"N": 3}, device="cpu")


@pytest.mark.parametrize("name", ["matmul_fp32", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"])
def test_the_vendor_op_computes_the_kernels_matmul_or_conv(name, rng):
    prog, sizes = program(name), {"N": 3}
    kernel = prog.kernels[0]
    graph = prog.graph
    inputs = {n.name: rng.uniform(-1, 1, size=[shapes.evaluate(d, sizes) for d in n.shape]) for n in graph.inputs}
    reference = evaluate(graph, inputs, "float64")
    [node] = [n for n in kernel.nodes if n.opdef.gemm]
    got = tuner.vendor_call(node, [torch.from_numpy(np.asarray(reference[i])) for i in node.inputs])
    np.testing.assert_allclose(got.numpy(), reference[node], rtol=1e-10, atol=1e-10)
    case = tuner.vendor_case(kernel, sizes, "cpu")
    assert tuple(case().shape) == np.shape(reference[node])


def test_no_vendor_op_for_other_families():
    assert tuner.vendor_case(program("pointwise").kernels[0], {"N": 3}, "cpu") is None
    assert tuner.vendor_case(program("row_sum").kernels[0], {"N": 3}, "cpu") is None


def test_output_error_is_checks_measure():
    want = np.array([1.0, -200.0, 0.5])
    assert tuner.output_error(want.copy(), want) == 0.0
    assert tuner.output_error(np.array([1.0, -202.0, 0.5]), want) == pytest.approx(0.01)
    assert tuner.output_error(np.array([1.0, np.nan, 0.5]), want) == math.inf
    assert tuner.output_error(np.zeros(2), want) == math.inf


def test_without_a_gpu_the_cost_model_decides_even_with_inputs(tmp_path):
    prog, sizes = program("row_sum"), {"N": 8}
    [result] = tuner.tune_program(prog, sizes, ["sm_80"], cache=TuneCache(tmp_path), workers=1,
                                  inputs={"x": np.ones((8, 40), np.float32)})
    assert tuner.device_target() is None and result.source == "cost model" and result.measured_us is None
    table = tuner.format_results([result], "row sums")
    assert "row sums on sm_80 (A100" in table and "k0_reduction_sum" in table and "cost model" in table
