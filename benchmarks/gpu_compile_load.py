"""Compile and load times of the cnn training step on this machine: building the step
(trace, autodiff, passes, fusion, codegen), its first call (Triton compiling every kernel
for this GPU), compiling an artifact ahead of time for this GPU's target, and loading that
artifact again (with the kgen.counters of any work the load did: there should be none).
The artifact part needs kgen.compile_artifact and kgen.load; without them the row says so and only AOT compiling
(kgen.kernels.aot) is timed. torch.compile's first-call times are in the training step rows.

    python benchmarks/gpu_suite.py --only compile_load
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from kgen import nn
from kgen.kernels import aot
from gpu_common import example_batch

TITLE = "compile and load times (seconds)"
COLUMNS = [("model", "model", "{}"), ("target", "target", "{}"), ("kernels", "kernels", "{}"),
           ("build_s", "build", "{:.2f}"), ("first_step_s", "first step", "{:.2f}"),
           ("aot_s", "AOT compile", "{:.2f}"), ("load_s", "load", "{:.3f}"),
           ("load_first_call_s", "loaded 1st call", "{:.3f}"), ("work_at_load", "work at load", "{}")]
CASE = ("model", "target")
TARGETS = []


def device_target(bench) -> str:
    """This GPU's sm_XY (a target kgen compiles for), or sm_90 without one."""
    if not bench.cuda:
        return "sm_90"
    major, minor = torch.cuda.get_device_capability(bench.device)
    target = f"sm_{major}{minor}"
    return target if target in aot.TARGETS else None


def artifact_api():
    """(compile_artifact, load, counters) from kgen, or None and why not."""
    try:
        from kgen import compile_artifact, counters, load
    except ImportError as e:
        return None, f"kgen artifacts not available ({e})"
    return (compile_artifact, load, counters), None


def measure(bench, name: str, batch: int) -> dict:
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    x, y = example_batch(name, batch)
    step, build_s = bench.seconds(lambda: nn.train_step(model, nn.losses.get(spec.loss),
                                                        spec.optimizer(model.parameters()), x, y))
    _, first_s = bench.seconds(lambda: step(x, y))
    target = device_target(bench)
    row = {"model": name, "batch": batch, "target": target, "kernels": len(step.kernels), "build_s": build_s,
           "first_step_s": first_s}
    if target is None:
        row["note"] = "this GPU is not a kgen AOT target"
        return row
    api, why_not = artifact_api()
    if api is None:
        row["note"] = why_not
        _, row["aot_s"] = bench.seconds(lambda: aot.compile_program(step.program, (target,), {"N": batch}))
        return row
    compile_artifact, load, counters = api
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifact"
        _, row["aot_s"] = bench.seconds(lambda: compile_artifact(step, out, (target,), {"N": batch}))
        before = counters.snapshot()
        loaded, row["load_s"] = bench.seconds(lambda: load(out, bench.device))
        _, row["load_first_call_s"] = bench.seconds(lambda: loaded(x, y))
        row["work_at_load"] = counters.since(before)
    return row


def run(bench) -> list:
    return [measure(bench, bench.pick("cnn", "linreg"), bench.pick(64, 2))]
