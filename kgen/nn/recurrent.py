"""Recurrent layers: LSTM and GRU with PyTorch's arguments, parameter names, gate order and
initialisation (every weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))), one
layer, one direction.

The sequence length must be static: the layer unrolls into one graph of T steps, which
autodiff differentiates (backpropagation through time) and the compiler fuses like any other.
The input-to-hidden products of all steps are one matmul before the loop. Each step is then
a hidden-to-hidden matmul, whose epilogue adds that step's slice of the input products, and
one pointwise kernel for the gates, which are column slices of that matmul's result.
"""
from __future__ import annotations

import math

from kgen import ops
from kgen.errors import ShapeError
from kgen.nn.layers import _uniform
from kgen.nn.module import Module


class _Recurrent(Module):
    GATES = 0  # gate blocks stacked in the weights (torch's order)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bias, self.batch_first = bias, batch_first
        bound, rows = 1.0 / math.sqrt(hidden_size), self.GATES * hidden_size
        self.add_parameter("weight_ih_l0", _uniform(bound, (rows, input_size)))
        self.add_parameter("weight_hh_l0", _uniform(bound, (rows, hidden_size)))
        if bias:
            self.add_parameter("bias_ih_l0", _uniform(bound, (rows,)))
            self.add_parameter("bias_hh_l0", _uniform(bound, (rows,)))

    def _input_products(self, x) -> list:
        """x @ weight_ih.T + bias_ih for every step, as one matmul: a [batch, gates] view per step."""
        if x.ndim != 3 or not isinstance(x.shape[1 if self.batch_first else 0], int) \
                or not isinstance(x.shape[2], int) or x.shape[2] != self.input_size:
            layout = "[batch, time, features]" if self.batch_first else "[time, batch, features]"
            raise ShapeError(f"{type(self).__name__}: expected an input {layout} with a static time length and "
                             f"{self.input_size} features, got {x.type_str()}")
        steps = x.shape[1 if self.batch_first else 0]
        flat = ops.reshape(x, (-1, self.input_size)) @ ops.transpose(self.weight_ih_l0)
        if self.bias:
            flat = flat + self.bias_ih_l0
        if self.batch_first:
            products = ops.reshape(flat, (x.shape[0], steps, -1))
            return [products[:, t] for t in range(steps)]
        products = ops.reshape(flat, (steps, x.shape[1], -1))
        return [products[t] for t in range(steps)]

    def _hidden_products(self, h):
        """The step's gate pre-activations from the hidden state, h @ weight_hh.T + bias_hh:
        bias_hh alone (or None, for zeros) while the state is zero (the first step, with no
        initial state)."""
        if h is None:
            return self.bias_hh_l0 if self.bias else None
        out = h @ ops.transpose(self.weight_hh_l0)
        return out + self.bias_hh_l0 if self.bias else out

    def _check_state(self, state, what: str, batch):
        if state is None:
            return None
        if state.ndim != 3 or state.shape[0] != 1 or state.shape[2] != self.hidden_size:
            raise ShapeError(f"{type(self).__name__}: expected {what} of shape [1, batch, {self.hidden_size}] "
                             f"(one layer, one direction), got {state.type_str()}")
        return ops.reshape(state, (batch, self.hidden_size))

    def _outputs(self, hs: list):
        """torch's `output`: every step's hidden state, stacked along the time axis."""
        return ops.stack(hs, axis=1 if self.batch_first else 0)

    def _batch(self, x):
        return x.shape[0 if self.batch_first else 1]

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, batch_first={self.batch_first}"


class LSTM(_Recurrent):
    """torch.nn.LSTM(input_size, hidden_size, bias=True, batch_first=False), one layer:

        i, f, g, o = split(x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)        h' = sigmoid(o) * tanh(c')

    forward(x, (h0, c0)=None) -> (output, (h_n, c_n)) as in torch: output holds every
    step's h, h_n and c_n are [1, batch, hidden_size]. A model that reads only the last
    state should use h_n rather than slicing `output`."""
    GATES = 4

    def forward(self, x, hx=None):
        batch = self._batch(x)
        h, c = (None, None) if hx is None else (self._check_state(hx[0], "h0", batch),
                                                self._check_state(hx[1], "c0", batch))
        hs = []
        for x_product in self._input_products(x):
            hidden = self._hidden_products(h)
            i, f, g, o = ops.split(x_product if hidden is None else x_product + hidden, 4, axis=-1)
            kept = ops.sigmoid(i) * ops.tanh(g)
            c = kept if c is None else ops.sigmoid(f) * c + kept
            h = ops.sigmoid(o) * ops.tanh(c)
            hs.append(h)
        return self._outputs(hs), (ops.expand_dims(h, 0), ops.expand_dims(c, 0))


class GRU(_Recurrent):
    """torch.nn.GRU(input_size, hidden_size, bias=True, batch_first=False), one layer:

        r, z, n_x = split(x_t @ W_ih.T + b_ih, 3)      r_h, z_h, n_h = split(h @ W_hh.T + b_hh, 3)
        r = sigmoid(r + r_h)    z = sigmoid(z + z_h)    n = tanh(n_x + r * n_h)
        h' = (1 - z) * n + z * h

    forward(x, h0=None) -> (output, h_n) as in torch, h_n [1, batch, hidden_size]."""
    GATES = 3

    def forward(self, x, hx=None):
        h = self._check_state(hx, "h0", self._batch(x))
        hs = []
        for x_product in self._input_products(x):
            r_x, z_x, n_x = ops.split(x_product, 3, axis=-1)
            hidden = self._hidden_products(h)
            r_h, z_h, n_h = ops.split(hidden, 3, axis=-1) if hidden is not None else (0.0, 0.0, 0.0)
            r, z = ops.sigmoid(r_x + r_h), ops.sigmoid(z_x + z_h)
            n = ops.tanh(n_x + r * n_h)
            h = (1.0 - z) * n if h is None else (1.0 - z) * n + z * h
            hs.append(h)
        return self._outputs(hs), ops.expand_dims(h, 0)


class LastStep(Module):
    """The last hidden state of a recurrent layer's result, as [batch, hidden_size]: the
    classifier's input in Sequential(LSTM(...), LastStep(), Linear(...))."""

    def forward(self, result):
        state = result[1]
        h_n = state[0] if isinstance(state, tuple) else state
        return ops.reshape(h_n, h_n.shape[1:])
