"""ops.pad with a constant value and ops.split with a list of sizes: values and gradients
against torch (float64 reference), by finite differences, and on the kernels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import ops

from conftest import assert_matches_reference, run_compiled


def _torch_pad_widths(widths):
    """np.pad's per-axis (before, after) as F.pad's last-axis-first flat tuple."""
    return tuple(w for pair in reversed(widths) for w in pair)


@pytest.mark.parametrize("value", [0.0, -0.0, -1.5, 3, float("inf"), float("-inf"), float("nan")])
def test_pad_value_matches_torch_with_its_gradient(value, rng):
    widths = ((1, 0), (2, 3))
    x = rng.normal(size=(2, 3))
    cot = rng.normal(size=(3, 8))
    xn, cn = kgen.tensor("x", (2, 3)), kgen.tensor("c", (3, 8))
    out = ops.pad(xn, widths, value)
    finite = ops.where(ops.equal(ops.abs(out), float("inf")), 0.0, ops.where(ops.not_equal(out, out), 0.0, out))
    grad, = kgen.grad(ops.sum(finite * cn), [xn])
    got, g = kgen.reference.run(kgen.Graph([xn, cn], [out, grad]), {"x": x, "c": cot})
    tx = torch.tensor(x, requires_grad=True)
    want = F.pad(tx, _torch_pad_widths(widths), value=value)
    (torch.where((want.abs() == float("inf")) | want.isnan(), 0.0, want) * torch.tensor(cot)).sum().backward()
    np.testing.assert_array_equal(got, want.detach().numpy())
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want.detach().numpy()))  # -0.0 pads with -0.0
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12)


def test_pad_with_zero_stays_a_free_view_and_another_value_is_elementwise():
    x = kgen.tensor("x", ("N", 3))
    assert ops.pad(x, ((0, 0), (1, 1))).op == "pad"
    out = ops.pad(x, ((0, 0), (1, 1)), value=2.0)
    assert out.op == "where" and {i.op for i in out.inputs} >= {"pad"}
    assert ops.pad(x, 0, value=5.0) is x  # nothing padded: x itself
    program = kgen.compile(kgen.Graph([x], [ops.relu(out)]))
    assert len(program.kernels) == 1  # the pad, its fill and the relu in one pointwise kernel


def test_pad_value_gradient_by_finite_differences(rng):
    x, cot = rng.normal(size=(3, 2)), rng.normal(size=(5, 5))
    xn, cn = kgen.tensor("x", (3, 2)), kgen.tensor("c", (5, 5))
    y = ops.sum(ops.pad(xn, ((1, 1), (2, 1)), value=0.7) ** 2 * cn)
    grad, = kgen.grad(y, [xn])
    analytic = kgen.reference.run(kgen.Graph([xn, cn], [grad]), {"x": x, "c": cot})[0]
    eps, numeric = 1e-6, np.zeros_like(x)
    graph = kgen.Graph([xn, cn], [y])
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (kgen.reference.run(graph, {"x": up, "c": cot})[0]
                        - kgen.reference.run(graph, {"x": down, "c": cot})[0]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_pad_value_on_the_kernels(rng):
    x, c = kgen.tensor("x", ("N", 4)), kgen.tensor("c", ("N", 9))
    out = ops.pad(x * 2.0, ((0, 0), (3, 2)), value=-0.5)
    grad, = kgen.grad(ops.sum(out * c), [x])
    assert_matches_reference(kgen.Graph([x, c], [out, grad]),
                             {"x": rng.normal(size=(3, 4)).astype(np.float32),
                              "c": rng.normal(size=(3, 9)).astype(np.float32)})


def test_pad_edge_values_on_the_kernels():
    x = kgen.tensor("x", ("N", 2))
    values = (float("nan"), -0.0, float("-inf"))
    got = run_compiled(kgen.Graph([x], [ops.pad(x, ((0, 0), (1, 1)), value=v) for v in values]),
                       {"x": np.ones((2, 2), np.float32)})
    for out, value in zip(got, values):
        border = out[:, [0, 3]]
        np.testing.assert_array_equal(border, np.full((2, 2), value, np.float32))
        assert np.all(np.signbit(border) == np.signbit(value)) and np.all(out[:, 1:3] == 1.0)


def test_pad_value_must_be_a_number():
    with pytest.raises(kgen.ShapeError, match=r"pad: value must be a number, got \[1\.0\]"):
        ops.pad(kgen.tensor("x", (2,)), 1, value=[1.0])


@pytest.mark.parametrize("sizes,axis", [([1, 2, 0, 3], 1), ((4, 2), 0), ([6], 1), (3, 1)])
def test_split_sizes_match_torch_with_their_gradients(sizes, axis, rng):
    shape = (6, 6)
    x = rng.normal(size=shape)
    xn = kgen.tensor("x", shape)
    pieces = ops.split(xn, sizes, axis)
    torch_sizes = sizes if not isinstance(sizes, int) else shape[axis] // sizes
    tx = torch.tensor(x, requires_grad=True)
    want = torch.split(tx, torch_sizes if isinstance(torch_sizes, int) else list(torch_sizes), dim=axis)
    assert len(pieces) == len(want)
    weights = [rng.normal(size=tuple(w.shape)).astype(np.float32) for w in want]  # constants are float32
    loss = ops.sum(ops.stack([ops.sum(p * w) for p, w in zip(pieces, weights)]))
    grad, = kgen.grad(loss, [xn])
    got = kgen.reference.run(kgen.Graph([xn], list(pieces) + [grad]), {"x": x})
    sum(((w_ * torch.tensor(k).double()).sum() for w_, k in zip(want, weights)), torch.zeros((), dtype=torch.float64)).backward()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.detach().numpy())
    np.testing.assert_allclose(got[-1], tx.grad.numpy(), rtol=1e-12)


def test_split_sizes_on_the_kernels(rng):
    x = kgen.tensor("x", ("N", 7))
    a, b, c = ops.split(x, [2, 4, 1], axis=1)
    assert_matches_reference(kgen.Graph([x], [a * 2.0, ops.exp(b), c]), {"x": rng.normal(size=(3, 7)).astype(np.float32)})


def test_bad_split_sizes_are_clear_errors():
    x = kgen.tensor("x", ("N", 5))
    with pytest.raises(kgen.ShapeError, match=r"split: sizes \[2, 2\] must be ints >= 0 adding up to axis 1 of "
                                              r"f32\[N,5\], 5"):
        ops.split(x, [2, 2], axis=1)
    with pytest.raises(kgen.ShapeError, match=r"sizes \[6, -1\] must be ints >= 0"):
        ops.split(x, [6, -1], axis=1)
    with pytest.raises(kgen.ShapeError, match="does not divide into 2 equal parts"):
        ops.split(x, 2, axis=1)
    with pytest.raises(kgen.ShapeError, match="symbolic size N"):
        ops.split(x, [1, 1], axis=0)
