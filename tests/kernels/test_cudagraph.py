"""CUDA graph capture (kgen/kernels/cudagraph.py) on a machine without a GPU: it is off
and changes nothing on CPU, and its decisions (capture on the second call per shape set,
replay after, fresh outputs, LRU, fallback on a failed capture, the switches) are checked
with a fake backend whose 'replay' re-runs the recorded step into the same static tensors,
as a CUDA graph rewrites its static memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen.errors import ShapeError
from kgen.kernels import cudagraph
from conftest import random_array


class FakeBackend:
    def __init__(self, fail: Exception = None, capturing: bool = False):
        self.fail, self.capturing = fail, capturing
        self.warm_ups = self.capture_calls = 0

    def available(self, device) -> bool:
        return True

    def is_capturing(self) -> bool:
        return self.capturing

    def warm_up(self, step) -> None:
        self.warm_ups += 1
        step()

    def capture(self, step):
        self.capture_calls += 1
        if self.fail is not None:
            raise self.fail
        outputs = step()

        def replay():
            for static, new in zip(outputs, step()):
                static.copy_(new)
        return outputs, replay


def pointwise_and_sum():
    x, y = kgen.tensor("x", ("N", 3)), kgen.tensor("y", ("N", 3))
    return kgen.Graph([x, y], [kgen.ops.relu(x * 2.0 + y), kgen.ops.sum(x * y)])


def with_fake_graphs(program, **kwargs):
    program.cuda_graphs = True
    program.graphs = cudagraph.GraphCache(program, backend=FakeBackend(**kwargs.pop("backend", {})), **kwargs)
    return program.graphs


def tensors_for(program, rng, n):
    return {node: torch.from_numpy(random_array(rng, (n, 3))) for node in program.graph.inputs}


def plain(program, tensors):
    return program.run(tensors, graphs=False)


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


# --- the switches ---------------------------------------------------------------------------
def test_off_on_cpu_and_runs_identically(rng):
    program = kgen.compile(pointwise_and_sum())
    assert program.device.type == "cpu" and program.cuda_graphs is False
    tensors = tensors_for(program, rng, 5)
    want = plain(program, tensors)
    program.cuda_graphs = True  # asked for, but the real backend has no CUDA here
    for _ in range(3):
        assert_same(program.run(tensors), want)
    assert program.graphs.captures == 0 and program.graphs.replays == 0


def test_enabled_reads_device_option_and_environment(monkeypatch):
    monkeypatch.delenv(cudagraph.ENV, raising=False)
    assert cudagraph.enabled("cuda") and cudagraph.enabled("cuda:1")
    assert not cudagraph.enabled("cpu") and not cudagraph.enabled("cpu", True)
    assert not cudagraph.enabled("cuda", False)
    for off in ("0", "off", "False", " no "):
        monkeypatch.setenv(cudagraph.ENV, off)
        assert not cudagraph.enabled("cuda")
        assert cudagraph.enabled("cuda", True)  # an explicit option wins over the environment
    monkeypatch.setenv(cudagraph.ENV, "1")
    assert cudagraph.enabled("cuda")


def test_program_option_and_environment_reach_the_program(monkeypatch):
    compiled = kgen.compile(pointwise_and_sum())

    def on_cuda(**option):  # a Program for a CUDA device; building one touches no GPU
        return type(compiled)(compiled.graph, compiled.plan, compiled.kernels, compiled.source, "cuda", **option)

    monkeypatch.delenv(cudagraph.ENV, raising=False)
    assert on_cuda().cuda_graphs is True
    assert on_cuda(cuda_graphs=False).cuda_graphs is False
    monkeypatch.setenv(cudagraph.ENV, "0")
    assert on_cuda().cuda_graphs is False


# --- capture and replay (fake backend) ------------------------------------------------------
def test_captures_on_second_call_then_replays_with_new_inputs(rng):
    program = kgen.compile(pointwise_and_sum())
    cache = with_fake_graphs(program)
    for call in range(4):
        tensors = tensors_for(program, rng, 5)  # new values each call: stale buffers would show
        assert_same(program.run(tensors), plain(program, tensors))
        assert cache.captures == (0 if call == 0 else 1)
        assert cache.replays == max(0, call)
    assert cache.backend.warm_ups == 1


def test_returned_outputs_survive_later_replays(rng):
    program = kgen.compile(pointwise_and_sum())
    with_fake_graphs(program)
    first = tensors_for(program, rng, 4)
    program.run(first)
    kept = program.run(first)  # captured and replayed
    snapshot = [t.clone() for t in kept]
    program.run(tensors_for(program, rng, 4))
    assert_same(kept, snapshot)
    statics = program.graphs.graphs[program.graphs.key(first)].outputs
    assert all(k.data_ptr() != s.data_ptr() for k, s in zip(kept, statics))


def test_one_graph_per_shape_set_least_recent_evicted(rng):
    program = kgen.compile(pointwise_and_sum())
    cache = with_fake_graphs(program, capacity=2)
    for n in (3, 4, 5):
        for _ in range(2):
            tensors = tensors_for(program, rng, n)
            assert_same(program.run(tensors), plain(program, tensors))
    assert cache.captures == 3 and len(cache.graphs) == 2
    assert cache.key(tensors_for(program, rng, 3)) not in cache.graphs
    tensors = tensors_for(program, rng, 3)  # seen before: captured again at once
    assert_same(program.run(tensors), plain(program, tensors))
    assert cache.captures == 4


def test_failed_capture_warns_once_and_falls_back(rng):
    program = kgen.compile(pointwise_and_sum())
    cache = with_fake_graphs(program, backend={"fail": RuntimeError("operation not permitted when stream is capturing")})
    tensors = tensors_for(program, rng, 5)
    program.run(tensors)
    with pytest.warns(RuntimeWarning, match="capture failed.*not permitted"):
        assert_same(program.run(tensors), plain(program, tensors))
    assert "not permitted" in cache.disabled
    for _ in range(2):
        assert_same(program.run(tensors), plain(program, tensors))
    assert cache.backend.capture_calls == 1 and cache.captures == 0


def test_input_errors_are_not_taken_for_capture_failures(rng):
    program = kgen.compile(pointwise_and_sum())
    cache = with_fake_graphs(program)
    x, y = program.graph.inputs
    bad = {x: torch.ones(4, 3), y: torch.ones(5, 3)}
    for _ in range(3):
        with pytest.raises(ShapeError):
            program.run(bad)
    assert cache.disabled is None and cache.captures == 0


def test_no_capture_inside_a_capture_or_when_poisoned(rng):
    program = kgen.compile(pointwise_and_sum())
    cache = with_fake_graphs(program, backend={"capturing": True})
    tensors = tensors_for(program, rng, 5)
    for _ in range(3):
        assert_same(program.run(tensors), plain(program, tensors))
    cache.backend.capturing = False
    for _ in range(3):
        program.run(tensors, poison=True)
    assert cache.captures == 0 and cache.backend.warm_ups == 0


# --- through kgen.function: outputs and updates ---------------------------------------------
def linreg_step(w0, b0):
    x, y = kgen.tensor("x", ("N",)), kgen.tensor("y", ("N",))
    w, b = kgen.shared(w0, name="w"), kgen.shared(b0, name="b")
    cost = kgen.ops.mse(w * x + b, y)
    gw, gb = kgen.grad(cost, [w, b])
    step = kgen.function([x, y], [cost, x], updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)])
    return step, w, b


def test_training_with_graphs_matches_plain_launches(rng):
    replayed, w1, b1 = linreg_step(np.float32(0.3), np.float32(-0.2))
    plain_step, w2, b2 = linreg_step(np.float32(0.3), np.float32(-0.2))
    cache = with_fake_graphs(replayed.program)
    losses = []
    for _ in range(5):
        xs = random_array(rng, (16,))
        ys = 3 * xs + 2
        got_cost, got_x = replayed(xs, ys)
        want_cost, _ = plain_step(xs, ys)
        losses.append(got_cost)
        np.testing.assert_array_equal(got_cost.numpy(), want_cost.numpy())
        np.testing.assert_array_equal(got_x.numpy(), xs)  # an input as an output: a copy
        assert (w1.get_value(), b1.get_value()) == (w2.get_value(), b2.get_value())
    assert cache.captures == 1 and cache.replays == 4
    assert len({float(c) for c in losses}) == 5  # earlier losses were not overwritten


def test_a_step_without_kernels_is_not_captured(rng):
    x = kgen.tensor("x", ("N", 3))
    program = kgen.compile(kgen.Graph([x], [x]))
    cache = with_fake_graphs(program)
    xs = torch.from_numpy(random_array(rng, (4, 3)))
    for _ in range(3):
        got, = program.run({x: xs})
        assert torch.equal(got, xs) and got.data_ptr() != xs.data_ptr()
    assert program.kernels == [] and cache.captures == 0
