"""ONNX recurrent ops onto kgen.ops: LSTM and GRU, unrolled over a static sequence length.

kgen's graphs have fixed shapes and no loops, so a recurrence becomes one cell per time step:
the input projection of all steps is one matmul, and each step adds its hidden state's
projection and applies the gates. Directions (forward, reverse, bidirectional), both layouts,
biases, initial states, LSTM peepholes and input_forget, GRU's linear_before_reset, `clip`
and the activations ONNX lists are translated. `sequence_lens` masks the steps past each
sequence's end (its state stays, its output is zero), so it may be computed at run time.

ONNX orders the gates i, o, f, c (LSTM) and z, r, h (GRU) in W, R and B; the peepholes P
are i, o, f.
"""
from __future__ import annotations

from dataclasses import dataclass

from kgen import ops
from kgen.errors import KgenError, ShapeError
from kgen.frontends.onnx.table import onnx_op

# name (lower case) -> (function of x, alpha, beta; alpha's default, beta's default); None: no
# such parameter, REQUIRED_VALUE: the activation_alpha/beta lists must give it.
REQUIRED_VALUE = object()
_ACTIVATIONS = {
    "sigmoid": (lambda x, a, b: ops.sigmoid(x), None, None),
    "tanh": (lambda x, a, b: ops.tanh(x), None, None),
    "relu": (lambda x, a, b: ops.relu(x), None, None),
    "affine": (lambda x, a, b: ops.add(ops.mul(x, a), b), REQUIRED_VALUE, REQUIRED_VALUE),
    "leakyrelu": (lambda x, a, b: ops.leaky_relu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: ops.where(ops.greater(x, a), x, 0.0), 1.0, None),
    "scaledtanh": (lambda x, a, b: ops.mul(ops.tanh(ops.mul(x, b)), a), REQUIRED_VALUE, REQUIRED_VALUE),
    "hardsigmoid": (lambda x, a, b: ops.clamp(ops.add(ops.mul(x, a), b), 0.0, 1.0), 0.2, 0.5),
    "elu": (lambda x, a, b: ops.elu(x, a), 1.0, None),
    "softsign": (lambda x, a, b: ops.div(x, ops.add(ops.abs(x), 1.0)), None, None),
    "softplus": (lambda x, a, b: ops.softplus(x), None, None),
}
_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}
_GATES = {"LSTM": 4, "GRU": 3}


@dataclass
class _Cell:
    """What every direction of one recurrent node shares: its activations (one tuple per
    direction), clip, and the sequence mask."""
    activations: list
    clip: float | None
    lengths: object  # a kgen [batch] tensor of sequence lengths, or None when all run the whole sequence

    def gate(self, x, fn):
        if self.clip is not None:
            x = ops.clamp(x, -self.clip, self.clip)
        return fn(x)


@onnx_op("LSTM")
def _lstm(node):
    return _recurrent(node, _lstm_direction)


@onnx_op("GRU")
def _gru(node):
    return _recurrent(node, _gru_direction)


def _recurrent(node, direction_fn):
    """The node's outputs Y, Y_h (and Y_c): each direction run by `direction_fn`, stacked on
    ONNX's num_directions axis, in the node's layout."""
    directions = _directions(node)
    layout = node.attr("layout", 0)
    x = node.tensor(0)
    if x.ndim != 3:
        raise node.refuse(f"X must be 3-D, got {x.type_str()}", ShapeError)
    if layout:
        x = ops.permute(x, 1, 0, 2)
    steps = x.shape[0]
    if not isinstance(steps, int):
        raise node.refuse(f"the sequence length must be static (kgen unrolls the recurrence), got {steps}",
                          ShapeError)
    weights, recurrence = node.tensor(1), node.tensor(2)
    hidden = int(node.attr("hidden_size", recurrence.shape[-1]))
    gates = _GATES[node.op]
    _check_shape(node, "W", weights, (len(directions), gates * hidden, x.shape[2]))
    _check_shape(node, "R", recurrence, (len(directions), gates * hidden, hidden))
    cell = _Cell(_activations(node, len(directions)), node.attr("clip", None), _lengths(node, steps))
    states = [_initial(node, i, layout) for i in (5, 6)[:gates - 2]]
    outputs = []
    for d, reverse in enumerate(directions):
        bias = ops.getitem(node.tensor(3), d) if node.has(3) else None
        peepholes = ops.getitem(node.tensor(7), d) if node.op == "LSTM" and node.has(7) else None
        projected = ops.matmul(x, ops.swap_last(ops.getitem(weights, d)))
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        init = [None if s is None else ops.getitem(s, d) for s in states]
        outputs.append(direction_fn(node, cell, d, projected, ops.getitem(recurrence, d), bias, peepholes, order,
                                    init, hidden))
    return _assemble(outputs, steps, layout)


def _directions(node) -> list:
    """Whether each direction runs backward in time."""
    direction = node.attr("direction", "forward")
    found = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
    if found is None:
        raise node.refuse(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    return found


def _check_shape(node, what, value, shape):
    if tuple(value.shape) != shape:
        raise node.refuse(f"{what} must have shape {list(shape)} (num_directions, gates * hidden_size, ...), got "
                          f"{value.type_str()}", ShapeError)


def _activations(node, directions: int) -> list:
    """Per direction, the activation functions (f, g[, h]) as one-argument functions, with
    activation_alpha/beta consumed in order by the activations that take them (as
    onnxruntime reads them)."""
    names = list(node.attr("activations", _DEFAULTS[node.op] * directions))
    per = len(_DEFAULTS[node.op])
    if len(names) != per * directions:
        raise node.refuse(f"activations must list {per * directions} functions ({per} per direction), got {names}")
    alphas, betas = list(node.attr("activation_alpha", [])), list(node.attr("activation_beta", []))
    fns = []
    for name in names:
        name = name.decode() if isinstance(name, bytes) else name
        if name.lower() not in _ACTIVATIONS:
            known = ", ".join(sorted(_ACTIVATIONS))
            raise node.refuse(f"activation {name!r} is not one kgen translates (it has {known})")
        fn, alpha_default, beta_default = _ACTIVATIONS[name.lower()]
        alpha = _parameter(node, name, "activation_alpha", alphas, alpha_default)
        beta = _parameter(node, name, "activation_beta", betas, beta_default)
        fns.append(lambda x, fn=fn, alpha=alpha, beta=beta: fn(x, alpha, beta))
    return [tuple(fns[d * per:(d + 1) * per]) for d in range(directions)]


def _parameter(node, name, attribute, given: list, default):
    if default is None:
        return None
    if given:
        return float(given.pop(0))
    if default is REQUIRED_VALUE:
        raise node.refuse(f"activation {name!r} needs a value in {attribute}, which has none left")
    return default


def _lengths(node, steps: int):
    """The sequence lengths as a kgen tensor, or None when they are known at import and all
    equal the sequence length (then no step needs a mask)."""
    if not node.has(4):
        return None
    try:
        known = node.static(4)
    except KgenError:
        return node.tensor(4)
    if (known.reshape(-1) == steps).all():
        return None
    if (known < 0).any() or (known > steps).any():
        raise node.refuse(f"sequence_lens must lie in [0, {steps}], got {known.tolist()}", ShapeError)
    return node.tensor(4)


def _initial(node, i: int, layout: int):
    """initial_h / initial_c as [num_directions, batch, hidden], or None (zeros)."""
    if not node.has(i):
        return None
    state = node.tensor(i)
    return ops.permute(state, 1, 0, 2) if layout else state


def _zeros(projected, hidden: int):
    """A zero [batch, hidden] state in the input's dtype."""
    return ops.broadcast_to(ops.constant(0.0, projected.dtype), (projected.shape[1], hidden))


def _bias_halves(bias, gates: int, hidden: int):
    """B's input and recurrence halves (Wb, Rb), or (None, None)."""
    if bias is None:
        return None, None
    return ops.getitem(bias, slice(0, gates * hidden)), ops.getitem(bias, slice(gates * hidden, 2 * gates * hidden))


def _part(x, k: int, hidden: int):
    """Gate k of a [..., gates * hidden] tensor."""
    return ops.getitem(x, (..., slice(k * hidden, (k + 1) * hidden)))


def _add(x, y):
    return x if y is None else ops.add(x, y)


def _masked(cell, t: int, new, old):
    """The step's new state where step t lies within the sequence, the old one past its end."""
    if cell.lengths is None:
        return new
    return ops.where(_valid(cell, t), new, old)


def _valid(cell, t: int):
    return ops.expand_dims(ops.less(t, cell.lengths), 1)


def _output(cell, t: int, h):
    """Y at step t: zero past a sequence's end."""
    return h if cell.lengths is None else ops.where(_valid(cell, t), h, 0.0)


def _lstm_direction(node, cell, d, projected, recurrence, bias, peepholes, order, init, hidden):
    f, g, h_fn = cell.activations[d]
    w_bias, r_bias = _bias_halves(bias, 4, hidden)
    projected = _add(projected, w_bias)
    recurrence_t = ops.swap_last(recurrence)
    h = init[0] if init[0] is not None else _zeros(projected, hidden)
    c = init[1] if init[1] is not None else _zeros(projected, hidden)
    p_i, p_o, p_f = (None,) * 3 if peepholes is None else (_part(peepholes, k, hidden) for k in range(3))
    forget_coupled = bool(node.attr("input_forget", 0))
    ys = {}
    for t in order:
        z = _add(ops.add(ops.getitem(projected, t), ops.matmul(h, recurrence_t)), r_bias)
        i = cell.gate(_add(_part(z, 0, hidden), _peep(p_i, c)), f)
        forget = ops.sub(1.0, i) if forget_coupled else cell.gate(_add(_part(z, 2, hidden), _peep(p_f, c)), f)
        candidate = cell.gate(_part(z, 3, hidden), g)
        c_new = ops.add(ops.mul(forget, c), ops.mul(i, candidate))
        o = cell.gate(_add(_part(z, 1, hidden), _peep(p_o, c_new)), f)
        h_new = ops.mul(o, h_fn(c_new))
        ys[t] = _output(cell, t, h_new)
        h, c = _masked(cell, t, h_new, h), _masked(cell, t, c_new, c)
    return [ys[t] for t in sorted(ys)], h, c


def _peep(p, c):
    return None if p is None else ops.mul(p, c)


def _gru_direction(node, cell, d, projected, recurrence, bias, peepholes, order, init, hidden):
    f, g = cell.activations[d]
    w_bias, r_bias = _bias_halves(bias, 3, hidden)
    projected = _add(projected, w_bias)
    before_reset = bool(node.attr("linear_before_reset", 0))
    recurrence_t = ops.swap_last(recurrence)
    h = init[0] if init[0] is not None else _zeros(projected, hidden)
    ys = {}
    for t in order:
        x_t = ops.getitem(projected, t)
        if before_reset:
            hr = _add(ops.matmul(h, recurrence_t), r_bias)
        else:
            hr = _add(ops.matmul(h, ops.getitem(recurrence_t, (slice(None), slice(0, 2 * hidden)))),
                      None if r_bias is None else ops.getitem(r_bias, slice(0, 2 * hidden)))
        update = cell.gate(ops.add(_part(x_t, 0, hidden), _part(hr, 0, hidden)), f)
        reset = cell.gate(ops.add(_part(x_t, 1, hidden), _part(hr, 1, hidden)), f)
        if before_reset:
            mixed = ops.mul(reset, _part(hr, 2, hidden))
        else:
            mixed = _add(ops.matmul(ops.mul(reset, h), _part(recurrence_t, 2, hidden)),
                         None if r_bias is None else _part(r_bias, 2, hidden))
        candidate = cell.gate(ops.add(_part(x_t, 2, hidden), mixed), g)
        h_new = ops.add(ops.mul(ops.sub(1.0, update), candidate), ops.mul(update, h))
        ys[t] = _output(cell, t, h_new)
        h = _masked(cell, t, h_new, h)
    return [ys[t] for t in sorted(ys)], h


def _assemble(outputs: list, steps: int, layout: int) -> tuple:
    """Y [seq, num_directions, batch, hidden] and the final states [num_directions, batch,
    hidden] (batch first in layout 1)."""
    y = ops.stack([ops.stack([out[0][t] for out in outputs], 0) for t in range(steps)], 0)
    finals = [ops.stack([out[k] for out in outputs], 0) for k in range(1, len(outputs[0]))]
    if layout:
        y = ops.permute(y, 2, 0, 1, 3)
        finals = [ops.permute(s, 1, 0, 2) for s in finals]
    return (y, *finals)
