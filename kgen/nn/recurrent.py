"""Recurrent layers: LSTM and GRU with PyTorch's arguments (num_layers, bias, batch_first,
dropout, bidirectional), parameter names and order, gate order and initialisation (every
weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))).

Each layer and direction is a `kgen.scan` of torch's cell (`lstm_direction`, `gru_direction`):
the gates are column slices of one product h @ W_hh.T, as torch computes them. Fusion rule
S1 lowers the scan to one persistent kernel that loops over the time steps with the state
in registers (kgen/kernels/scan.py), and its gradient to one reverse scan; the
input-to-hidden products of all steps are one matmul before the loop, and the
hidden-to-hidden weight's gradient one matmul over all steps after. The sequence length
may be a size symbol: one compiled program serves every length. A reverse direction runs
the same steps from the last time step to the first.
Layer k > 0 reads layer k-1's output (both directions' states side by side), after dropout
in training.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import numpy as np

from kgen import ops
from kgen.errors import ArgumentError, OptionError, ShapeError
from kgen.function import shared
from kgen.ir import shapes
from kgen.nn import layers
from kgen.nn.module import Module


def lstm_direction(xproj, w_hh, h0, c0, reverse: bool = False) -> tuple:
    """One direction of torch's LSTM over xproj = x @ W_ih.T + b_ih + b_hh ([T, B, 4H]):
    (every step's h [T, B, H], (h_n, c_n))."""
    hidden, w = w_hh.shape[1], ops.transpose(w_hh)

    def cell(carry, x_t):
        h, c = carry
        z = x_t + h @ w
        i, f, g, o = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return (h, c), h

    (h_n, c_n), hs = ops.scan(cell, (h0, c0), xproj, reverse=reverse)
    return hs, (h_n, c_n)


def gru_direction(xproj, w_hh, b_hh, h0, reverse: bool = False) -> tuple:
    """One direction of torch's GRU over xproj = x @ W_ih.T + b_ih ([T, B, 3H]): (every step's
    h [T, B, H], (h_n,)). b_hh (None without bias) is inside the cell: r multiplies its n block."""
    hidden, w = w_hh.shape[1], ops.transpose(w_hh)

    def cell(h, x_t):
        gh = h @ w if b_hh is None else h @ w + b_hh
        x_r, x_z, x_n = (x_t[:, k * hidden:(k + 1) * hidden] for k in range(3))
        h_r, h_z, h_n = (gh[:, k * hidden:(k + 1) * hidden] for k in range(3))
        r, z = ops.sigmoid(x_r + h_r), ops.sigmoid(x_z + h_z)
        n = ops.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    h_n, hs = ops.scan(cell, h0, xproj, reverse=reverse)
    return hs, (h_n,)


class _Weights(NamedTuple):
    """One direction of one layer: torch's weight_ih/hh_l{k}[_reverse] and bias_ih/hh (None without bias)."""
    ih: object
    hh: object
    bias_ih: Optional[object]
    bias_hh: Optional[object]


def _positive_int(value, what: str, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{cls}: {what} must be an int >= 1, got {value!r}")
    return int(value)


class _Recurrent(Module):
    GATES = 0  # gate blocks stacked in the weights (torch's order)
    STATES = ()  # the names of the initial states forward takes (torch's h0, c0)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        cls = type(self).__name__
        self.input_size = _positive_int(input_size, "input_size", cls)
        self.hidden_size = _positive_int(hidden_size, "hidden_size", cls)
        self.num_layers = _positive_int(num_layers, "num_layers", cls)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise OptionError(f"{cls}: dropout must be a number in [0, 1], got {dropout!r}")
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.num_directions = 2 if self.bidirectional else 1
        bound, rows = 1.0 / math.sqrt(hidden_size), self.GATES * hidden_size
        for layer in range(self.num_layers):
            inputs = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for suffix in self._suffixes():
                self.add_parameter(f"weight_ih_l{layer}{suffix}", layers._uniform(bound, (rows, inputs)))
                self.add_parameter(f"weight_hh_l{layer}{suffix}", layers._uniform(bound, (rows, hidden_size)))
                if self.bias:
                    self.add_parameter(f"bias_ih_l{layer}{suffix}", layers._uniform(bound, (rows,)))
                    self.add_parameter(f"bias_hh_l{layer}{suffix}", layers._uniform(bound, (rows,)))
        # drawn only when used, so a layer without dropout leaves the initialisation stream as it was
        seed = None
        if self.dropout > 0 and self.num_layers > 1:
            seed = shared(np.int32(layers._rng.integers(0, 2**31 - 1)), name=f"rnn{id(self):x}_dropout_seed")
        object.__setattr__(self, "seed", seed)  # device state, not a parameter (as nn.Dropout's)
        object.__setattr__(self, "_state_updates", [])

    def _suffixes(self) -> list:
        return ["", "_reverse"][:self.num_directions]

    def _weights(self, layer: int, direction: int) -> _Weights:
        suffix = f"_l{layer}{self._suffixes()[direction]}"
        biases = (getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix)) if self.bias else (None, None)
        return _Weights(getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix), *biases)

    def _check_input(self, x):
        """x's batch size, once x is known to be [time, batch, input_size] (or batch first); the
        time and batch sizes may be symbols."""
        if x.ndim != 3 or not isinstance(x.shape[2], int) or x.shape[2] != self.input_size:
            layout = "[batch, time, features]" if self.batch_first else "[time, batch, features]"
            raise ShapeError(f"{type(self).__name__}: expected an input {layout} with "
                             f"{self.input_size} features, got {x.type_str()}")
        return x.shape[0 if self.batch_first else 1]

    def _input_products(self, x, w: _Weights):
        """x @ weight_ih.T + bias_ih for every step, as one matmul: [time, batch, gates] (x is
        time first). An LSTM adds bias_hh here too: its gates take both biases summed."""
        flat = ops.reshape(x, (-1, x.shape[2])) @ ops.transpose(w.ih)
        for bias in (w.bias_ih, w.bias_hh if self.GATES == 4 else None):
            if bias is not None:
                flat = flat + bias
        return ops.reshape(flat, (x.shape[0], x.shape[1], -1))

    def _initial_states(self, hx, batch) -> list:
        """Per layer and direction (torch's index layer * num_directions + direction), the
        tuple of initial states as [batch, hidden] (None for zeros)."""
        count = self.num_layers * self.num_directions
        if hx is None:
            return [(None,) * len(self.STATES)] * count
        given = hx if len(self.STATES) > 1 else (hx,)
        if len(self.STATES) > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != len(self.STATES)):
            raise ArgumentError(f"{type(self).__name__}: expected the initial states as a pair "
                                f"({', '.join(self.STATES)}), got {type(hx).__name__}")
        states = [self._check_state(s, what, batch) for s, what in zip(given, self.STATES)]
        if count == 1:
            return [tuple(ops.reshape(s, (batch, self.hidden_size)) for s in states)]
        return [tuple(s[index] for s in states) for index in range(count)]

    def _check_state(self, state, what: str, batch):
        count = self.num_layers * self.num_directions
        if state.ndim != 3 or state.shape[0] != count or state.shape[2] != self.hidden_size \
                or not shapes.dims_equal(state.shape[1], batch):
            raise ShapeError(f"{type(self).__name__}: expected {what} of shape [{count}, batch, {self.hidden_size}] "
                             f"(num_layers * num_directions = {count}, batch {batch}), got {state.type_str()}")
        return state

    def _layout(self, x):
        """x between torch's layout and time first (a view, its own inverse)."""
        return ops.transpose(x, (1, 0, 2)) if self.batch_first else x

    def _layer_output(self, directions: list):
        """torch's `output` of one layer, time first: every step's hidden state (both
        directions' side by side)."""
        return directions[0] if len(directions) == 1 else ops.concatenate(directions, axis=-1)

    def _between_layers(self, x, layer: int):
        """Dropout on a layer's output before the next layer reads it (training only, as
        torch); layer k draws from seed + k, and each step advances the seed by the layers
        that draw, so no two masks of a run share a seed."""
        if not self.training or self.seed is None:
            return x
        return ops.dropout(x, self.dropout, self.seed + layer)

    def _final_states(self, finals: list) -> tuple:
        """h_n (and c_n): [num_layers * num_directions, batch, hidden] each."""
        if len(finals) == 1:
            return tuple(ops.expand_dims(s, 0) for s in finals[0])
        return tuple(ops.stack(list(kind), axis=0) for kind in zip(*finals))

    def _run(self, x, hx):
        """(output, final states) of every layer and direction."""
        batch = self._check_input(x)
        initial = self._initial_states(hx, batch)
        dropping = self.training and self.seed is not None
        object.__setattr__(self, "_state_updates",
                           [(self.seed, self.seed + (self.num_layers - 1))] if dropping else [])
        finals, cell = [], type(self).__name__.lower()
        x = self._layout(x)
        for layer in range(self.num_layers):
            if layer > 0:  # dropout in torch's layout, as its masks are drawn
                x = self._layout(self._between_layers(self._layout(x), layer - 1))
            directions = []
            for direction in range(self.num_directions):
                w = self._weights(layer, direction)
                index = layer * self.num_directions + direction
                hs, final = self._direction(self._input_products(x, w), w, initial[index], direction == 1)
                directions.append(hs)
                finals.append(final)
            x = self._layer_output(directions)
        return self._layout(x), self._final_states(finals)

    def _zeros(self, xproj):
        return ops.broadcast_to(ops.constant(0.0, xproj.dtype), (xproj.shape[1], self.hidden_size))

    def extra_repr(self):
        options = [f"num_layers={self.num_layers}"] if self.num_layers != 1 else []
        options += [f"bias={self.bias}", f"batch_first={self.batch_first}"]
        options += [f"dropout={self.dropout}"] if self.dropout else []
        options += ["bidirectional=True"] if self.bidirectional else []
        return f"{self.input_size}, {self.hidden_size}, " + ", ".join(options)


class LSTM(_Recurrent):
    """torch.nn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False); each layer and direction computes

        i, f, g, o = split(x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)        h' = sigmoid(o) * tanh(c')

    forward(x, (h0, c0)=None) -> (output, (h_n, c_n)) as in torch: output [time, batch,
    num_directions * hidden_size] (batch first with batch_first) holds every step's h of the
    last layer; h0, c0, h_n and c_n are [num_layers * num_directions, batch, hidden_size],
    index layer * num_directions + direction. `dropout` zeroes elements of each layer's output
    but the last's in training only (so nothing with one layer, where torch warns). A model
    that reads only the last state should use h_n rather than slicing `output`."""
    GATES = 4
    STATES = ("h0", "c0")

    def _direction(self, xproj, w: _Weights, states: tuple, reverse: bool) -> tuple:
        h0, c0 = (self._zeros(xproj) if s is None else s for s in states)
        return lstm_direction(xproj, w.hh, h0, c0, reverse)

    def forward(self, x, hx=None):
        return self._run(x, hx)


class GRU(_Recurrent):
    """torch.nn.GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False); each layer and direction computes

        r, z, n_x = split(x_t @ W_ih.T + b_ih, 3)      r_h, z_h, n_h = split(h @ W_hh.T + b_hh, 3)
        r = sigmoid(r + r_h)    z = sigmoid(z + z_h)    n = tanh(n_x + r * n_h)
        h' = (1 - z) * n + z * h

    forward(x, h0=None) -> (output, h_n) as in torch (shapes as LSTM's)."""
    GATES = 3
    STATES = ("h0",)

    def _direction(self, xproj, w: _Weights, states: tuple, reverse: bool) -> tuple:
        h0 = self._zeros(xproj) if states[0] is None else states[0]
        return gru_direction(xproj, w.hh, w.bias_hh, h0, reverse)

    def forward(self, x, hx=None):
        output, (h_n,) = self._run(x, hx)
        return output, h_n


class LastStep(Module):
    """The last layer's final hidden state from a recurrent layer's result (output, h_n) or
    (output, (h_n, c_n)): the classifier's input in Sequential(LSTM(...), LastStep(),
    Linear(...)). One direction: h_n[-1], [batch, hidden_size]. Two directions (read from
    output's width, twice h_n's): the forward and the reverse direction's states side by side,
    torch.cat((h_n[-2], h_n[-1]), 1) as torch classifiers write it, [batch, 2 * hidden_size];
    the reverse state is the one after reading the whole sequence backwards (its first step)."""

    def forward(self, result):
        output, state = result
        h_n = state[0] if isinstance(state, tuple) else state
        if output.shape[-1] == 2 * h_n.shape[-1]:
            return ops.concatenate([h_n[-2], h_n[-1]], axis=-1)
        return ops.reshape(h_n, h_n.shape[1:]) if h_n.shape[0] == 1 else h_n[-1]
