"""ONNX LSTM and GRU through kgen.from_onnx (kgen/frontends/onnx/ops_rnn.py): values against
torch.nn.LSTM/GRU with their weights converted to ONNX's gate order (both directions, both
layouts, padded sequences through sequence_lens against torch's packed sequences), GRU's
linear_before_reset=0 against onnx.reference, kgen.grad through the imported model against
torch's gradients, a symbolic sequence length served by one compiled program (each direction
one persistent scan kernel), the conformance suite's LSTM/GRU node cases, and the refusals."""
import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kgen
from kgen import ops
from kgen.errors import OptionError, ShapeError
from kgen.frontends.onnx import conformance
from kgen.frontends.onnx.backend import KgenBackend

TOL = dict(rtol=1e-4, atol=1e-5)
SEQ, BATCH, INPUT, HIDDEN = 3, 2, 4, 3
# torch's gate blocks -> ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
ONNX_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}
TORCH_CLASS = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}


def _reorder(op, w):
    return np.concatenate([np.split(w, len(ONNX_ORDER[op]))[k] for k in ONNX_ORDER[op]])


def _onnx_weights(op, net) -> dict:
    """W, R, B of a one-layer torch LSTM/GRU, in ONNX's layout and gate order."""
    suffixes = ["_l0", "_l0_reverse"][:2 if net.bidirectional else 1]
    p = {name: t.detach().numpy() for name, t in net.named_parameters()}
    return {"W": np.stack([_reorder(op, p["weight_ih" + s]) for s in suffixes]),
            "R": np.stack([_reorder(op, p["weight_hh" + s]) for s in suffixes]),
            "B": np.stack([np.concatenate([_reorder(op, p["bias_ih" + s]), _reorder(op, p["bias_hh" + s])])
                           for s in suffixes])}


def _model(op, weights: dict, x_shape, attrs: dict, extra=()) -> onnx.ModelProto:
    """One LSTM/GRU node: graph inputs X and `extra` (initial_h/c or sequence_lens, as
    (name, type, shape)), W/R/B as initializers (float: the module's parameters)."""
    directions = weights["W"].shape[0]
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][:8 if op == "LSTM" else 6]
    given = {"X", *weights, *(name for name, _, _ in extra)}
    names = [n if n in given else "" for n in order]
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, names, outputs, hidden_size=HIDDEN, **attrs)
    layout = attrs.get("layout", 0)
    batch, seq = (x_shape[0], x_shape[1]) if layout else (x_shape[1], x_shape[0])
    y_shape = [batch, seq, directions, HIDDEN] if layout else [seq, directions, batch, HIDDEN]
    h_shape = [batch, directions, HIDDEN] if layout else [directions, batch, HIDDEN]
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
        + [helper.make_tensor_value_info(n, t, s) for n, t, s in extra],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, h_shape) for n in outputs[1:]],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _torch_net(op, bidirectional, seed=0):
    torch.manual_seed(seed)
    return TORCH_CLASS[op](INPUT, HIDDEN, bidirectional=bidirectional)


def _torch_outputs(op, net, x, states):
    """torch's outputs in ONNX's shapes: Y [seq, directions, batch, hidden], Y_h (, Y_c)."""
    with torch.no_grad():
        y, final = net(torch.from_numpy(x), states)
    finals = final if op == "LSTM" else (final,)
    y = y.reshape(x.shape[0], x.shape[1], -1, HIDDEN).permute(0, 2, 1, 3)
    return [y.numpy(), *(f.numpy() for f in finals)]


def _state_inputs(op, directions, rng):
    states = [rng.standard_normal((directions, BATCH, HIDDEN)).astype(np.float32)
              for _ in range(2 if op == "LSTM" else 1)]
    extra = [(n, TensorProto.FLOAT, [directions, BATCH, HIDDEN]) for n in ["initial_h", "initial_c"][:len(states)]]
    return states, extra


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction,layout", [("forward", 0), ("bidirectional", 0), ("bidirectional", 1)])
def test_matches_torch(op, direction, layout):
    rng = np.random.default_rng(1)
    bidirectional = direction == "bidirectional"
    net = _torch_net(op, bidirectional)
    x = rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)
    states, extra = _state_inputs(op, 1 + bidirectional, rng)
    attrs = {"direction": direction, "layout": layout, **({"linear_before_reset": 1} if op == "GRU" else {})}
    expected = _torch_outputs(op, net, x, tuple(map(torch.from_numpy, states)) if op == "LSTM"
                              else torch.from_numpy(states[0]))
    if layout:
        x = x.transpose(1, 0, 2)
        states = [s.transpose(1, 0, 2) for s in states]
        extra = [(n, t, [BATCH, 1 + bidirectional, HIDDEN]) for n, t, _ in extra]
        expected = [expected[0].transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in expected[1:]]
    model = _model(op, _onnx_weights(op, net), list(x.shape), attrs, extra=extra)
    got = KgenBackend.prepare(model).run([x, *states])
    for name, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
        np.testing.assert_allclose(g, e, **TOL, err_msg=f"{op} {direction} layout {layout}: {name}")


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_reverse_is_forward_on_the_reversed_sequence(op):
    """direction=reverse against torch's forward cell run on the sequence read backward."""
    rng = np.random.default_rng(2)
    net = _torch_net(op, False)
    x = rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)
    expected = _torch_outputs(op, net, x[::-1].copy(), None)
    expected[0] = expected[0][::-1]
    attrs = {"direction": "reverse", **({"linear_before_reset": 1} if op == "GRU" else {})}
    got = KgenBackend.prepare(_model(op, _onnx_weights(op, net), list(x.shape), attrs)).run([x])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)


def _packed_outputs(op, net, x, lengths):
    """A bidirectional torch net's outputs on x padded to `lengths` (packed sequences), in
    ONNX's shapes."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     enforce_sorted=False)
    with torch.no_grad():
        y, final = net(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=x.shape[0])
    expected = [y.reshape(x.shape[0], x.shape[1], 2, HIDDEN).permute(0, 2, 1, 3).numpy()]
    return expected + [f.numpy() for f in (final if op == "LSTM" else (final,))]


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_sequence_lens_match_packed_sequences(op):
    """Lengths given at run time: steps past a sequence's end keep its state and output
    zero, as torch's packed sequences (the reverse direction starts at each sequence's end)."""
    rng = np.random.default_rng(3)
    batch, lengths = 3, np.array([3, 1, 2], np.int32)
    net = _torch_net(op, True)
    x = rng.standard_normal((SEQ, batch, INPUT)).astype(np.float32)
    expected = _packed_outputs(op, net, x, lengths)
    attrs = {"direction": "bidirectional", **({"linear_before_reset": 1} if op == "GRU" else {})}
    model = _model(op, _onnx_weights(op, net), list(x.shape), attrs,
                   extra=[("sequence_lens", TensorProto.INT32, [batch])])
    got = KgenBackend.prepare(model).run([x, lengths])
    for name, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
        np.testing.assert_allclose(g, e, **TOL, err_msg=f"{op}: {name}")


def test_gru_reset_before_linear_matches_onnx_reference():
    """linear_before_reset=0 (ONNX's default; torch has only 1), with biases and initial_h."""
    rng = np.random.default_rng(4)
    weights = {"W": rng.standard_normal((1, 3 * HIDDEN, INPUT)), "R": rng.standard_normal((1, 3 * HIDDEN, HIDDEN)),
               "B": rng.standard_normal((1, 6 * HIDDEN))}
    x = rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)
    states, extra = _state_inputs("GRU", 1, rng)
    model = _model("GRU", weights, list(x.shape), {}, extra=extra)
    expected = ReferenceEvaluator(model).run(None, {"X": x, "initial_h": states[0]})
    got = KgenBackend.prepare(model).run([x, *states])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL)


def _numpy_lstm(x, w, r, b, p, clip, f, g, h):
    """One forward LSTM direction from ONNX's equations, with peepholes, input_forget and clip."""
    def part(v, k):
        return v[..., k * HIDDEN:(k + 1) * HIDDEN]

    def clipped(v):
        return np.clip(v, -clip, clip)

    ht, ct, ys = np.zeros((x.shape[1], HIDDEN)), np.zeros((x.shape[1], HIDDEN)), []
    for xt in x:
        z = xt @ w.T + ht @ r.T + b[:4 * HIDDEN] + b[4 * HIDDEN:]
        i = f(clipped(part(z, 0) + part(p, 0) * ct))
        c_new = (1 - i) * ct + i * g(clipped(part(z, 3)))
        o = f(clipped(part(z, 1) + part(p, 1) * c_new))
        ht, ct = o * h(c_new), c_new
        ys.append(ht)
    return np.stack(ys)[:, None], ht[None], ct[None]


def test_lstm_peepholes_input_forget_clip_and_activations_match_numpy():
    """Activations with alpha/beta (consumed in order by those that take them), clip on the
    gates' inputs, input_forget (f = 1 - i) and peepholes, against ONNX's equations in NumPy."""
    rng = np.random.default_rng(6)
    weights = {"W": rng.standard_normal((1, 4 * HIDDEN, INPUT)), "R": rng.standard_normal((1, 4 * HIDDEN, HIDDEN)),
               "B": rng.standard_normal((1, 8 * HIDDEN)), "P": rng.standard_normal((1, 3 * HIDDEN))}
    attrs = {"activations": ["HardSigmoid", "LeakyRelu", "ScaledTanh"], "activation_alpha": [0.1, 0.2, 0.9],
             "activation_beta": [0.5, 1.1], "clip": 1.5, "input_forget": 1}
    x = rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)
    expected = _numpy_lstm(x, *(weights[n][0] for n in "WRBP"), 1.5, lambda v: np.clip(0.1 * v + 0.5, 0, 1),
                           lambda v: np.where(v > 0, v, 0.2 * v), lambda v: 0.9 * np.tanh(1.1 * v))
    got = KgenBackend.prepare(_model("LSTM", weights, list(x.shape), attrs)).run([x])
    for name, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
        np.testing.assert_allclose(g, e, **TOL, err_msg=name)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_gradients_match_torch(op):
    """kgen.grad of sum(Y * G) through the imported bidirectional model, for X and each of
    W, R, B, against torch's gradients (converted to ONNX's gate order)."""
    rng = np.random.default_rng(5)
    net = _torch_net(op, True)
    x = rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)
    seed = rng.standard_normal((SEQ, 2, BATCH, HIDDEN)).astype(np.float32)
    attrs = {"direction": "bidirectional", **({"linear_before_reset": 1} if op == "GRU" else {})}
    module = kgen.from_onnx(_model(op, _onnx_weights(op, net), list(x.shape), attrs))
    xs = kgen.tensor(*module.inputs[0])
    y = module(xs)[0]
    loss = ops.sum(ops.mul(y, ops.constant(seed)))
    names, params = zip(*module.named_parameters())
    fn = kgen.function([xs], kgen.grad(loss, [xs, *params]))
    # each direction's scan and its gradient's reverse scan: one persistent kernel each
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused"] * 4
    got = fn(x)

    xt = torch.from_numpy(x).requires_grad_()
    yt, _ = net(xt)
    (yt.reshape(SEQ, BATCH, 2, HIDDEN).permute(0, 2, 1, 3) * torch.from_numpy(seed)).sum().backward()
    expected = {"X": xt.grad.numpy(), **_onnx_weights(op, _Grads(net))}
    for name, g in zip(["X", *names], got):
        np.testing.assert_allclose(np.asarray(g), expected[name.split(".")[-1]], **TOL, err_msg=f"{op}: d/d{name}")


class _Grads:
    """A torch net's gradients standing in for its parameters (for `_onnx_weights`)."""

    def __init__(self, net):
        self.bidirectional = net.bidirectional
        self._grads = [(name, p.grad) for name, p in net.named_parameters()]

    def named_parameters(self):
        return self._grads


# every LSTM/GRU node case of the onnx wheel (its forms: defaults, initial bias, peepholes with
# sequence_lens, batch-first layout, reverse, bidirectional, GRU's sequence lengths)
CASES = ["test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise",
         "test_lstm_reverse", "test_lstm_bidirectional", "test_gru_defaults", "test_gru_with_initial_bias",
         "test_gru_seq_length", "test_gru_batchwise", "test_gru_reverse", "test_gru_bidirectional"]


@functools.lru_cache(maxsize=None)
def _node_cases() -> dict:
    return {case.name: case for case in conformance.load_cases("node") if case.name in CASES}


@pytest.mark.parametrize("name", CASES)
def test_conformance_case(name):
    assert conformance.run_case(_node_cases()[name]) == ("pass", "")


def test_refusals_name_the_node_and_the_cause():
    net = _torch_net("LSTM", False)
    weights = _onnx_weights("LSTM", net)
    with pytest.raises(OptionError, match=r"LSTM node .*activation 'Gelu'"):
        kgen.from_onnx(_model("LSTM", weights, [SEQ, BATCH, INPUT], {"activations": ["Sigmoid", "Gelu", "Tanh"]}))
    with pytest.raises(OptionError, match=r"LSTM node .*activations must list 3"):
        kgen.from_onnx(_model("LSTM", weights, [SEQ, BATCH, INPUT], {"activations": ["Sigmoid", "Tanh"]}))
    with pytest.raises(ShapeError, match=r"LSTM node .*sequence_lens must have shape \[2\]"):
        kgen.from_onnx(_model("LSTM", weights, [SEQ, BATCH, INPUT], {},
                              extra=[("sequence_lens", TensorProto.INT32, [BATCH + 1])]))
    with pytest.raises(ShapeError, match=r"LSTM node .*B must have shape \[1,24\]"):
        kgen.from_onnx(_model("LSTM", {**weights, "B": weights["B"][:, :5]}, [SEQ, BATCH, INPUT], {}))


def test_symbolic_batch_imports():
    module = kgen.from_onnx(_model("GRU", _onnx_weights("GRU", _torch_net("GRU", True)), [SEQ, "N", INPUT],
                                   {"direction": "bidirectional"}))
    assert str(module.inputs[0][1][1]) == "N"


def _symbolic(op, attrs: dict, extra=(), directions=1):
    """The model with sequence length T, compiled once: (kgen.function of its inputs, the module)."""
    net = _torch_net(op, directions == 2)
    module = kgen.from_onnx(_model(op, _onnx_weights(op, net), ["T", BATCH, INPUT], attrs, extra=extra))
    inputs = [kgen.tensor(*spec) for spec in module.inputs]
    return kgen.function(inputs, list(module(*inputs))), net


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_one_program_serves_every_sequence_length(op):
    """A dim_param on the sequence axis: one persistent scan kernel (fusion rule S1), and one
    compiled program serves two lengths (no new lowering), each matching torch."""
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    fn, net = _symbolic(op, attrs)
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused"]
    rng = np.random.default_rng(7)
    values = [rng.standard_normal((steps, BATCH, INPUT)).astype(np.float32) for steps in (2, 5)]
    fn(values[0])
    before = kgen.counters.snapshot()
    for x in values:
        for name, g, e in zip(["Y", "Y_h", "Y_c"], fn(x), _torch_outputs(op, net, x, None)):
            np.testing.assert_allclose(np.asarray(g), e, **TOL, err_msg=f"{op} at {x.shape[0]} steps: {name}")
    assert "lowerings" not in kgen.counters.since(before)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_sequence_lens_and_both_directions_fuse_at_a_symbolic_length(op):
    """sequence_lens (a mask scanned with the projections) and both directions at a symbolic
    length: every scan one kernel, values against torch's packed sequences."""
    attrs = {"direction": "bidirectional", **({"linear_before_reset": 1} if op == "GRU" else {})}
    fn, net = _symbolic(op, attrs, directions=2, extra=[("sequence_lens", TensorProto.INT32, [BATCH])])
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused", "fused"]
    rng = np.random.default_rng(8)
    x, lengths = rng.standard_normal((4, BATCH, INPUT)).astype(np.float32), np.array([4, 2], np.int32)
    for name, g, e in zip(["Y", "Y_h", "Y_c"], fn(x, lengths), _packed_outputs(op, net, x, lengths)):
        np.testing.assert_allclose(np.asarray(g), e, **TOL, err_msg=f"{op}: {name}")


def test_gru_reset_before_linear_fuses_at_a_symbolic_length():
    """ONNX's default linear_before_reset=0: a second product (r * h) @ R_h in the step, a
    per-row value times a loop-invariant weight, still one kernel; against onnx.reference."""
    rng = np.random.default_rng(10)
    weights = {"W": rng.standard_normal((1, 3 * HIDDEN, INPUT)), "R": rng.standard_normal((1, 3 * HIDDEN, HIDDEN)),
               "B": rng.standard_normal((1, 6 * HIDDEN))}
    module = kgen.from_onnx(_model("GRU", weights, ["T", BATCH, INPUT], {}))
    x = kgen.tensor(*module.inputs[0])
    fn = kgen.function([x], list(module(x)))
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused"]
    value = rng.standard_normal((4, BATCH, INPUT)).astype(np.float32)
    expected = ReferenceEvaluator(_model("GRU", weights, list(value.shape), {})).run(None, {"X": value})
    for g, e in zip(fn(value), expected):
        np.testing.assert_allclose(np.asarray(g), e, **TOL)


def test_a_hidden_size_over_the_template_is_a_shape_error_at_a_symbolic_length():
    """hidden_size 257 is wider than the persistent template holds (256 columns): unrolled at
    a static length, a ShapeError naming the reason at a symbolic one."""
    hidden, rng = 257, np.random.default_rng(9)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W", (1, 3 * hidden, INPUT)), ("R", (1, 3 * hidden, hidden)))]
    graph = helper.make_graph(
        [helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=hidden)], "GRU",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", BATCH, INPUT])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], weights)
    module = kgen.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    x = kgen.tensor(*module.inputs[0])
    with pytest.raises(ShapeError, match=r"a symbolic length needs the persistent scan kernel.*carry 0 is "
                                         r"f32\[2,257\]; the template holds static widths of at most 256"):
        kgen.function([x], [module(x)])
