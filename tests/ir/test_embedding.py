"""embedding and embedding_grad in the op table: values and gradients on the float64
reference against torch (repeated indices, padding_idx, indices of any shape), indices
outside the table, bad arguments, and nn.Embedding's parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops
from kgen.ir.ops_gather import embedding_grad
from ir_helpers import assert_close, run

SHAPES = [(), (5,), (2, 3), (2, 1, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_values_and_gradient_match_torch(shape, padding_idx, rng):
    table = rng.normal(size=(6, 3))
    indices = rng.integers(0, 6, size=shape).astype(np.int64)
    if indices.size > 1:
        indices.reshape(-1)[:2] = 2  # a repeated row (the padding row, for padding_idx=2): the scatter sums
    cot = rng.normal(size=shape + (3,))
    i, w, c = kgen.tensor("i", shape, "int64"), kgen.tensor("w", (6, 3)), kgen.tensor("c", shape + (3,))
    out = ops.embedding(i, w, padding_idx)
    grad, = kgen.grad(ops.sum(out * c), [w])
    got, grad_got = run([out, grad], {"i": indices, "w": table, "c": cot}, [i, w, c])[0]
    tw = torch.tensor(table, requires_grad=True)
    want = F.embedding(torch.tensor(indices), tw, padding_idx=padding_idx)
    (want * torch.tensor(cot)).sum().backward()
    assert_close(got, want, what="embedding")
    assert_close(grad_got, tw.grad, what="d / d weight")


def test_repeated_indices_add_their_rows_of_g(rng):
    g = rng.normal(size=(4, 2))
    i, gn = kgen.tensor("i", (4,), "int32"), kgen.tensor("g", (4, 2))
    got, _ = run(embedding_grad(gn, i, 3), {"i": np.array([1, 1, 0, 1], np.int32), "g": g}, [i, gn])
    assert_close(got, np.stack([g[2], g[0] + g[1] + g[3], np.zeros(2)]))


def test_indices_outside_the_table_read_zero_and_add_nowhere(rng):
    """A computed index outside [0, V) (inputs are refused before running) reads a zero row,
    as the kernels do, which never read outside the table."""
    table, g = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    i, w, gn = kgen.tensor("i", (4,), "int32"), kgen.tensor("w", (3, 2)), kgen.tensor("g", (4, 2))
    indices = np.array([-1, 3, 0, 7], np.int32)
    (got, scattered), _ = run([ops.embedding(i, w), embedding_grad(gn, i, 3)], {"i": indices, "w": table, "g": g},
                              [i, w, gn])
    assert_close(got, np.stack([np.zeros(2), np.zeros(2), table[0], np.zeros(2)]))
    assert_close(scattered, np.stack([g[2], np.zeros(2), np.zeros(2)]))


def test_embedding_in_float16_gathers_and_accumulates_in_float32(rng):
    table = rng.normal(size=(5, 4)).astype(np.float16)
    i, w = kgen.tensor("i", (3,), "int32"), kgen.tensor("w", (5, 4), "float16")
    out = ops.embedding(i, w)
    grad, = kgen.grad(ops.sum(out), [w])
    assert out.dtype == kgen.float16 and grad.dtype == kgen.float16
    (got, g), _ = run([out, grad], {"i": np.array([4, 4, 0], np.int32), "w": table}, [i, w], precision="native")
    np.testing.assert_array_equal(got, table[[4, 4, 0]])
    np.testing.assert_array_equal(g[4], np.full(4, 2.0))


def test_symbolic_batch_of_indices():
    i, w = kgen.tensor("i", ("N", 7), "int64"), kgen.tensor("w", (10, 4))
    out = ops.embedding(i, w)
    assert out.type_str() == "f32[N,7,4]"
    grad, = kgen.grad(ops.sum(out), [w])
    assert grad.type_str() == "f32[10,4]"


def test_bad_embedding_arguments_are_clear_errors():
    w = kgen.tensor("w", (6, 3))
    with pytest.raises(kgen.DTypeError, match=r"embedding: indices must be an integer kgen tensor, got f32\[4\]"):
        ops.embedding(kgen.tensor("f", (4,)), w)
    with pytest.raises(kgen.DTypeError, match="got list"):
        ops.embedding([1, 2], w)
    i = kgen.tensor("i", (4,), "int32")
    with pytest.raises(kgen.ShapeError, match=r"weight must be a table \[V, D\] of static sizes, got f32\[6\]"):
        ops.embedding(i, kgen.tensor("v", (6,)))
    with pytest.raises(kgen.ShapeError, match=r"static sizes, got f32\[N,3\]"):
        ops.embedding(i, kgen.tensor("s", ("N", 3)))
    with pytest.raises(kgen.ShapeError, match=r"padding_idx must be an int in \[-6, 6\) .* got 6"):
        ops.embedding(i, w, padding_idx=6)
    with pytest.raises(kgen.ShapeError, match="num_embeddings must be an int >= 1, got 0"):
        embedding_grad(kgen.tensor("g", (4, 3)), i, 0)
    with pytest.raises(kgen.ShapeError, match=r"g f32\[5,3\] must be indices' shape \[4\] plus one axis"):
        embedding_grad(kgen.tensor("g", (5, 3)), i, 6)


def test_nn_embedding_is_torchs_layer():
    nn.manual_seed(0)
    layer = nn.Embedding(1000, 16, padding_idx=3)
    table = layer.weight.get_value()
    assert list(layer.state_dict()) == ["weight"] and table.shape == (1000, 16)
    assert np.all(table[3] == 0.0)
    assert abs(table.mean()) < 0.05 and abs(table.std() - 1.0) < 0.05  # N(0, 1), as torch
    assert repr(layer).startswith("Embedding(1000, 16, padding_idx=3)")
    out = layer(kgen.tensor("i", ("N",), "int32"))
    assert out.type_str() == "f32[N,16]" and out.attrs["padding_idx"] == 3
    assert nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4
