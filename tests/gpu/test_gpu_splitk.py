"""Split-K and grouped tile order on the GPU: the slices of a tile run on different SMs at
once, so this is where the workspace, the counter's acquire-release atomic and the last
program's volatile reads are put to the test. Results must equal the reference, and be
the same bit for bit on every launch (the last program sums the slices in slice order,
whichever came last)."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.ir import ops_conv
from kgen.autotune.tuner import output_error
from kgen.kernels.launch import default_config
from kgen.kernels.runtime import to_numpy
from gpu_fixtures import device, on_gpu, size  # noqa: F401 (fixtures)


def weight_gradients():
    x, g = kgen.tensor("x", ("N", 300)), kgen.tensor("g", ("N", 200))
    xc, gc = kgen.tensor("xc", ("N", 8, 14, 14)), kgen.tensor("gc", ("N", 16, 12, 12))
    w = kgen.tensor("w", (200, 300))
    return kgen.Graph([x, g, xc, gc, w], [
        w - 0.01 * ops.matmul(ops.transpose(g), x), ops.sum(g, 0),
        ops_conv.conv2d_weight_grad(xc, gc, 3), ops.sum(gc, (0, 2, 3))])


@pytest.mark.parametrize("split,group", [(1, 8), (4, 1), (32, 8), (128, 8)])
def test_split_weight_gradients_are_right_and_deterministic(split, group, device, on_gpu, size, rng):
    n = size(2048, 37)
    graph = weight_gradients()
    program = kgen.compile(graph, device)
    shapes = {"x": (n, 300), "g": (n, 200), "xc": (n, 8, 14, 14), "gc": (n, 16, 12, 12), "w": (200, 300)}
    values = {name: rng.uniform(-1, 1, shape).astype(np.float32) for name, shape in shapes.items()}
    splits = 0
    for kernel in program.kernels:
        config = default_config(kernel, {"N": n}, interpreted=not on_gpu)
        pinned = {k: split for k in config if k.endswith("SPLIT_K")}
        pinned.update({k: group for k in config if k.endswith("GROUP_M")})
        splits += len([k for k in pinned if k.endswith("SPLIT_K")])
        program.pin_config(kernel.name, dict(config, **pinned))
    assert splits == 2
    tensors = {node: program.to_tensor(values[node.name], node) for node in program.graph.inputs}
    want = kgen.reference.run(graph, values)
    first = [to_numpy(t) for t in program.run(tensors)]
    for got, expected in zip(first, want):
        assert output_error(got, expected) <= 1e-4
    for _ in range(4):
        for got, again in zip(first, program.run(tensors)):
            np.testing.assert_array_equal(got, to_numpy(again))
    counters = [t for (_, name), t in program.scratch.tensors.items() if name.endswith("split_counters")]
    assert counters and all(int(c.abs().sum()) == 0 for c in counters)
