"""ONNX recurrent ops onto kgen.ops: LSTM and GRU, each direction one `kgen.scan` over time.

The input projection of all steps is one matmul before the loop (with every bias that is
not inside a gate's product: all of them but GRU's R bias of the candidate under
linear_before_reset), and each step adds its hidden state's projection, ONE product h @ R
whose column blocks are the gates (as kgen.nn's LSTM/GRU, kgen/nn/recurrent.py), and
applies them. A reverse direction is the same scan run from the last step to the first.
So the body fits the persistent scan template (kgen/lowering/scan_fit.py): fusion rule S1
lowers each direction to one kernel that loops over the steps with the state in registers,
and its gradient to one reverse scan; the sequence length may be a dim_param, and one
compiled program serves every length. Every option keeps the body inside the template:
peepholes are loop-invariant vectors times the cell state, GRU's linear_before_reset=0 is a
second product (r * h) @ R's candidate block, `clip` and the activations ONNX lists are
elementwise, and `sequence_lens` is a [seq, batch, 1] mask scanned with the projections
(t < sequence_lens[b]: past a sequence's end its state stays and its output is zero), so
the lengths may be computed at run time. The one body that does not fit is a hidden_size
over the template's 256 columns: unrolled into its steps at a static length, a ShapeError
saying so at a symbolic one.
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
    """What every step of one recurrent node shares: hidden_size and clip."""
    hidden: int
    clip: float | None

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
    """One direction's inputs to its scan."""
    projected: object  # X's projection at every step, biases added (_recurrent): [seq, batch, gates * hidden]
    recurrence: object  # R transposed: [hidden, gates * hidden]
    bias: object  # the bias left in the step: GRU's R bias of the candidate [hidden] under linear_before_reset, or None
    peepholes: object  # LSTM's P [3 * hidden], or None
    states: list  # the initial states (h, and c for LSTM) [batch, hidden]
    reverse: bool  # whether the scan runs from the last step to the first
    activations: tuple  # f, g (, h)
    valid: object  # [seq, batch, 1] bool: step t lies within row b's sequence; None: every step does

    def scan(self, step, carry):
        """kgen.scan of step(carry, x_t, valid_t) over the steps (valid_t None without
        sequence_lens): (the last carry, every step's output [seq, batch, hidden])."""
        if self.valid is None:
            return ops.scan(lambda c, x_t: step(c, x_t, None), carry, self.projected, reverse=self.reverse)
        return ops.scan(lambda c, xs: step(c, *xs), carry, (self.projected, self.valid), reverse=self.reverse)


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
    weights, recurrence = node.tensor(1), node.tensor(2)
    hidden, gates, count = int(node.attr("hidden_size", recurrence.shape[-1])), _GATES[node.op], len(directions)
    _check_shape(node, "W", weights, (count, gates * hidden, x.shape[2]))
    _check_shape(node, "R", recurrence, (count, gates * hidden, hidden))
    bias = _optional(node, 3, "B", (count, 2 * gates * hidden))
    peepholes = _optional(node, 7, "P", (count, 3 * hidden)) if node.op == "LSTM" else None
    states = [_initial(node, i, layout, (count, x.shape[1], hidden)) for i in (5, 6)[:gates - 2]]
    cell = _Cell(hidden, node.attr("clip", None))
    valid = _valid(node, steps, x.shape[1])
    # GRU's linear_before_reset multiplies R's bias of the candidate by the reset gate: it
    # stays in the step; every other bias of R is added to X's projection before the loop
    inside = node.op == "GRU" and bool(node.attr("linear_before_reset", 0))
    outside = slice(gates * hidden, (2 * gates - 1 if inside else 2 * gates) * hidden)
    outputs = []
    for d, (reverse, activations) in enumerate(zip(directions, _activations(node, count))):
        projected = ops.matmul(x, ops.swap_last(ops.getitem(weights, d)))
        b = None if bias is None else ops.getitem(bias, d)
        if b is not None:
            projected = ops.add(projected, ops.getitem(b, slice(0, gates * hidden)))
            projected = _add_blocks(projected, ops.getitem(b, outside), gates * hidden)
        run = _Direction(
            projected=projected, recurrence=ops.swap_last(ops.getitem(recurrence, d)),
            bias=None if b is None or not inside else cell.part(b, 2 * gates - 1),
            peepholes=None if peepholes is None else ops.getitem(peepholes, d),
            states=[_zeros(projected, hidden) if s is None else ops.getitem(s, d) for s in states],
            reverse=reverse, activations=activations, valid=valid)
        outputs.append(direction_fn(node, cell, run))
    return _assemble(outputs, layout)


def _add_blocks(projected, bias, width: int):
    """projected [..., width] plus `bias` on its first columns (all of them, or GRU's z and r)."""
    return ops.add(projected, ops.pad(bias, (0, width - bias.shape[-1])))


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


def _lengths(node, steps, batch):
    """The sequence lengths as a kgen tensor, or None when they are known at import and all
    equal a static sequence length (then no step needs a mask)."""
    if not node.has(4):
        return None
    _check_shape(node, "sequence_lens", node.tensor(4), (batch,))
    try:
        known = node.static(4)
    except KgenError:
        return node.tensor(4)
    static = isinstance(steps, int)
    if static and (known.reshape(-1) == steps).all():
        return None
    if (known < 0).any() or static and (known > steps).any():
        raise node.refuse(f"sequence_lens must lie in [0, {steps}], got {known.tolist()}", ShapeError)
    return node.tensor(4)


def _valid(node, steps, batch):
    """[seq, batch, 1] bool: whether step t lies within sequence b (t < sequence_lens[b]), a
    scanned input of each step; None without sequence_lens."""
    lengths = _lengths(node, steps, batch)
    if lengths is None:
        return None
    t = ops.iota((steps, batch), 0, lengths.dtype)
    return ops.expand_dims(ops.less(t, ops.expand_dims(lengths, 0)), 2)


def _initial(node, i: int, layout: int, shape: tuple):
    """initial_h / initial_c as [num_directions, batch, hidden], or None (zeros)."""
    state = _optional(node, i, ("initial_h", "initial_c")[i - 5], (shape[1], shape[0], shape[2]) if layout else shape)
    return ops.permute(state, 1, 0, 2) if state is not None and layout else state


def _zeros(projected, hidden: int):
    """A zero [batch, hidden] state in the input's dtype."""
    return ops.broadcast_to(ops.constant(0.0, projected.dtype), (projected.shape[1], hidden))


def _add(x, y):
    return x if y is None else ops.add(x, y)


def _masked(valid, new, old):
    """The step's new state where the step lies within the sequence, the old one past its end."""
    return new if valid is None else ops.where(valid, new, old)


def _output(valid, h):
    """Y at a step: zero past a sequence's end."""
    return h if valid is None else ops.where(valid, h, 0.0)


def _lstm_direction(node, cell, run):
    """LSTM's steps: one product h @ R per step, the gates its column blocks."""
    f, g, h_fn = run.activations
    p_i, p_o, p_f = (None,) * 3 if run.peepholes is None else (cell.part(run.peepholes, k) for k in range(3))
    forget_coupled = bool(node.attr("input_forget", 0))

    def step(carry, x_t, valid):
        h, c = carry
        z = ops.add(x_t, ops.matmul(h, run.recurrence))
        i = cell.gate(_add(cell.part(z, 0), _peep(p_i, c)), f)
        forget = ops.sub(1.0, i) if forget_coupled else cell.gate(_add(cell.part(z, 2), _peep(p_f, c)), f)
        c_new = ops.add(ops.mul(forget, c), ops.mul(i, cell.gate(cell.part(z, 3), g)))
        o = cell.gate(_add(cell.part(z, 1), _peep(p_o, c_new)), f)
        h_new = ops.mul(o, h_fn(c_new))
        return (_masked(valid, h_new, h), _masked(valid, c_new, c)), _output(valid, h_new)

    (h, c), ys = run.scan(step, tuple(run.states))
    return ys, h, c


def _peep(p, c):
    return None if p is None else ops.mul(p, c)


def _gru_direction(node, cell, run):
    """GRU's steps; with linear_before_reset the reset gate scales H's projection (one product
    for all gates), else it scales H before the candidate's own product with R's h block."""
    f, g = run.activations
    hidden = cell.hidden
    before_reset = bool(node.attr("linear_before_reset", 0))
    gates = ops.getitem(run.recurrence, (slice(None), slice(0, (3 if before_reset else 2) * hidden)))
    candidate_weight = cell.part(run.recurrence, 2)

    def step(h, x_t, valid):
        hr = ops.matmul(h, gates)
        update = cell.gate(ops.add(cell.part(x_t, 0), cell.part(hr, 0)), f)
        reset = cell.gate(ops.add(cell.part(x_t, 1), cell.part(hr, 1)), f)
        if before_reset:
            mixed = ops.mul(reset, _add(cell.part(hr, 2), run.bias))
        else:
            mixed = ops.matmul(ops.mul(reset, h), candidate_weight)
        candidate = cell.gate(ops.add(cell.part(x_t, 2), mixed), g)
        h_new = ops.add(ops.mul(ops.sub(1.0, update), candidate), ops.mul(update, h))
        return _masked(valid, h_new, h), _output(valid, h_new)

    h, ys = run.scan(step, run.states[0])
    return ys, h


def _assemble(outputs: list, layout: int) -> tuple:
    """Y [seq, num_directions, batch, hidden] and the final states [num_directions, batch,
    hidden] (batch first in layout 1)."""
    y = ops.stack([out[0] for out in outputs], 1)
    finals = [ops.stack([out[k] for out in outputs], 0) for k in range(1, len(outputs[0]))]
    if layout:
        y = ops.permute(y, 2, 0, 1, 3)
        finals = [ops.permute(s, 1, 0, 2) for s in finals]
    return (y, *finals)
