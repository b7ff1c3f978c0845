"""LSTM and GRU with torch's options (num_layers, bidirectional, batch_first, bias, dropout,
initial states): values of output, h_n and c_n and the gradients with respect to the input,
the initial states and every parameter against torch.nn.LSTM/GRU holding the same weights
(through state_dict) at lengths 1, 7 and 28, dropout between layers against torch fed kgen's mask, torch's
parameter names and order, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import nn, ops
from kgen.errors import ArgumentError, OptionError, ShapeError

B, I, H = 2, 3, 4
LAYERS = {"lstm": (nn.LSTM, torch.nn.LSTM), "gru": (nn.GRU, torch.nn.GRU)}


def _pair(kind, **options):
    """A kgen layer and its float64 torch twin holding the kgen layer's weights."""
    ours, theirs = LAYERS[kind]
    nn.manual_seed(1)
    layer = ours(I, H, **options)
    twin = theirs(I, H, **options).double()
    twin.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in layer.state_dict().items()})
    return layer, twin


def _x_shape(layer, steps, batch="N"):
    return (batch, steps, I) if layer.batch_first else (steps, batch, I)


def _finals(final):
    return list(final) if isinstance(final, tuple) else [final]


def _ours(layer, steps, x_value, state_values, extra=()):
    """The layer's output, final states and `extra` results, and the gradients of a weighted
    sum of output and final states with respect to the input, the initial states and every
    parameter, by the float64 reference; and the weights of that sum."""
    x = kgen.tensor("x", _x_shape(layer, steps))
    states = [kgen.tensor(f"s{i}", v.shape[:1] + ("N",) + v.shape[2:]) for i, v in enumerate(state_values)]
    hx = None if not states else (tuple(states) if len(states) == 2 else states[0])
    out, final = layer(x, hx)
    finals = _finals(final)
    results = [out] + finals + [f(out, final) for f in extra]
    weights = [kgen.tensor(f"w{i}", r.shape) for i, r in enumerate(results)]
    loss = sum(ops.sum(r * w) for r, w in zip(results, weights))
    params = layer.parameters()
    grads = kgen.grad(loss, [x] + states + params)
    graph = kgen.Graph([x, *states, *weights] + params, results + grads)
    batch = x_value.shape[0 if layer.batch_first else 1]
    rng = np.random.default_rng(0)
    arrays = {f"w{i}": rng.normal(size=tuple(d if isinstance(d, int) else batch for d in r.shape))
              for i, r in enumerate(results)}
    arrays.update({"x": x_value, **{f"s{i}": v for i, v in enumerate(state_values)}})
    arrays.update({p.name: p.get_value() for p in params})
    values = kgen.reference.run(graph, arrays)
    return values[:len(results)], values[len(results):], [arrays[f"w{i}"] for i in range(len(results))]


def _theirs(twin, x_value, state_values, weights, extra=()):
    """torch's results and gradients, in _ours' order."""
    x = torch.tensor(x_value, requires_grad=True)
    states = [torch.tensor(v, requires_grad=True) for v in state_values]
    hx = None if not states else (tuple(states) if len(states) == 2 else states[0])
    out, final = twin(x, hx)
    results = [out] + _finals(final) + [f(out, final) for f in extra]
    sum((r * torch.tensor(w)).sum() for r, w in zip(results, weights)).backward()
    grads = [x.grad] + [s.grad for s in states] + [p.grad for p in twin.parameters()]
    return [r.detach().numpy() for r in results], [g.numpy() for g in grads]


CASES = [  # num_layers, bidirectional, batch_first, bias, steps, initial states
    (2, True, False, True, 7, True),
    (2, True, True, True, 1, False),
    (2, False, True, False, 7, True),
    (1, True, False, True, 7, False),
    (3, False, False, True, 1, True),
    (1, True, True, True, 28, True),  # the zoo's length (28 rows of an MNIST digit)
    (2, False, False, False, 28, False),
]


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("layers, bidirectional, batch_first, bias, steps, with_states", CASES)
def test_values_and_gradients_match_torch(kind, layers, bidirectional, batch_first, bias, steps, with_states):
    layer, twin = _pair(kind, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    rng = np.random.default_rng(2)
    x_value = rng.normal(size=(B, steps, I) if batch_first else (steps, B, I))
    count = layers * (2 if bidirectional else 1)
    state_values = [rng.normal(size=(count, B, H)) for _ in range(2 if kind == "lstm" else 1)] if with_states else []
    got, got_grads, weights = _ours(layer, steps, x_value, state_values)
    want, want_grads = _theirs(twin, x_value, state_values, weights)
    width = count // layers * H
    assert got[0].shape == ((B, steps, width) if batch_first else (steps, B, width))
    names = ["output", "h_n", "c_n"][:len(got)]
    names += ["d x"] + [f"d s{i}" for i in range(len(state_values))] + [f"d {n}" for n, _ in layer.named_parameters()]
    for name, g, w in zip(names, got + got_grads, want + want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_step_reads_the_last_layer(kind, bidirectional):
    """LastStep: the last layer's h_n, both directions side by side when there are two (torch's
    cat(h_n[-2], h_n[-1]) idiom)."""
    layer, twin = _pair(kind, num_layers=2, bidirectional=bidirectional)
    x_value = np.random.default_rng(3).normal(size=(5, B, I))
    last = nn.LastStep()
    got, _, weights = _ours(layer, 5, x_value, [], extra=[lambda out, final: last((out, final))])
    def theirs(out, final):
        h_n = _finals(final)[0]
        return torch.cat([h_n[-2], h_n[-1]], 1) if bidirectional else h_n[-1]

    want, _ = _theirs(twin, x_value, [], weights, extra=[theirs])
    assert got[-1].shape == (B, 2 * H if bidirectional else H)
    np.testing.assert_allclose(got[-1], want[-1], rtol=1e-9, atol=1e-12)


def _forward(layer, x_value):
    """output and h_n by the reference, the dropout seed fed its current value."""
    x = kgen.tensor("x", x_value.shape)
    out, final = layer(x)
    params = layer.parameters() + ([layer.seed] if layer.seed is not None else [])
    graph = kgen.Graph([x] + params, [out, _finals(final)[0]])
    return kgen.reference.run(graph, {"x": x_value, **{p.name: p.get_value() for p in params}})


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dropout_between_layers(kind):
    """Evaluation: no dropout, torch's eval values. Training: layer 1 reads layer 0's output
    with a mask drawn from the seed, which zeroes some elements; torch's layers fed the same
    mask agree, and a step advances the seed past every mask it drew."""
    layer, twin = _pair(kind, num_layers=2, dropout=0.5, bidirectional=True)
    x_value = np.random.default_rng(4).normal(size=(6, B, I))
    twin.eval()
    layer.eval()
    evaluated = _forward(layer, x_value)
    want_eval = twin(torch.tensor(x_value))[0].detach().numpy()
    np.testing.assert_allclose(evaluated[0], want_eval, rtol=1e-9, atol=1e-12)
    assert layer.state_updates() == []

    layer.train()
    trained = _forward(layer, x_value)
    seed = int(layer.seed.get_value())
    mask = kgen.reference.run(kgen.Graph([], [ops.rand((6, B, 2 * H), seed)]), {})[0] >= 0.5
    assert 0.2 < mask.mean() < 0.8
    first, second = (LAYERS[kind][1](n, H, bidirectional=True).double() for n in (I, 2 * H))
    for k, target in enumerate((first, second)):
        target.load_state_dict({name.replace(f"_l{k}", "_l0"): v for name, v in twin.state_dict().items()
                                if f"_l{k}" in name})
    hidden = first(torch.tensor(x_value))[0] * torch.tensor(mask / 0.5)
    want = second(hidden)[0].detach().numpy()
    np.testing.assert_allclose(trained[0], want, rtol=1e-9, atol=1e-12)
    assert np.abs(trained[0] - evaluated[0]).max() > 1e-3

    (variable, advanced), = layer.state_updates()
    assert variable is layer.seed
    assert kgen.reference.run(kgen.Graph([layer.seed], [advanced]), {layer.seed.name: seed})[0] == seed + 1


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dropout_one_zeroes_the_next_layers_input_as_torch(kind):
    layer, twin = _pair(kind, num_layers=3, dropout=1.0)
    x_value = np.random.default_rng(5).normal(size=(4, B, I))
    twin.train()
    want = twin(torch.tensor(x_value))
    got = _forward(layer, x_value)
    np.testing.assert_allclose(got[0], want[0].detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[1], _finals(want[1])[0].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_names_order_and_initialisation_as_torch(kind, bias):
    ours, theirs = LAYERS[kind]
    layer = ours(I, H, num_layers=3, bias=bias, bidirectional=True)
    twin = theirs(I, H, num_layers=3, bias=bias, bidirectional=True)
    state = layer.state_dict()
    assert [(k, v.shape) for k, v in state.items()] == [(k, tuple(v.shape)) for k, v in twin.state_dict().items()]
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in twin.named_parameters()]
    values = np.concatenate([v.ravel() for v in state.values()])
    assert np.abs(values).max() <= H ** -0.5 and np.abs(values).max() > 0.9 * H ** -0.5
    twin.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    layer.load_state_dict(twin.state_dict())


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_bidirectional_two_layer_training_step_runs_every_kernel_as_the_reference(kind):
    """Forward, loss, backpropagation through both layers and directions, dropout and Adam,
    through every generated kernel; the step advances the dropout seed."""
    nn.manual_seed(0)
    model = nn.Sequential(LAYERS[kind][0](I, H, num_layers=2, batch_first=True, dropout=0.3, bidirectional=True),
                          nn.LastStep(), nn.Linear(2 * H, 3), nn.Softmax())
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 2, I)).astype(np.float32), rng.integers(0, 3, 5)
    step = nn.train_step(model, nn.losses.get("sparse_categorical_crossentropy"), nn.Adam(model.parameters()), x, y)
    seed = int(model[0].seed.get_value())
    kgen.check(step, [x, y], strict=True)
    step(x, y)
    assert int(model[0].seed.get_value()) == seed + 1


@pytest.mark.parametrize("build, error, message", [
    (lambda: nn.LSTM(I, H, num_layers=0), OptionError, "num_layers must be an int >= 1, got 0"),
    (lambda: nn.GRU(I, H, dropout=1.5), OptionError, r"dropout must be a number in \[0, 1\], got 1.5"),
    (lambda: nn.GRU(I, H, num_layers=2, bidirectional=True)(kgen.tensor("x", (5, "N", I)),
                                                            kgen.tensor("h", (2, "N", H))),
     ShapeError, r"expected h0 of shape \[4, batch, 4\] \(num_layers \* num_directions = 4"),
    (lambda: nn.GRU(I, H)(kgen.tensor("x", (5, 2, I)), kgen.tensor("h", (1, 3, H))),
     ShapeError, r"expected h0 of shape \[1, batch, 4\] .*batch 2\), got f32\[1,3,4\]"),
    (lambda: nn.LSTM(I, H, num_layers=2)(kgen.tensor("x", (5, "N", I)), kgen.tensor("h", (2, "N", H))),
     ArgumentError, r"initial states as a pair \(h0, c0\)"),
])
def test_bad_arguments_are_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()
