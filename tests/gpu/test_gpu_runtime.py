"""The zoo's training steps on the GPU, CUDA graph replay, artifacts loaded as cubins in a
fresh process, and timed tuning: the paths only a GPU takes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import kgen
from kgen import nn
from kgen.artifact.gpu import device_target
from kgen.autotune.cache import TuneCache
from kgen.kernels.runtime import to_numpy
from gpu_fixtures import device, on_gpu, size  # noqa: F401 (fixtures)

EXAMPLE = {"mlp128": (784,), "cnn": (1, 28, 28)}


def example_batch(name: str, batch: int, rng) -> tuple:
    x = rng.standard_normal((batch,) + EXAMPLE[name]).astype(np.float32)
    return x, rng.integers(0, 10, batch).astype(np.int32)


def zoo_step(name: str, x, y):
    """A zoo model's training step, from the same initial weights every time."""
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    return nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)


@pytest.mark.parametrize("name", ["mlp128", "cnn"])
def test_every_kernel_of_a_training_step_matches_the_reference(name, size, rng):
    x, y = example_batch(name, size(512, 8), rng)
    step = zoo_step(name, x, y)
    assert kgen.check(step, (x, y), strict=True).ok


@pytest.mark.parametrize("name", ["mlp128", "cnn"])
def test_cuda_graph_replay_takes_the_same_steps_as_plain_launches(name, on_gpu, size, rng):
    x, y = example_batch(name, size(64, 4), rng)
    runs = {}
    for graphs in (True, False):
        step = zoo_step(name, x, y)
        step.program.cuda_graphs = graphs and on_gpu
        losses = [float(step(x, y)[0]) for _ in range(5)]
        runs[graphs] = losses, [to_numpy(p.value) for p in step.shared], step.program.graphs
    (losses, state, graphs), (plain_losses, plain_state, _) = runs[True], runs[False]
    assert losses == plain_losses
    for a, b in zip(state, plain_state):
        np.testing.assert_array_equal(a, b)
    if on_gpu:  # plain, captured, then replayed
        assert graphs.disabled is None and graphs.captures == 1 and graphs.replays >= 3


LOAD = r"""
import json, sys
import numpy as np
import kgen
from kgen import counters
data = dict(np.load(sys.argv[2]))
before = counters.snapshot()
artifact = kgen.load(sys.argv[1])
outputs = [artifact(data["x"], data["y"]) for _ in range(2)]
print(json.dumps({"mode": artifact.mode, "counters": counters.since(before),
                  "losses": [float(o[0]) if isinstance(o, list) else float(o) for o in outputs]}))
"""


def test_an_artifact_loads_its_cubins_and_compiles_nothing(device, on_gpu, tmp_path, rng):
    x, y = example_batch("cnn", 8, rng)
    step = zoo_step("cnn", x, y)
    target = device_target(device) if on_gpu else "sm_90"
    kgen.compile_artifact(step, tmp_path / "cnn", targets=(target,), sizes={"N": 8})
    np.savez(tmp_path / "batch.npz", x=x, y=y)
    want = [float(step(x, y)[0]) for _ in range(2)]
    done = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "cnn"), str(tmp_path / "batch.npz")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["mode"] == ("binary" if on_gpu else "interpreter")
    assert not result["counters"]  # no trace, lowering, tuning or compile
    np.testing.assert_allclose(result["losses"], want, rtol=1e-5)


def test_timed_tuning_keeps_checked_picks_that_later_launches_use(on_gpu, tmp_path, rng):
    if not on_gpu:
        pytest.skip("timing needs the GPU (tests/autotune runs this path on the interpreter)")
    a, b = kgen.tensor("a", ("M", 512)), kgen.tensor("b", (512, 384))
    graph = kgen.Graph([a, b], [kgen.ops.relu(a @ b)])
    program = kgen.compile(graph)
    values = {"a": rng.uniform(-1, 1, (1024, 512)).astype(np.float32),
              "b": rng.uniform(-1, 1, (512, 384)).astype(np.float32)}
    cache = TuneCache(tmp_path)
    results = program.tune(values, cache=cache)
    assert [r.source for r in results] == ["measured"] and results[0].measured_us > 0
    assert results[0].vendor_us and results[0].record["timings"]
    (kernel,) = program.kernels
    assert program.launch_plan(kernel, {"M": 1024}).config == cache.lookup(kernel, {"M": 1024}, program.target)
    tensors = {n: program.to_tensor(values[n.name], n) for n in program.graph.inputs}
    np.testing.assert_allclose(to_numpy(program.run(tensors)[0]), kgen.reference.run(graph, values)[0],
                               rtol=1e-4, atol=1e-4)
