"""Split-K (kgen/kernels/splitk.py): a GEMM with a small static output and a long K runs
each tile as SPLIT_K programs, and the tile's last program sums the slices. Checked on the
interpreter against the reference at several splits, over repeated launches (the tile
counters must come back to zero), with side reductions and epilogues riding along, inside
combo launches, through the tuner's checked timing path and artifacts; and AOT-compiled
with its atomics for sm_80 and sm_90."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kgen
from kgen import nn, ops
from kgen.ir import ops_conv
from kgen.artifact.manifest import seal
from kgen.autotune import tuner
from kgen.kernels import aot, splitk
from kgen.kernels.launch import default_config
from conftest import random_array

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def weight_gradients():
    """A linear layer's weight and bias gradients (K is the batch) and a conv layer's (K is
    the batch times the pixels), with a max over the batch riding along the first."""
    x, g = kgen.tensor("x", ("N", 40)), kgen.tensor("g", ("N", 24))
    xc, gc = kgen.tensor("xc", ("N", 2, 7, 7)), kgen.tensor("gc", ("N", 3, 5, 5))
    w = kgen.tensor("w", (24, 40))
    return kgen.Graph([x, g, xc, gc, w], [
        w - 0.1 * ops.matmul(ops.transpose(g), x), ops.sum(g, 0), ops.max(g, 0),
        ops_conv.conv2d_weight_grad(xc, gc, 3) * 2.0, ops.sum(gc, (0, 2, 3))])


def inputs(rng, n):
    shapes_ = {"x": (n, 40), "g": (n, 24), "xc": (n, 2, 7, 7), "gc": (n, 3, 5, 5), "w": (24, 40)}
    return {name: random_array(rng, shape) for name, shape in shapes_.items()}


def split_kernels(program) -> dict:
    """kernel name -> its SPLIT_K constexprs (a combo's parts' are prefixed)."""
    found = {k.name: [p.name for p in k.params if p.kind == "constexpr" and p.name.endswith("SPLIT_K")]
             for k in program.kernels}
    return {name: names for name, names in found.items() if names}


def pin_splits(program, sizes, split):
    for kernel in program.kernels:
        names = split_kernels(program).get(kernel.name)
        if names:
            program.pin_config(kernel.name, dict(default_config(kernel, sizes, interpreted=True),
                                                 **dict.fromkeys(names, split)))


def test_which_gemms_may_split():
    assert splitk.splittable(24, 40, "N", 1)  # a weight gradient: K grows with the batch
    assert splitk.splittable(24, 40, 4096, 1)
    assert not splitk.splittable(24, 40, 512, 1)  # a short static K
    assert not splitk.splittable("N", 40, 4096, 1)  # a batch-sized output
    assert not splitk.splittable(24, 40, "N", 3)  # batched
    assert not splitk.splittable(2048, 1024, "N", 1)  # too large an output for the workspace
    assert splitk.max_split(24, 40) == 4096 and splitk.max_split(1024, 1024) == 4


def test_weight_gradients_have_split_k_and_forward_gemms_do_not():
    program = kgen.compile(weight_gradients(), device="cpu")
    assert sum(map(len, split_kernels(program).values())) == 2  # the matmul and the conv weight gradient
    x, w = kgen.tensor("x", ("N", 40)), kgen.tensor("w", (40, 24))
    assert not split_kernels(kgen.compile(kgen.Graph([x, w], [x @ w]), device="cpu"))


@pytest.mark.parametrize("split", [1, 2, 8])
def test_split_gemms_match_the_reference_over_repeated_launches(split, rng):
    graph = weight_gradients()
    program = kgen.compile(graph, device="cpu")
    values = inputs(rng, 37)
    pin_splits(program, {"N": 37}, split)
    want = kgen.reference.run(graph, values)
    tensors = {n: program.to_tensor(values[n.name], n) for n in program.graph.inputs}
    for _ in range(3):
        for got, expected in zip(program.run(tensors), want):
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    counters = [t for (_, name), t in program.scratch.tensors.items() if name.endswith("split_counters")]
    assert counters and all(int(c.abs().sum()) == 0 for c in counters)  # left at zero for the next launch


def test_a_training_step_with_split_weight_gradients_takes_the_same_steps(rng):
    """A small conv net's Adam step: the weight gradients split (with the bias gradient a
    side reduction and Adam in their epilogues, some inside combo launches)."""
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 6).astype(np.int32)
    results = {}
    for split in (1, 4):
        nn.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
        optimizer = nn.optim.Adam(model.parameters(), lr=0.01)
        step = nn.train_step(model, nn.losses.get("cross_entropy"), optimizer, x, y)
        assert sum(map(len, split_kernels(step.program).values())) == 2
        pin_splits(step.program, {"N": 6}, split)
        losses = [float(step(x, y)[0]) for _ in range(3)]
        results[split] = losses, [p.get_value().copy() for p in step.shared]
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[4][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_tuner_times_split_candidates_checked_against_the_reference(rng):
    graph = weight_gradients()
    program = kgen.compile(graph, device="cpu")
    bench = tuner.Bench(program, inputs(rng, 37), {"N": 37}, launcher=tuner.interpreter_launcher,
                        timer=lambda fn: (fn(), 1.0)[1], device="cpu")
    for kernel in program.kernels:
        for name in split_kernels(program).get(kernel.name, []):
            for split in (1, 2, 16):
                config = dict(default_config(kernel, {"N": 37}, interpreted=False), **{name: split})
                us, problem = bench.score(kernel, config, "sm_90")
                assert (us, problem) == (1.0, ""), (kernel.name, split, problem)


def test_split_kernels_compile_with_their_atomics_for_sm80_and_sm90():
    program = kgen.compile(weight_gradients(), device="cpu")
    for kernel in program.kernels:
        names = split_kernels(program).get(kernel.name)
        if not names:
            continue
        config = dict(default_config(kernel, {"N": 4096}, interpreted=False), **dict.fromkeys(names, 8))
        for target in ("sm_80", "sm_90"):
            binary = aot.compile_kernel(program.source, kernel, target, config)
            assert "atom.global.gpu.acq_rel.add" in binary.ptx and "ld.volatile.global" in binary.ptx
            assert binary.spill_bytes <= 16  # (4 registers at most, as tests/kernels/test_aot.py allows)


def test_the_gpu_default_splits_a_long_k_over_few_tiles():
    xc, gc = kgen.tensor("xc", ("N", 2, 7, 7)), kgen.tensor("gc", ("N", 3, 5, 5))
    (kernel,) = kgen.compile(kgen.Graph([xc, gc], [ops_conv.conv2d_weight_grad(xc, gc, 3)]), device="cpu").kernels
    few = default_config(kernel, {"N": 4096}, interpreted=False)  # K = 4096 * 25, one 16x16 tile
    assert few["SPLIT_K"] >= 64 and math.prod(kgen.kernels.launch.plan_launch(
        kernel, {"N": 4096}, False, few).grid) >= 64
    assert default_config(kernel, {"N": 2}, interpreted=False)["SPLIT_K"] == 1  # K = 50: nothing to split
    assert default_config(kernel, {"N": 4096}, interpreted=True)["SPLIT_K"] == 1


def test_an_artifact_launches_split_kernels_with_their_scratch(tmp_path, rng):
    """The stored interpreter configs are made to split (a hand-edited manifest: the
    loader sizes the workspaces from the config it launches with)."""
    graph = weight_gradients()
    program = kgen.compile(graph, device="cpu")
    kgen.compile_artifact(program, tmp_path / "art", targets=("sm_90",), sizes={"N": 37})
    path = tmp_path / "art" / "manifest.json"
    manifest = json.loads(path.read_text())
    split = 0
    for entry in manifest["kernels"]:
        scratch = [p for p in entry["params"] if p["kind"] == "scratch"]
        assert all({"numel", "per", "zeroed", "dtype"} <= set(p) for p in scratch)
        for chosen in entry["configs"]["interpreter"]:
            for name in [k for k in chosen["config"] if k.endswith("SPLIT_K")]:
                chosen["config"][name] = 4
                split += 1
    assert split >= 2
    path.write_text(seal(manifest))  # (sealed again with its checksum, as a writer would)
    artifact = kgen.load(tmp_path / "art")
    values = inputs(rng, 37)
    want = kgen.reference.run(graph, values)
    for _ in range(2):
        for got, expected in zip(artifact(*[values[n.name] for n in graph.inputs]), want):
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_pinning_a_config_is_checked():
    program = kgen.compile(weight_gradients(), device="cpu")
    with pytest.raises(kgen.KgenError, match="no kernel 'k99'"):
        program.pin_config("k99", {})
    kernel = program.kernels[0]
    with pytest.raises(kgen.KgenError, match="expected the constexprs"):
        program.pin_config(kernel.name, {"BLOCK_Q": 4})


@pytest.mark.parametrize("group", [1, 2, 8])
def test_grouped_tile_order_covers_every_tile_once(group, rng):
    """Small tiles (7 x 5 of them for the matmul, a partial last group) walked in groups
    of GROUP_M row tiles, with and without a split, and side reductions stored by the
    first tiles: outputs equal the reference."""
    a, b = kgen.tensor("a", ("N", 70)), kgen.tensor("b", (70, 100))
    graph = kgen.Graph([a, b], [ops.relu(ops.matmul(ops.transpose(b), ops.transpose(a)))])
    program = kgen.compile(graph, device="cpu")
    (kernel,) = program.kernels
    values = {"a": random_array(rng, (20, 70)), "b": random_array(rng, (70, 100))}
    want = kgen.reference.run(graph, values)
    tensors = {n: program.to_tensor(values[n.name], n) for n in program.graph.inputs}
    config = dict(default_config(kernel, {"N": 20}, interpreted=True), BLOCK_M=16, BLOCK_N=16, GROUP_M=group)
    program.pin_config(kernel.name, config)
    np.testing.assert_allclose(program.run(tensors)[0].numpy(), want[0], rtol=1e-4, atol=1e-4)

    graph = weight_gradients()
    program = kgen.compile(graph, device="cpu")
    values = inputs(rng, 37)
    for kernel in program.kernels:
        config = default_config(kernel, {"N": 37}, interpreted=True)
        tiles = {k: 16 for k in config if k.endswith(("BLOCK_M", "BLOCK_N"))}
        program.pin_config(kernel.name, dict(config, **tiles, **{k: group for k in config if k.endswith("GROUP_M")},
                                             **{k: 2 for k in config if k.endswith("SPLIT_K")}))
    tensors = {n: program.to_tensor(values[n.name], n) for n in program.graph.inputs}
    for got, expected in zip(program.run(tensors), kgen.reference.run(graph, values)):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
