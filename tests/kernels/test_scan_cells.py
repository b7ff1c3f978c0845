"""LSTM and GRU cells written with kgen.scan (the gates as column slices of one product
h @ W_hh.T, as torch computes them) train with ONE persistent kernel forward and ONE
backward, besides the GEMMs before and after the loop (fusion rule S1; the backward body
fits through scan_fit's column blocks), at lengths 1 and 7 and at a symbolic length one
compile serves. Values and every gradient against torch.nn.LSTM / torch.nn.GRU, every kernel
against the reference (strict). benchmarks/scan_cells.py compares their launches and bytes
with the hand-written recurrence kernels of kgen.nn (kgen/kernels/recurrent.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import ops
from kgen.nn.recurrent import gru_direction, lstm_direction

RNG = np.random.default_rng(11)
STEPS, BATCH, INPUTS, HIDDEN = 7, 3, 5, 8


SHAPES = {  # per cell: the inputs after x [T, B, I]
    "lstm": {"h0": (BATCH, HIDDEN), "c0": (BATCH, HIDDEN), "w_ih": (4 * HIDDEN, INPUTS),
             "w_hh": (4 * HIDDEN, HIDDEN), "b_ih": (4 * HIDDEN,), "b_hh": (4 * HIDDEN,)},
    "gru": {"h0": (BATCH, HIDDEN), "w_ih": (3 * HIDDEN, INPUTS), "w_hh": (3 * HIDDEN, HIDDEN),
            "b_ih": (3 * HIDDEN,), "b_hh": (3 * HIDDEN,)},
}


def training_graph(cell: str, steps):
    """(inputs, outputs) of a loss reading every step's h, h_n (and c_n), and its gradients
    with respect to every input: x, the initial states, the weights and biases."""
    nodes = {"x": kgen.tensor("x", (steps, BATCH, INPUTS))}
    nodes.update({name: kgen.tensor(name, shape) for name, shape in SHAPES[cell].items()})
    weight = kgen.tensor("g", (steps, BATCH, HIDDEN))  # the cotangent of every h
    x = nodes["x"]
    flat = ops.reshape(x, (-1, INPUTS)) @ ops.transpose(nodes["w_ih"]) + nodes["b_ih"]
    if cell == "lstm":
        xproj = ops.reshape(flat + nodes["b_hh"], (x.shape[0], BATCH, 4 * HIDDEN))
        hs, (h_n, c_n) = lstm_direction(xproj, nodes["w_hh"], nodes["h0"], nodes["c0"])
        loss = ops.sum(hs * weight) + ops.sum(h_n * h_n) + ops.sum(c_n * 0.5)
    else:
        xproj = ops.reshape(flat, (x.shape[0], BATCH, 3 * HIDDEN))
        hs, (h_n,) = gru_direction(xproj, nodes["w_hh"], nodes["b_hh"], nodes["h0"])
        loss = ops.sum(hs * weight) + ops.sum(h_n * h_n)
    grads = kgen.grad(loss, list(nodes.values()))
    return [*nodes.values(), weight], [loss, hs, *grads]


def _data(cell: str, steps: int) -> list:
    shapes = {"x": (steps, BATCH, INPUTS), **SHAPES[cell], "g": (steps, BATCH, HIDDEN)}
    return [(RNG.standard_normal(s) * 0.5).astype(np.float32) for s in shapes.values()]


def torch_reference(cell: str, data: list) -> list:
    """The loss, every h and the gradients of training_graph, by torch.nn.LSTM / GRU in float64."""
    names = ["x", *SHAPES[cell], "g"]
    values = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(names, data)}
    layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(INPUTS, HIDDEN).double()
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            getattr(layer, {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0"}.get(name, name.replace("b_", "bias_")
                                                                                + "_l0")).copy_(values[name])
    x, h0 = values["x"].requires_grad_(), values["h0"].requires_grad_()
    if cell == "lstm":
        c0 = values["c0"].requires_grad_()
        hs, (h_n, c_n) = layer(x, (h0[None], c0[None]))
        loss = (hs * values["g"]).sum() + (h_n * h_n).sum() + (c_n * 0.5).sum()
        leaves = [x, h0, c0]
    else:
        hs, h_n = layer(x, h0[None])
        loss = (hs * values["g"]).sum() + (h_n * h_n).sum()
        leaves = [x, h0]
    loss.backward()
    params = [layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0]
    return [loss.detach(), hs.detach()] + [leaf.grad for leaf in leaves + params]


def _kernels(fn) -> list:
    """The kind of every kernel, combo kernels' parts included."""
    return [k.kind for launch in fn.kernels for k in (launch.parts or [launch])]


def _assert_one_kernel_each_way(fn):
    decisions = [(d.outcome, d.reason) for d in fn.program.plan.decisions if d.rule == "S1"]
    assert [o for o, _ in decisions] == ["fused", "fused"], decisions  # the forward scan, ONE reverse scan
    kinds = _kernels(fn)
    assert kinds.count("scan") == 2, kinds
    # the input products before the loop; after it, the gradients of x and W_ih (from the gates'
    # cotangents the reverse scan stacks) and of W_hh, each one matmul over every step
    assert kinds.count("matmul") == 4, kinds


def _assert_matches_torch(cell, got, data, rtol):
    names = ["loss", "hs", "x", *SHAPES[cell]]
    for name, g, w in zip(names, got, torch_reference(cell, data)):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), w.numpy(), rtol=rtol, atol=rtol * 0.1,
                                   err_msg=f"{cell} {name}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("steps", [1, 7])
def test_a_scan_cell_trains_with_one_kernel_each_way(cell, steps):
    inputs, outputs = training_graph(cell, steps)
    fn = kgen.function(inputs, outputs)
    _assert_one_kernel_each_way(fn)
    data = _data(cell, steps)
    assert kgen.check(fn, data, strict=True).ok
    _assert_matches_torch(cell, fn(*data), data, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_symbolic_length_is_one_compile_for_every_length(cell):
    inputs, outputs = training_graph(cell, "T")
    fn = kgen.function(inputs, outputs)
    _assert_one_kernel_each_way(fn)
    before = None
    for steps in (7, 1, 4):
        data = _data(cell, steps)
        got = fn(*data)
        if before is None:
            before = kgen.counters.snapshot()  # compiled at the first call
            assert kgen.check(fn, data, strict=True).ok
        _assert_matches_torch(cell, got, data, rtol=1e-5)
        assert np.asarray(got[1]).shape == (steps, BATCH, HIDDEN)
    assert kgen.counters.since(before).get("lowerings", 0) == 0

