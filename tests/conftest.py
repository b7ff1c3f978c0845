"""Shared test helpers. Kernels run under Triton's interpreter on CPU tensors."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import kgen  # noqa: E402
from kgen.ir import dtypes  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_array(rng, shape, dtype="float32", positive=False, low=0.5, high=2.0):
    """Random values, never zeros: magnitudes in [low, high), random signs unless
    `positive`. Integers are drawn from [-5, 5) (or [1, 6) when positive); bools at random."""
    dt = dtypes.dtype(dtype)
    if dt is dtypes.bool_:
        return rng.random(shape) < 0.5
    if not dt.is_float:
        lo, hi = (1, 6) if positive else (-5, 5)
        return rng.integers(lo, hi, size=shape).astype(dt.numpy)
    values = rng.uniform(low, high, size=shape)
    if not positive:
        values *= rng.choice([-1.0, 1.0], size=shape)
    return dtypes.round_to(values, dt)


def run_compiled(graph, inputs):
    """Compile `graph` and run it on `inputs` (name -> array); outputs as NumPy arrays."""
    program = kgen.compile(graph)
    tensors = {n: program.to_tensor(inputs[n.name], n) for n in program.graph.inputs}
    outs = program.run(tensors, poison=True)
    return [o.detach().cpu().float().numpy() if o.dtype == torch.bfloat16 else o.detach().cpu().numpy()
            for o in outs]


def assert_matches_reference(graph, inputs, rtol=1e-4, atol=1e-5):
    """Every kernel within tolerance of the reference, and the whole program's outputs too."""
    kgen.check(graph, inputs, strict=True)
    got = run_compiled(graph, inputs)
    want = kgen.reference.run(graph, inputs)
    for g, w, node in zip(got, want, graph.outputs):
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"output {kgen.ir.format_node(node)}")


def zoo_train_step(name: str, batch: int = 8):
    """The compiled training step of zoo model `name` on its first `batch` examples."""
    from kgen import nn
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    (x, y), _ = spec.data()
    return nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()),
                         np.asarray(x[:batch]), np.asarray(y[:batch]))


def fuzz_graph(seed: int, monkeypatch) -> "kgen.Graph":
    """The graph of the fuzzer's program `seed` (values, gradients, updates), not compiled:
    `kgen.function` is replaced by one that keeps its graph."""
    from kgen.fuzz import analyze, generate
    from kgen.fuzz.runner import make_state
    from kgen.fuzz.source import module_source
    built = {}
    monkeypatch.setattr(kgen, "function", lambda inputs, outputs, updates: built.update(
        graph=kgen.Graph(list(inputs) + sorted({v for v, _ in updates}, key=id),
                         list(outputs) + [new for _, new in updates])))
    program = generate(seed)
    ns = {"STATE": make_state(program)}
    exec(compile(module_source(program, analyze(program)), f"<seed {seed}>", "exec"), ns)
    ns["make_function"]()
    return built["graph"]


def row_kernels_that_wait_on_each_other():
    """(inputs, outputs) of the fuzzer's find that hung the compiler: the cross-entropy row
    kernel's backward reduction reads the d(loss) row kernel, whose other reduction reads
    the forward through a pointwise kernel (tests/lowering/test_fusion.py says more)."""
    from kgen import ops
    x, y, cot = kgen.tensor("x", (7, 2)), kgen.tensor("y", (7,), "int32"), kgen.tensor("cot", (10, 4))
    padded = ops.pad_strided(x, (1, 0), (1, 1), (10, 4))
    out = ops.where(padded < 0.25, padded, ops.cross_entropy(x, y))
    loss = ops.sum(out * cot)
    (grad,) = kgen.grad(loss, [x])
    return [x, y, cot], [out, loss, grad]
