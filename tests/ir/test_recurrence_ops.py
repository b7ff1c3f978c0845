"""The recurrence template ops (kgen/ir/ops_recurrent.py): LSTM and GRU directions, forward
and reversed, against torch's gate math in float64 (values and the gradients of every
input through the ops' VJPs and gradient ops), every kernel under kgen.check strict with a
symbolic length and batch, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import ops
from kgen.errors import DTypeError, ShapeError
from kgen.ir import ops_recurrent as R

T, B, H = 3, 2, 5


def _torch_lstm(x, w, h, c, reverse):
    rows = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        i, f, g, o = (x[t] + h @ w.T).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        rows[t] = torch.cat([h, c], -1)
    return torch.stack([rows[0 if reverse else -1]] + rows)  # row 0: the final state


def _torch_gru(x, w, b, h, reverse):
    rows = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        xr, xz, xn = x[t].chunk(3, -1)
        hr, hz, hn = (h @ w.T + b).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        rows[t] = h
    return torch.stack([rows[0 if reverse else -1]] + rows)


CELLS = {
    "lstm": (lambda a: R.lstm_recurrence(*a[:4], reverse=a[4]), _torch_lstm,
             {"x": ("T", "N", 4 * H), "w": (4 * H, H), "h0": ("N", H), "c0": ("N", H)}),
    "gru": (lambda a: R.gru_recurrence(*a[:4], reverse=a[4]), _torch_gru,
            {"x": ("T", "N", 3 * H), "w": (3 * H, H), "b": (3 * H,), "h0": ("N", H)}),
}


def _values(shapes, rng):
    concrete = {name: tuple({"T": T, "N": B}.get(d, d) for d in shape) for name, shape in shapes.items()}
    return {name: (rng.normal(size=shape) * (0.4 if name == "w" else 1.0)) for name, shape in concrete.items()}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_values_and_gradients_match_torch(cell, reverse):
    build, theirs, shapes = CELLS[cell]
    inputs = [kgen.tensor(name, shape) for name, shape in shapes.items()]
    out = build(inputs + [reverse])
    weight = kgen.tensor("g", out.shape)
    grads = kgen.grad(ops.sum(out * weight), inputs)
    rng = np.random.default_rng(0)
    values = _values(shapes, rng)
    values["g"] = rng.normal(size=(T + 1, B, out.shape[2]))
    got = kgen.reference.run(kgen.Graph(inputs + [weight], [out] + grads), values)

    leaves = [torch.tensor(values[name], requires_grad=True) for name in shapes]
    want = theirs(*leaves, reverse)
    (want * torch.tensor(values["g"])).sum().backward()
    for name, g, w in zip(["out"] + [f"d {n}" for n in shapes], got, [want] + [leaf.grad for leaf in leaves]):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_kernels_match_the_reference(cell, reverse):
    """Forward and gradient kernels (T and the batch symbolic) against the reference, at two lengths."""
    build, _, shapes = CELLS[cell]
    inputs = [kgen.tensor(name, shape) for name, shape in shapes.items()]
    out = build(inputs + [reverse])
    weight = kgen.tensor("g", out.shape)
    fn = kgen.function(inputs + [weight], [out] + kgen.grad(ops.sum(out * weight), inputs))
    rng = np.random.default_rng(1)
    for steps in (T, 1):
        values = {k: v[:steps] if k == "x" else v for k, v in _values(shapes, rng).items()}
        values["g"] = rng.normal(size=(steps + 1, B, out.shape[2]))
        kgen.check(fn, [values[n].astype(np.float32) for n in list(shapes) + ["g"]], strict=True)


def test_gradient_matches_finite_differences():
    """d loss / d w_hh of an LSTM direction by central differences, in float64."""
    _, _, shapes = CELLS["lstm"]
    inputs = [kgen.tensor(name, shape) for name, shape in shapes.items()]
    out = R.lstm_recurrence(*inputs)
    loss = ops.sum(ops.tanh(out) * ops.tanh(out))
    graph = kgen.Graph(inputs, [loss] + kgen.grad(loss, [inputs[1]]))
    values = _values(shapes, np.random.default_rng(2))
    _, grad = kgen.reference.run(graph, values)
    eps, numeric = 1e-6, np.zeros_like(values["w"])
    for index in np.ndindex(values["w"].shape):
        shifted = []
        for sign in (1, -1):
            w = values["w"].copy()
            w[index] += sign * eps
            shifted.append(kgen.reference.run(graph, {**values, "w": w})[0])
        numeric[index] = (shifted[0] - shifted[1]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("build, error, message", [
    (lambda: R.lstm_recurrence(kgen.tensor("x", (3, 2, 8)), kgen.tensor("w", (4 * H, H)), kgen.tensor("h", (2, H)),
                               kgen.tensor("c", (2, H))), ShapeError, r"xproj \[T, B, 4\*H\] and w_hh \[4\*H, H\]"),
    (lambda: R.lstm_recurrence(kgen.tensor("x", (3, 2, 4 * H)), kgen.tensor("w", (4 * H, H)),
                               kgen.tensor("h", (3, H)), kgen.tensor("c", (2, H))), ShapeError, r"h0 of shape \[2,5\]"),
    (lambda: R.gru_recurrence(kgen.tensor("x", (3, 2, 3 * H)), kgen.tensor("w", (3 * H, H), "float16"),
                              kgen.tensor("b", (3 * H,)), kgen.tensor("h", (2, H))), DTypeError, "float dtype float32"),
])
def test_bad_operands_are_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()
