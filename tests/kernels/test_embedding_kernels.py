"""The gather templates (kgen/kernels/gather.py) under the interpreter: embedding and its
scatter-add gradient against the reference and torch, with repeated indices, padding_idx,
a symbolic batch, many programs, an empty batch, fused epilogues, indices outside the
table refused, a training step, and AOT compiles for sm_80/sm_90."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops
from kgen.ir.ops_gather import embedding_grad
from kgen.kernels import aot

from conftest import assert_matches_reference, run_compiled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _embedding_program(dtype="int64", table_dtype="float32", padding_idx=2):
    """(graph, inputs): out = embedding(i, w) * 2 + pos, and d sum(out * c) / d w."""
    i, w = kgen.tensor("i", ("N", 5), dtype), kgen.tensor("w", (7, 3), table_dtype)
    pos, c = kgen.tensor("pos", (5, 3), table_dtype), kgen.tensor("c", ("N", 5, 3), table_dtype)
    out = ops.embedding(i, w, padding_idx) * 2.0 + pos
    grad, = kgen.grad(ops.sum(out * c), [w])
    return kgen.Graph([i, w, pos, c], [out, grad])


def _inputs(rng, n=3, dtype=np.int64, table_dtype=np.float32):
    indices = rng.integers(0, 7, size=(n, 5)).astype(dtype)
    indices[:, :2] = [2, 6]  # repeated rows, the padding row among them
    return {"i": indices, "w": rng.normal(size=(7, 3)).astype(table_dtype),
            "pos": rng.normal(size=(5, 3)).astype(table_dtype), "c": rng.normal(size=(n, 5, 3)).astype(table_dtype)}


def _torch(inputs, padding_idx=2):
    w = torch.tensor(inputs["w"], dtype=torch.float64, requires_grad=True)
    out = F.embedding(torch.tensor(inputs["i"]).long(), w, padding_idx) * 2.0 + torch.tensor(inputs["pos"]).double()
    (out * torch.tensor(inputs["c"]).double()).sum().backward()
    return out.detach().numpy(), w.grad.numpy()


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_embedding_and_its_gradient_on_the_kernels(dtype, rng):
    graph, inputs = _embedding_program(dtype), _inputs(rng, dtype=np.dtype(dtype))
    assert_matches_reference(graph, inputs)
    got, grad = run_compiled(graph, inputs)
    want, want_grad = _torch(inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
    assert np.all(grad[2] == 0.0)  # the padding row gets nothing


def test_the_scale_and_the_add_run_in_the_gather_kernel():
    program = kgen.compile(_embedding_program())
    gather = [k for k in program.kernels if any(n.op == "embedding" for n in k.nodes)]
    assert len(gather) == 1 and {n.op for n in gather[0].nodes} >= {"embedding", "mul", "add"}
    assert len(program.kernels) == 2  # the gather with its epilogue, and the scatter-add


def test_many_programs_add_into_one_workspace_and_leave_it_zero(rng):
    """Small blocks: each program's atomics land in the shared workspace, the last one copies
    the sums out and zeroes it, so a second call gives the same gradient."""
    graph, inputs = _embedding_program(), _inputs(rng, n=9)
    program = kgen.compile(graph)
    for kernel in program.kernels:
        program.pin_config(kernel.name, {p.name: 8 for p in kernel.params if p.kind == "constexpr"})
    tensors = {n: program.to_tensor(inputs[n.name], n) for n in program.graph.inputs}
    first = program.run(tensors, poison=True)[1].clone()
    second = program.run(tensors, poison=True)[1]
    np.testing.assert_allclose(first.numpy(), _torch(inputs)[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second.numpy(), first.numpy(), rtol=1e-6, atol=1e-7)


def test_the_scatter_inside_a_combo_kernel_counts_only_its_own_programs(rng):
    """A combo's grid holds other parts' programs too: the last scatter program is found
    from the scatter's own program count, not tl.num_programs."""
    i, g, x = kgen.tensor("i", ("N",), "int32"), kgen.tensor("g", ("N", 3)), kgen.tensor("x", (4, 4))
    graph = kgen.Graph([i, g, x], [embedding_grad(g, i, 5), ops.sum(ops.exp(x), axis=1)])
    program = kgen.compile(graph)
    assert [k.name for k in program.kernels] == ["k0_combo"]
    for kernel in program.kernels:
        program.pin_config(kernel.name, {p.name: 4 for p in kernel.params if p.kind == "constexpr"})
    inputs = {"i": np.array([1, 1, 4, 0, 2, 1], np.int32), "g": rng.normal(size=(6, 3)).astype(np.float32),
              "x": rng.normal(size=(4, 4)).astype(np.float32)}
    tensors = {n: program.to_tensor(inputs[n.name], n) for n in program.graph.inputs}
    for _ in range(2):
        got = program.run(tensors, poison=True)[0]
        np.testing.assert_allclose(got.numpy(), kgen.reference.run(graph, inputs)[0], rtol=1e-6, atol=1e-6)


def test_a_table_of_one_element(rng):
    """Every index names the one address: the atomics' pointer is spread over the lanes."""
    i, w = kgen.tensor("i", (4,), "int64"), kgen.tensor("w", (1, 1))
    out = ops.embedding(i, w)
    grad, = kgen.grad(ops.sum(out * 2.0), [w])
    assert_matches_reference(kgen.Graph([i, w], [out, grad]), {"i": np.zeros(4, np.int64), "w": np.ones((1, 1), np.float32)})


def test_an_empty_batch_gives_a_zero_gradient(rng):
    graph, inputs = _embedding_program(), _inputs(rng, n=0)
    out, grad = run_compiled(graph, inputs)  # poisoned buffers: the grad must be written
    assert out.shape == (0, 5, 3) and np.all(grad == 0.0)


def test_float16_tables(rng):
    graph = _embedding_program(table_dtype="float16")
    assert_matches_reference(graph, _inputs(rng, table_dtype=np.float16), rtol=2e-3, atol=2e-3)


def test_indices_outside_the_table_are_refused_before_any_kernel_runs(rng):
    i, w = kgen.tensor("i", ("N", 2), "int64"), kgen.shared(rng.normal(size=(4, 3)).astype(np.float32), name="tab")
    step = kgen.function([i], ops.sum(ops.embedding(i, w)), updates=[(w, w * 0.5)])
    before = w.get_value().copy()
    for bad, at in ((4, "[1, 0]"), (-1, "[0, 1]")):
        indices = np.array([[0, 1], [2, 3]])
        indices[tuple(int(k) for k in at.strip("[]").split(", "))] = bad
        with pytest.raises(kgen.InputError, match=rf"input 'i': expected class labels in \[0, 4\) .*rows of an "
                                                  rf"embedding table\), got {bad} at index \{at}"):
            step(indices)
    np.testing.assert_array_equal(w.get_value(), before)
    with pytest.raises(kgen.InputError, match=r"got 9 at index \[0, 0\]"):
        kgen.check(step, [np.array([[9, 0]])])


class _Bag(nn.Module):
    """embedding -> mean over the sequence -> linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.fc = nn.Linear(6, 3)

    def forward(self, tokens):
        return self.fc(ops.mean(self.emb(tokens), axis=1))


def test_a_training_step_through_an_embedding_checks_against_the_reference(rng):
    nn.manual_seed(1)
    model = _Bag()
    tokens = rng.integers(0, 11, size=(4, 5)).astype(np.int32)
    tokens[:, 0] = 0
    labels = np.array([0, 2, 1, 2], np.int32)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), lr=0.5), tokens, labels)
    kgen.check(step, [tokens, labels], strict=True)
    padding_row = model.emb.weight.get_value()[0].copy()
    table = model.emb.weight.get_value().copy()
    losses = [float(step(tokens, labels)[0]) for _ in range(3)]
    assert losses[2] < losses[0]
    np.testing.assert_array_equal(model.emb.weight.get_value()[0], padding_row)  # no gradient, no update
    assert not np.array_equal(model.emb.weight.get_value(), table)


def test_gather_kernels_compile_for_sm80_and_sm90():
    program = kgen.compile(_embedding_program(table_dtype="float16"))
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"))
    assert [(b.kernel, b.target) for b in binaries] == [(k.name, t) for k in program.kernels
                                                       for t in ("sm_80", "sm_90")]
    scatter = [b for b in binaries if "embedding_grad" in b.kernel]
    assert scatter and all("atom.global" in b.ptx or "red.global" in b.ptx for b in scatter)
    assert all(b.cubin[:4] == b"\x7fELF" for b in binaries)


def test_an_artifact_runs_the_scatter_and_refuses_indices_outside_the_table(tmp_path):
    """The workspace and counter are scratch a loaded artifact keeps as a Program does."""
    i = kgen.tensor("i", ("N", 2), "int64")
    w = kgen.shared(np.arange(12, dtype=np.float32).reshape(4, 3), name="tab")
    loss = ops.sum(ops.embedding(i, w, padding_idx=1) ** 2)
    grad, = kgen.grad(loss, [w])
    step = kgen.function([i], [loss, grad])
    artifact = kgen.load(kgen.compile_artifact(step, tmp_path / "art", targets=("sm_80",), sizes={"N": 3}))
    indices = np.array([[0, 1], [3, 3], [2, 0]])
    for _ in range(2):
        for got, want in zip(artifact(indices), step(indices)):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(kgen.InputError, match=r"input 'i': expected class labels in \[0, 4\).*got 4 at index \[0, 1\]"):
        artifact(np.array([[0, 4]]))
