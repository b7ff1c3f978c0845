"""LSTM and GRU: torch's values and gradients from the same weights (through state_dict),
every kernel of a training step against the reference, and a loss that falls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import nn, ops
from kgen.errors import ShapeError

N, T, I, H = 3, 4, 5, 6
LAYERS = {"lstm": (nn.LSTM, torch.nn.LSTM), "gru": (nn.GRU, torch.nn.GRU)}


def _pair(kind, batch_first, bias=True):
    ours, theirs = LAYERS[kind]
    nn.manual_seed(1)
    layer = ours(I, H, bias=bias, batch_first=batch_first)
    twin = theirs(I, H, bias=bias, batch_first=batch_first).double()
    twin.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in layer.state_dict().items()})
    return layer, twin


def _run(layer, x_shape, x_value, state=None, state_values=()):
    """The layer's output and final hidden state (and their gradients of a weighted sum
    with respect to the input and every parameter), by the float64 reference."""
    x = kgen.tensor("x", x_shape)
    states = [kgen.tensor(f"s{i}", (1, "N", H)) for i in range(len(state_values))]
    hx = tuple(states) if len(states) == 2 else (states[0] if states else None)
    out, final = layer(x, hx)
    h_n = final[0] if isinstance(final, tuple) else final
    weights = kgen.tensor("wo", out.shape), kgen.tensor("wh", h_n.shape)
    loss = ops.sum(out * weights[0]) + ops.sum(h_n * weights[1])
    params = layer.parameters()
    grads = kgen.grad(loss, [x] + params)
    graph = kgen.Graph([x, *states, *weights] + params, [out, h_n] + grads)
    rng = np.random.default_rng(0)
    arrays = {"x": x_value, "wo": rng.normal(size=_concrete(out.shape, x_value, layer)),
              "wh": rng.normal(size=(1, x_value.shape[0 if layer.batch_first else 1], H))}
    arrays.update({f"s{i}": v for i, v in enumerate(state_values)})
    arrays.update({p.name: p.get_value() for p in params})
    return kgen.reference.run(graph, arrays), arrays


def _concrete(shape, x_value, layer):
    batch = x_value.shape[0 if layer.batch_first else 1]
    return tuple(d if isinstance(d, int) else batch for d in shape)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("batch_first", [True, False])
def test_values_and_gradients_match_torch(kind, batch_first):
    layer, twin = _pair(kind, batch_first)
    rng = np.random.default_rng(2)
    shape = ("N", T, I) if batch_first else (T, "N", I)
    x_value = rng.normal(size=(N, T, I) if batch_first else (T, N, I))
    got, arrays = _run(layer, shape, x_value)

    x = torch.tensor(x_value, requires_grad=True)
    out, final = twin(x)
    h_n = final[0] if isinstance(final, tuple) else final
    loss = (out * torch.tensor(arrays["wo"])).sum() + (h_n * torch.tensor(arrays["wh"])).sum()
    loss.backward()
    want = [out, h_n, x.grad] + [twin.state_dict(keep_vars=True)[name].grad for name, _ in layer.named_parameters()]
    for name, g, w in zip(["output", "h_n", "d x"] + [f"d {n}" for n, _ in layer.named_parameters()], got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_initial_state_and_no_bias_match_torch(kind):
    layer, twin = _pair(kind, batch_first=True, bias=False)
    rng = np.random.default_rng(3)
    x_value = rng.normal(size=(N, T, I))
    states = [rng.normal(size=(1, N, H)) for _ in range(2 if kind == "lstm" else 1)]
    got, _ = _run(layer, ("N", T, I), x_value, state_values=states)
    hx = tuple(torch.tensor(s) for s in states) if kind == "lstm" else torch.tensor(states[0])
    out, _ = twin(torch.tensor(x_value), hx)
    np.testing.assert_allclose(got[0], out.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_training_step_kernels_match_the_reference(kind):
    """A classifier step (forward, loss, backpropagation through time, Adam) through every
    generated kernel, against the reference."""
    nn.manual_seed(0)
    model = nn.Sequential(LAYERS[kind][0](I, H, batch_first=True), nn.LastStep(), nn.Linear(H, 3), nn.Softmax())
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, T, I)).astype(np.float32), rng.integers(0, 3, 7)
    step = nn.train_step(model, nn.losses.get("sparse_categorical_crossentropy"), nn.Adam(model.parameters()), x, y)
    kgen.check(step, [x, y], strict=True)


def test_sequence_classifier_learns():
    """Which of two patterns a noisy sequence follows, from its last state: the loss falls."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 64)
    ramp = np.linspace(-1, 1, T)[None, :, None]
    x = (np.where(labels[:, None, None] == 1, ramp, -ramp) + 0.3 * rng.normal(size=(64, T, 2))).astype(np.float32)
    nn.manual_seed(0)
    model = nn.Sequential(nn.GRU(2, 8, batch_first=True), nn.LastStep(), nn.Linear(8, 2), nn.Softmax())
    model.compile(nn.Adam(model.parameters(), lr=0.05), "sparse_categorical_crossentropy", ["accuracy"])
    first = model.evaluate(x, labels, verbose=False)[0]
    model.fit(x, labels, epochs=4, batch_size=32, verbose=False)
    loss, accuracy = model.evaluate(x, labels, verbose=False)
    assert loss < first / 3 and accuracy > 0.9


@pytest.mark.parametrize("build, message", [
    (lambda: nn.LSTM(5, 6)(kgen.tensor("x", ("N", 5))), r"\[time, batch, features\] with 5 features"),
    (lambda: nn.GRU(5, 6, batch_first=True)(kgen.tensor("x", ("N", 4, 3))), "5 features, got f32"),
    (lambda: nn.GRU(5, 6, batch_first=True)(kgen.tensor("x", ("N", 4, 5)), kgen.tensor("h", ("N", 6))),
     r"expected h0 of shape \[1, batch, 6\]"),
])
def test_bad_inputs_are_clear_errors(build, message):
    with pytest.raises(ShapeError, match=message):
        build()


@pytest.mark.parametrize("name, launches", [("lstm", 6), ("gru", 6)])
def test_zoo_training_step_launch_counts(name, launches):
    """28 steps of 28 pixels, the recurrence one persistent scan kernel forward and one
    reverse scan backward (kgen/kernels/scan.py): the input products, the recurrence, the
    classifier and its loss forward; the recurrence's gradient, then the weight gradients
    (with Adam in their epilogues), independent kernels sharing launches (L1). Was 116 (LSTM)
    and 142 (GRU) unrolled, 6 and 7 with the hand-written recurrence kernels."""
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    (x, y), _ = spec.data()
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x[:8], y[:8])
    assert len(step.program.kernels) == launches


def test_one_program_serves_every_sequence_length():
    """A symbolic time length: one compiled program serves two lengths (no new lowering),
    each matching torch; the kernels agree with the reference at both."""
    nn.manual_seed(0)
    layer = nn.LSTM(I, H, batch_first=True)
    twin = torch.nn.LSTM(I, H, batch_first=True)
    twin.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = kgen.tensor("x", ("N", "T", I))
    out, (h_n, c_n) = layer(x)
    fn = kgen.function([x], [out, h_n, c_n])
    rng = np.random.default_rng(6)
    values = [rng.normal(size=(3, steps, I)).astype(np.float32) for steps in (2, 5)]
    fn(values[0])
    before = kgen.counters.snapshot()
    for value in values:
        want, (want_h, want_c) = twin(torch.tensor(value))
        for g, w in zip(fn(value), (want, want_h, want_c)):
            np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert "lowerings" not in kgen.counters.since(before)
    for value in values:
        kgen.check(fn, [value], strict=True)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("with_states", [False, True])
def test_kernels_over_28_steps_match_torch(kind, with_states):
    """The zoo's sequence length through the persistent kernels (forward and gradient, not
    the reference): output, final states and the gradients of the input, the initial
    states and every parameter against torch in float64, with and without initial states."""
    layer, twin = _pair(kind, batch_first=True)
    steps, count = 28, 2 if kind == "lstm" else 1
    rng = np.random.default_rng(7)
    x_value = rng.normal(size=(N, steps, I)).astype(np.float32)
    state_values = [rng.normal(size=(1, N, H)).astype(np.float32) for _ in range(count)] if with_states else []
    x = kgen.tensor("x", ("N", steps, I))
    states = [kgen.tensor(f"s{i}", (1, "N", H)) for i in range(len(state_values))]
    out, final = layer(x, (tuple(states) if count == 2 else states[0]) if states else None)
    finals = list(final) if isinstance(final, tuple) else [final]
    weights = [kgen.tensor(f"w{i}", r.shape) for i, r in enumerate([out] + finals)]
    loss = sum(ops.sum(r * w) for r, w in zip([out] + finals, weights))
    fn = kgen.function([x, *states, *weights], [out] + finals + kgen.grad(loss, [x] + states + layer.parameters()))
    weight_values = [rng.normal(size=(N, steps, H) if i == 0 else (1, N, H)).astype(np.float32)
                     for i in range(len(weights))]
    got = [g.numpy() for g in fn(x_value, *state_values, *weight_values)]

    xt = torch.tensor(x_value, dtype=torch.float64, requires_grad=True)
    st = [torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in state_values]
    t_out, t_final = twin(xt, (tuple(st) if count == 2 else st[0]) if st else None)
    t_results = [t_out] + (list(t_final) if isinstance(t_final, tuple) else [t_final])
    sum((r * torch.tensor(w, dtype=torch.float64)).sum() for r, w in zip(t_results, weight_values)).backward()
    want = t_results + [xt.grad] + [s.grad for s in st] + [p.grad for p in twin.parameters()]
    names = ["output"] + [f"final {i}" for i in range(len(finals))] + ["d x"] + [f"d s{i}" for i in range(len(st))]
    names += [f"d {n}" for n, _ in layer.named_parameters()]
    assert len(got) == len(want) == len(names)
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_wide_layer_at_a_symbolic_length_is_one_persistent_kernel_each_way(kind):
    """H = 256, the widest the persistent scan template holds (kgen/lowering/scan_fit.py:
    a [256, 256] tile of w_hh per gate): a symbolic length still compiles (a body that did
    not fit would be a ShapeError there), forward and gradient one scan kernel each, values
    and gradients against torch."""
    hidden, steps = 256, 3
    ours, theirs = LAYERS[kind]
    nn.manual_seed(2)
    layer = ours(I, hidden)
    twin = theirs(I, hidden).double()
    twin.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in layer.state_dict().items()})
    x = kgen.tensor("x", ("T", 2, I))
    out, _ = layer(x)
    loss = ops.sum(out * out)
    fn = kgen.function([x], [out] + kgen.grad(loss, [x, layer.weight_hh_l0]))
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused", "fused"]
    value = np.random.default_rng(3).normal(size=(steps, 2, I)).astype(np.float32)
    got = fn(value)
    xt = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    want, _ = twin(xt)
    (want * want).sum().backward()
    for g, w in zip(got, (want.detach(), xt.grad, twin.weight_hh_l0.grad)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5)
