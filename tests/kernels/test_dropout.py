"""rand and dropout: Triton's counter-based generator in the kernels, reproduced bit for bit
by the reference interpreter, so dropout masks are equal between kernel and reference."""
import os

import numpy as np
import pytest
import torch

import kgen
from kgen import nn, ops
from kgen.ir.ops_random import uniform
from conftest import random_array


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, -7])
def test_reference_generator_is_tl_rand(seed):
    import triton
    import triton.language as tl
    from kgen.kernels.loader import interpreting

    source = ("import triton\nimport triton.language as tl\n\n@triton.jit\n"
              "def draw(out, seed, N: tl.constexpr):\n    i = tl.arange(0, N)\n"
              "    tl.store(out + i, tl.rand(seed, i))\n")
    from kgen.kernels.loader import load_module
    draw = load_module(source, interpreted=True).draw
    out = torch.empty(2048)
    with interpreting():
        draw[(1,)](out, seed, N=2048)
    np.testing.assert_array_equal(out.numpy(), uniform(seed, (2048,)))


@pytest.mark.parametrize("n", [1, 7, 13, 1000])
def test_dropout_masks_equal_between_kernel_and_reference(n, rng):
    x = kgen.tensor("x", ("N", 3))
    seed = kgen.tensor("seed", (), "int32")
    graph = kgen.Graph([x, seed], [ops.dropout(x, 0.3, seed)])
    values = {"x": random_array(rng, (n, 3)), "seed": np.int32(n * 7 + 1)}
    report = kgen.check(graph, values, strict=True)
    assert report.rows[0].error < 1e-6  # float32 scaling only: one differing mask bit costs ~1
    program = kgen.compile(graph)
    got = program.run({node: program.to_tensor(values[node.name], node) for node in program.graph.inputs})[0]
    np.testing.assert_array_equal(got.numpy() != 0, kgen.reference.run(graph, values)[0] != 0)


def test_dropout_keeps_one_minus_p_and_scales():
    x = kgen.tensor("x", (20000,))
    f = kgen.function([x], ops.dropout(x, 0.25, 99))
    out = f(np.ones(20000, np.float32)).numpy()
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 3 * np.sqrt(0.75 * 0.25 / 20000)
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)


def test_the_gradient_uses_the_same_mask(rng):
    x = kgen.tensor("x", (50,))
    y = ops.dropout(x, 0.5, 3)
    f = kgen.function([x], [y, kgen.grad(ops.sum(y), x)])
    xs = random_array(rng, (50,))
    out, grad = (t.numpy() for t in f(xs))
    np.testing.assert_allclose(grad, (out != 0) * 2.0)


def test_dropout_edge_cases():
    x = kgen.tensor("x", (4,))
    assert ops.dropout(x, 0.0, 1) is x and ops.dropout(x, 0.5, 1, training=False) is x
    zeros = kgen.function([x], ops.dropout(x, 1.0, 1))(np.ones(4, np.float32))
    assert not zeros.numpy().any()
    with pytest.raises(kgen.KgenError, match=r"p must be in \[0, 1\], got 1.5"):
        ops.dropout(x, 1.5, 1)
    with pytest.raises(kgen.DTypeError, match="seed must be an integer scalar"):
        ops.rand((3,), kgen.tensor("s", ()))


def test_dropout_kernels_compile_for_gpus():
    from kgen.kernels.aot import compile_program
    x = kgen.tensor("x", ("N", 8))
    program = kgen.compile(kgen.Graph([x], [ops.dropout(x, 0.5, 11)]))
    binaries = compile_program(program, ("sm_80", "sm_90"))
    assert all(b.cubin for b in binaries) and len(binaries) == 2


def test_nn_dropout_draws_a_new_mask_each_step_and_is_off_in_eval():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5), nn.Linear(32, 3))
    x = np.ones((4, 6), np.float32)
    y = np.zeros(4, np.int32)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), lr=1e-9), x, y)
    seed = model[1].seed
    first = seed.get_value()
    losses = {float(step(x, y)[0]) for _ in range(3)}
    assert seed.get_value() == first + 3 and len(losses) > 1  # a fresh mask every step
    assert "1.seed" not in dict(model.named_parameters())  # the seed is state, not a parameter
    a, b = model.predict(x), model.predict(x)
    np.testing.assert_array_equal(a, b)  # evaluation: no dropout


def test_mlp32_dropout_trains():
    spec = nn.zoo.get("mlp32-dropout")
    rng = np.random.default_rng(0)
    x = rng.random((64, 784), dtype=np.float32)
    y = (x[:, :10].argmax(1)).astype(np.int32)
    nn.manual_seed(0)
    model = spec.model()
    model.compile(spec.optimizer(model.parameters()), spec.loss, ["accuracy"])
    history = model.fit(x, y, epochs=6, batch_size=32, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
