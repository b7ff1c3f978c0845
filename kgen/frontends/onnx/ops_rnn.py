"""ONNX recurrent ops onto kgen.ops: LSTM and GRU, unrolled over a static sequence length.

kgen's graphs have fixed shapes and no loops, so a recurrence becomes one cell per time step:
the input projection of all steps is one matmul, and each step adds its hidden state's
projection and applies the gates. Directions (forward, reverse, bidirectional), both layouts,
biases, initial states, LSTM peepholes and input_forget, GRU's linear_before_reset, `clip`
and the activations ONNX lists are translated. `sequence_lens` masks the steps past each
sequence's end (its state stays, its output is zero), so it may be computed at run time.
`clip` bounds the gates' inputs, not the cell state's before LSTM's h (as onnxruntime does).

ONNX orders the gates i, o, f, c (LSTM) and z, r, h (GRU) in W, R and B; the peepholes P
are i, o, f.
"""
from __future__ import annotations

from dataclasses import dataclass

from kgen import ops
from kgen.errors import KgenError, ShapeError
from kgen.frontends.onnx.table import onnx_op
from kgen.ir import shapes

# name (lower case) -> (function of x, alpha, beta; alpha's default, beta's default); None: no
# such parameter; _NEEDED: activation_alpha/beta must give it (ONNX names no default).
_NEEDED = object()
_ACTIVATIONS = {
    "sigmoid": (lambda x, a, b: ops.sigmoid(x), None, None),
    "tanh": (lambda x, a, b: ops.tanh(x), None, None),
    "relu": (lambda x, a, b: ops.relu(x), None, None),
    "affine": (lambda x, a, b: ops.add(ops.mul(x, a), b), _NEEDED, _NEEDED),
    "leakyrelu": (lambda x, a, b: ops.leaky_relu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: ops.where(ops.greater(x, a), x, 0.0), 1.0, None),
    "scaledtanh": (lambda x, a, b: ops.mul(ops.tanh(ops.mul(x, b)), a), _NEEDED, _NEEDED),
    "hardsigmoid": (lambda x, a, b: ops.clamp(ops.add(ops.mul(x, a), b), 0.0, 1.0), 0.2, 0.5),
    "elu": (lambda x, a, b: ops.elu(x, a), 1.0, None),
    "softsign": (lambda x, a, b: ops.div(x, ops.add(ops.abs(x), 1.0)), None, None),
    "softplus": (lambda x, a, b: ops.softplus(x), None, None),
}
_DEFAULTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh")}
_GATES = {"LSTM": 4, "GRU": 3}


@dataclass
class _Cell:
    """What every step of one recurrent node shares: hidden_size, clip, and the sequence
    lengths (a kgen [batch] tensor, or None when every sequence runs the whole length)."""
    hidden: int
    clip: float | None
    lengths: object

    def gate(self, x, fn):
        """Activation `fn` of a gate's input, clipped first when the node has `clip`."""
        if self.clip is not None:
            x = ops.clamp(x, -self.clip, self.clip)
        return fn(x)

    def part(self, x, k: int):
        """Gate k of a [..., gates * hidden] tensor."""
        return ops.getitem(x, (..., slice(k * self.hidden, (k + 1) * self.hidden)))


@dataclass
class _Direction:
    """One direction's inputs to its steps."""
    projected: object  # X's projection at every step, input bias added: [seq, batch, gates * hidden]
    recurrence: object  # R transposed: [hidden, gates * hidden]
    bias: object  # R's bias [gates * hidden], or None
    peepholes: object  # LSTM's P [3 * hidden], or None
    states: list  # the initial states (h, and c for LSTM) [batch, hidden]
    order: range  # the steps, in the order this direction visits them
    activations: tuple  # f, g (, h)


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
    hidden, gates, count = int(node.attr("hidden_size", recurrence.shape[-1])), _GATES[node.op], len(directions)
    _check_shape(node, "W", weights, (count, gates * hidden, x.shape[2]))
    _check_shape(node, "R", recurrence, (count, gates * hidden, hidden))
    bias = _optional(node, 3, "B", (count, 2 * gates * hidden))
    peepholes = _optional(node, 7, "P", (count, 3 * hidden)) if node.op == "LSTM" else None
    states = [_initial(node, i, layout, (count, x.shape[1], hidden)) for i in (5, 6)[:gates - 2]]
    cell = _Cell(hidden, node.attr("clip", None), _lengths(node, steps))
    outputs = []
    for d, (reverse, activations) in enumerate(zip(directions, _activations(node, count))):
        projected = ops.matmul(x, ops.swap_last(ops.getitem(weights, d)))
        b = None if bias is None else ops.getitem(bias, d)
        run = _Direction(
            projected=projected if b is None else ops.add(projected, ops.getitem(b, slice(0, gates * hidden))),
            recurrence=ops.swap_last(ops.getitem(recurrence, d)),
            bias=None if b is None else ops.getitem(b, slice(gates * hidden, 2 * gates * hidden)),
            peepholes=None if peepholes is None else ops.getitem(peepholes, d),
            states=[_zeros(projected, hidden) if s is None else ops.getitem(s, d) for s in states],
            order=range(steps - 1, -1, -1) if reverse else range(steps), activations=activations)
        outputs.append(direction_fn(node, cell, run))
    return _assemble(outputs, steps, layout)


def _directions(node) -> list:
    """Whether each direction runs backward in time."""
    direction = node.attr("direction", "forward")
    found = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}.get(direction)
    if found is None:
        raise node.refuse(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    return found


def _check_shape(node, what, value, shape):
    if len(value.shape) != len(shape) or not all(shapes.dims_equal(a, b) for a, b in zip(value.shape, shape)):
        raise node.refuse(f"{what} must have shape {shapes.format_shape(shape)} (from num_directions, the gates, "
                          f"hidden_size, X), got {value.type_str()}", ShapeError)


def _optional(node, i: int, what: str, shape: tuple):
    """Optional input i, shape-checked, or None."""
    if not node.has(i):
        return None
    value = node.tensor(i)
    _check_shape(node, what, value, shape)
    return value


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
    if default is _NEEDED:
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


def _initial(node, i: int, layout: int, shape: tuple):
    """initial_h / initial_c as [num_directions, batch, hidden], or None (zeros)."""
    state = _optional(node, i, ("initial_h", "initial_c")[i - 5], (shape[1], shape[0], shape[2]) if layout else shape)
    return ops.permute(state, 1, 0, 2) if state is not None and layout else state


def _zeros(projected, hidden: int):
    """A zero [batch, hidden] state in the input's dtype."""
    return ops.broadcast_to(ops.constant(0.0, projected.dtype), (projected.shape[1], hidden))


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


def _lstm_direction(node, cell, run):
    f, g, h_fn = run.activations
    h, c = run.states
    p_i, p_o, p_f = (None,) * 3 if run.peepholes is None else (cell.part(run.peepholes, k) for k in range(3))
    forget_coupled = bool(node.attr("input_forget", 0))
    ys = {}
    for t in run.order:
        z = _add(ops.add(ops.getitem(run.projected, t), ops.matmul(h, run.recurrence)), run.bias)
        i = cell.gate(_add(cell.part(z, 0), _peep(p_i, c)), f)
        forget = ops.sub(1.0, i) if forget_coupled else cell.gate(_add(cell.part(z, 2), _peep(p_f, c)), f)
        c_new = ops.add(ops.mul(forget, c), ops.mul(i, cell.gate(cell.part(z, 3), g)))
        o = cell.gate(_add(cell.part(z, 1), _peep(p_o, c_new)), f)
        h_new = ops.mul(o, h_fn(c_new))
        ys[t] = _output(cell, t, h_new)
        h, c = _masked(cell, t, h_new, h), _masked(cell, t, c_new, c)
    return [ys[t] for t in sorted(ys)], h, c


def _peep(p, c):
    return None if p is None else ops.mul(p, c)


def _gru_direction(node, cell, run):
    """GRU's steps; with linear_before_reset the reset gate scales H's projection (one matmul
    for all gates), else it scales H before the candidate's own matmul."""
    f, g = run.activations
    hidden = cell.hidden
    before_reset = bool(node.attr("linear_before_reset", 0))
    gates = slice(0, (3 if before_reset else 2) * hidden)
    recurrence = ops.getitem(run.recurrence, (slice(None), gates))
    bias = None if run.bias is None else ops.getitem(run.bias, gates)
    (h,) = run.states
    ys = {}
    for t in run.order:
        x_t = ops.getitem(run.projected, t)
        hr = _add(ops.matmul(h, recurrence), bias)
        update = cell.gate(ops.add(cell.part(x_t, 0), cell.part(hr, 0)), f)
        reset = cell.gate(ops.add(cell.part(x_t, 1), cell.part(hr, 1)), f)
        if before_reset:
            mixed = ops.mul(reset, cell.part(hr, 2))
        else:
            mixed = _add(ops.matmul(ops.mul(reset, h), cell.part(run.recurrence, 2)),
                         None if run.bias is None else cell.part(run.bias, 2))
        candidate = cell.gate(ops.add(cell.part(x_t, 2), mixed), g)
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
