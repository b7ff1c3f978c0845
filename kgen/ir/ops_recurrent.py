"""Op table entries for whole recurrences, each one persistent kernel (kgen/kernels/recurrent.py):

    lstm_recurrence(xproj[T,B,4H], w_hh[4H,H], h0[B,H], c0[B,H])          -> [T+1,B,2H]  (h | c)
    lstm_recurrence_grad(g[T+1,B,2H], xproj, w_hh, out, h0, c0)          -> [T+1,B,5H]
    gru_recurrence(xproj[T,B,3H], w_hh[3H,H], b_hh[3H], h0[B,H])          -> [T+1,B,H]   (h)
    gru_recurrence_grad(g[T+1,B,H], xproj, w_hh, b_hh, out, h0)           -> [T+1,B,5H]

`xproj` holds every step's input products x_t @ W_ih.T + b_ih (one matmul before the loop),
in torch's gate order (LSTM i, f, g, o; GRU r, z, n). Per step, the LSTM computes
z = xproj[t] + h @ w_hh.T, c = sig(f) * c + sig(i) * tanh(g), h = sig(o) * tanh(c); the GRU
r = sig(x_r + h_r), z = sig(x_z + h_z), n = tanh(x_n + r * h_n), h = (1 - z) * n + z * h with
(h_r, h_z, h_n) = h @ w_hh.T + b_hh (b_hh is inside the op: r multiplies its n block). With
`reverse`, the steps run from t = T-1 down to 0; results stay in time order. One node holds
every result, the layer's output and final states being views of it: row 1 + t holds the
state after step t, row 0 the final state (after the last step, t = T-1 or, reversed, 0), so
that every view is at a static offset also when T is a size symbol.

The gradient ops run the steps backwards, carrying the state cotangents, and pack what the
VJP needs; they read from `out` only the states before each step (the LSTM's c_t is
recomputed from them, as cheap as reading it). Row 0 holds the initial states' cotangents (LSTM: d h0 | d c0 | zeros; GRU:
d h0 | zeros); row 1 + t holds step t's gate pre-activation cotangents and the state before
step t (LSTM: dz_t (4H, also d xproj_t) | h_prev_t; GRU: d r, d z, d x_n, d h_n | h_prev_t,
where d h_n is the cotangent of the n block of h @ w_hh.T + b_hh). The weight gradient is then
ONE matmul over all steps, dZ[T*B, G]^T @ H_prev[T*B, H], which takes the optimizer's update in
its epilogue; storing h_prev keeps that operand a plain view whatever the direction, where
the alternative (h0 then out[:-1], or out[1:] then h0 when reversed) would need a slice at a
symbolic offset. T and B may be size symbols: T is a kernel argument of both kernels.
"""
from __future__ import annotations

import numpy as np
import torch

from kgen.errors import DTypeError, ShapeError
from kgen.ir import shapes
from kgen.ir.node import Node
from kgen.ir.optable import OpDef, register

GATES = {"lstm": 4, "gru": 3}


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def _dims(op: str, xproj, w_hh):
    """(T, B, H) once xproj is [T, B, G*H] and w_hh [G*H, H] (G the op's gates), all float of one dtype."""
    gates = GATES[op.split("_")[0]]
    if xproj.ndim != 3 or w_hh.ndim != 2 or not isinstance(w_hh.shape[1], int) or w_hh.shape[0] != gates * w_hh.shape[1] \
            or xproj.shape[2] != w_hh.shape[0]:
        raise ShapeError(f"{op}: expected xproj [T, B, {gates}*H] and w_hh [{gates}*H, H] with a static H, "
                         f"got {xproj.type_str()} and {w_hh.type_str()}")
    return xproj.shape[0], xproj.shape[1], w_hh.shape[1]


def _check(op: str, operands: dict, wanted: dict, dtype):
    """Each operand's shape and dtype against `wanted` (name -> shape)."""
    for name, node in operands.items():
        if not node.dtype.is_float or node.dtype is not dtype:
            raise DTypeError(f"{op}: every operand must be of xproj's float dtype {dtype.name}, "
                             f"got {name} {node.type_str()}")
        shape = wanted[name]
        if node.ndim != len(shape) or not all(shapes.dims_equal(a, b) for a, b in zip(node.shape, shape)):
            raise ShapeError(f"{op}: expected {name} of shape {shapes.format_shape(shape)}, got {node.type_str()}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _order(steps: int, reverse: bool):
    return range(steps - 1, -1, -1) if reverse else range(steps)


def _recurrence(op: str, *inputs, reverse: bool = False) -> Node:
    return Node(op, tuple(inputs), {"reverse": bool(reverse)})


def _flops(gates: int, elementwise: int, passes: int):
    """Per step, `passes` products [B, H] @ [H, gates*H] (2 flops a multiply-add) and
    `elementwise` flops per hidden unit."""
    def count(node):
        steps, batch, hidden = _dims(node.op.replace("_grad", ""), *_xproj_w(node))
        return steps * batch * hidden * (2 * passes * gates * hidden + elementwise)
    return count


def block(node, first_row: int, rows, first_column: int, columns: int) -> Node:
    """Rows [first_row, first_row + rows) and columns [first_column, first_column + columns)
    of a [T+1, B, W] result, a view."""
    return _ops().slice_strided(node, (first_row, 0, first_column), (1, 1, 1), (rows, node.shape[1], columns))


def row0(node, first_column: int, columns: int) -> Node:
    """Columns [first_column, first_column + columns) of row 0 of a [T+1, B, W] result, as [B, columns]."""
    return _ops().reshape(block(node, 0, 1, first_column, columns), (node.shape[1], columns))


def _xproj_w(node):
    """(xproj, w_hh) of a recurrence or its gradient op (the gradient op's first input is g)."""
    return node.inputs[1:3] if node.op.endswith("_grad") else node.inputs[:2]


def _torch_steps(cell: str, xproj, w_hh, b_hh, h, c, reverse: bool):
    """torch's cells over the steps (torch.lstm_cell / torch.gru_cell, xproj as the input
    products with an identity W_ih): (the [T+1, B, *] result, every state before a step)."""
    hidden = w_hh.shape[1]
    eye = torch.eye(xproj.shape[2], dtype=xproj.dtype, device=xproj.device)
    rows, before = [None] * xproj.shape[0], [None] * xproj.shape[0]
    for t in _order(xproj.shape[0], reverse):
        before[t] = (h, c)
        if cell == "lstm":
            h, c = torch.lstm_cell(xproj[t], (h, c), eye, w_hh)
            rows[t] = torch.cat([h, c], -1)
        else:
            h = torch.gru_cell(xproj[t], h, eye, w_hh, None, b_hh)
            rows[t] = h
    final = torch.cat([h, c], -1) if cell == "lstm" else h
    return torch.stack([final] + rows), before, hidden


def _vendor(node, operands):
    """torch's cells computing the same result (forward); for a gradient op, torch.autograd
    through one cell per step, from the states before each step as the op reads them (out)."""
    cell, reverse = node.op.split("_")[0], node.attrs["reverse"]
    lstm = cell == "lstm"
    if not node.op.endswith("_grad"):
        xproj, w_hh = operands[:2]
        b_hh, h0, c0 = (None, *operands[2:]) if lstm else (operands[2], operands[3], None)
        return _torch_steps(cell, xproj, w_hh, b_hh, h0, c0, reverse)[0]
    g, xproj, w_hh = operands[:3]
    b_hh, out, h0, c0 = (None, *operands[3:]) if lstm else (operands[3], operands[4], operands[5], None)
    steps, batch, hidden = xproj.shape[0], xproj.shape[1], w_hh.shape[1]
    eye = torch.eye(xproj.shape[2], dtype=xproj.dtype, device=xproj.device)
    packed = torch.zeros((steps + 1, batch, 5 * hidden), dtype=xproj.dtype, device=xproj.device)
    carry = [g[0, :, :hidden], g[0, :, hidden:]] if lstm else [g[0]]
    for t in reversed(list(_order(steps, reverse))):
        before = t + 1 if reverse else t - 1
        state = [out[1 + before, :, :hidden], out[1 + before, :, hidden:]] if 0 <= before < steps else [h0, c0]
        with torch.enable_grad():
            x = xproj[t].detach().requires_grad_()
            prev = [s.detach().requires_grad_() for s in state[:len(carry)]]
            after = torch.lstm_cell(x, tuple(prev), eye, w_hh) if lstm else (torch.gru_cell(x, prev[0], eye, w_hh,
                                                                                                  None, b_hh),)
            cotangents = [c + (g[1 + t, :, k * hidden:(k + 1) * hidden]) for k, c in enumerate(carry)]
            d_x, *carry = torch.autograd.grad(after, [x] + prev, cotangents)
        if not lstm:  # d h_n = d x_n * r, r from the state before the step
            r = torch.sigmoid(xproj[t, :, :hidden] + prev[0].detach() @ w_hh[:hidden].T + b_hh[:hidden])
            d_x = torch.cat([d_x, d_x[:, 2 * hidden:] * r], -1)
        packed[1 + t, :, :4 * hidden], packed[1 + t, :, 4 * hidden:] = d_x, state[0]
    packed[0, :, :len(carry) * hidden] = torch.cat(carry, -1)
    return packed


# --- lstm_recurrence ------------------------------------------------------------------------------
def lstm_recurrence(xproj, w_hh, h0, c0, reverse: bool = False) -> Node:
    """Every step of one LSTM direction (see the module docstring): [T+1, B, 2H], h then c."""
    return _recurrence("lstm_recurrence", xproj, w_hh, h0, c0, reverse=reverse)


def lstm_recurrence_grad(g, xproj, w_hh, out, h0, c0, reverse: bool = False) -> Node:
    """The packed cotangents of lstm_recurrence (see the module docstring): [T+1, B, 5H]."""
    return _recurrence("lstm_recurrence_grad", g, xproj, w_hh, out, h0, c0, reverse=reverse)


def _infer_lstm(inputs, attrs):
    xproj, w_hh, h0, c0 = inputs
    steps, batch, hidden = _dims("lstm_recurrence", xproj, w_hh)
    _check("lstm_recurrence", {"xproj": xproj, "w_hh": w_hh, "h0": h0, "c0": c0},
           {"xproj": xproj.shape, "w_hh": w_hh.shape, "h0": (batch, hidden), "c0": (batch, hidden)}, xproj.dtype)
    return xproj.dtype, (steps + 1, batch, 2 * hidden)


def _lstm_gates(z, hidden):
    i, f, g, o = (z[..., k * hidden:(k + 1) * hidden] for k in range(4))
    return _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)


def _lstm_reference(node, arrays, shape):
    xproj, w_hh, h, c = arrays
    hidden = w_hh.shape[1]
    out = np.zeros(shape, xproj.dtype)
    for t in _order(xproj.shape[0], node.attrs["reverse"]):
        i, f, g, o = _lstm_gates(xproj[t] + h @ w_hh.T, hidden)
        c = f * c + i * g
        h = o * np.tanh(c)
        out[1 + t, :, :hidden], out[1 + t, :, hidden:] = h, c
    out[0, :, :hidden], out[0, :, hidden:] = h, c
    return out


def _lstm_vjp(g, node):
    xproj, w_hh, h0, c0 = node.inputs
    steps, batch, hidden = _dims("lstm_recurrence", xproj, w_hh)
    packed = lstm_recurrence_grad(g, xproj, w_hh, node, h0, c0, reverse=node.attrs["reverse"])
    ops = _ops()
    dz, h_prev = block(packed, 1, steps, 0, 4 * hidden), block(packed, 1, steps, 4 * hidden, hidden)
    d_w = ops.transpose(ops.reshape(dz, (-1, 4 * hidden))) @ ops.reshape(h_prev, (-1, hidden))
    return dz, d_w, row0(packed, 0, hidden), row0(packed, hidden, hidden)


register(OpDef("lstm_recurrence", "template", _infer_lstm, _lstm_reference, _lstm_vjp, "lstm_recurrence", arity=4,
               flops=_flops(4, 10, 1), vendor=_vendor))  # a product with w_hh and ~10 gate flops per unit, per step


def _infer_lstm_grad(inputs, attrs):
    g, xproj, w_hh, out, h0, c0 = inputs
    steps, batch, hidden = _dims("lstm_recurrence_grad", xproj, w_hh)
    state = (batch, hidden)
    _check("lstm_recurrence_grad", dict(zip(("g", "xproj", "w_hh", "out", "h0", "c0"), inputs)),
           {"g": (steps + 1, batch, 2 * hidden), "xproj": xproj.shape, "w_hh": w_hh.shape,
            "out": (steps + 1, batch, 2 * hidden), "h0": state, "c0": state}, xproj.dtype)
    return xproj.dtype, (steps + 1, batch, 5 * hidden)


def _lstm_grad_reference(node, arrays, shape):
    g, xproj, w_hh, out, h0, c0 = arrays
    hidden, reverse = w_hh.shape[1], node.attrs["reverse"]
    steps = xproj.shape[0]
    packed = np.zeros(shape, xproj.dtype)
    dh, dc = g[0, :, :hidden], g[0, :, hidden:]
    for t in reversed(list(_order(steps, reverse))):
        before = t + 1 if reverse else t - 1
        h, c = (out[1 + before, :, :hidden], out[1 + before, :, hidden:]) if 0 <= before < steps else (h0, c0)
        i, f, gg, o = _lstm_gates(xproj[t] + h @ w_hh.T, hidden)
        dh, dc = dh + g[1 + t, :, :hidden], dc + g[1 + t, :, hidden:]
        tanh_c = np.tanh(f * c + i * gg)
        dc = dc + dh * o * (1 - tanh_c ** 2)
        dz = np.concatenate([dc * gg * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - gg ** 2),
                             dh * tanh_c * o * (1 - o)], axis=-1)
        dh, dc = dz @ w_hh, dc * f
        packed[1 + t, :, :4 * hidden], packed[1 + t, :, 4 * hidden:] = dz, h
    packed[0, :, :hidden], packed[0, :, hidden:2 * hidden] = dh, dc
    return packed


register(OpDef("lstm_recurrence_grad", "template", _infer_lstm_grad, _lstm_grad_reference, None,
               "lstm_recurrence_grad", arity=6,
               flops=_flops(4, 30, 2), vendor=_vendor))  # the forward's product recomputed, the dh product, ~30 flops per unit


# --- gru_recurrence -------------------------------------------------------------------------------
def gru_recurrence(xproj, w_hh, b_hh, h0, reverse: bool = False) -> Node:
    """Every step of one GRU direction (see the module docstring): [T+1, B, H]."""
    return _recurrence("gru_recurrence", xproj, w_hh, b_hh, h0, reverse=reverse)


def gru_recurrence_grad(g, xproj, w_hh, b_hh, out, h0, reverse: bool = False) -> Node:
    """The packed cotangents of gru_recurrence (see the module docstring): [T+1, B, 5H]."""
    return _recurrence("gru_recurrence_grad", g, xproj, w_hh, b_hh, out, h0, reverse=reverse)


def _infer_gru(inputs, attrs):
    xproj, w_hh, b_hh, h0 = inputs
    steps, batch, hidden = _dims("gru_recurrence", xproj, w_hh)
    _check("gru_recurrence", {"xproj": xproj, "w_hh": w_hh, "b_hh": b_hh, "h0": h0},
           {"xproj": xproj.shape, "w_hh": w_hh.shape, "b_hh": (3 * hidden,), "h0": (batch, hidden)}, xproj.dtype)
    return xproj.dtype, (steps + 1, batch, hidden)


def _gru_step(x, h, w_hh, b_hh, hidden):
    """(r, z, n, the n block of h @ w_hh.T + b_hh) of one step."""
    hh = h @ w_hh.T + b_hh
    r = _sigmoid(x[..., :hidden] + hh[..., :hidden])
    z = _sigmoid(x[..., hidden:2 * hidden] + hh[..., hidden:2 * hidden])
    n_h = hh[..., 2 * hidden:]
    return r, z, np.tanh(x[..., 2 * hidden:] + r * n_h), n_h


def _gru_reference(node, arrays, shape):
    xproj, w_hh, b_hh, h = arrays
    hidden = w_hh.shape[1]
    out = np.zeros(shape, xproj.dtype)
    for t in _order(xproj.shape[0], node.attrs["reverse"]):
        r, z, n, _ = _gru_step(xproj[t], h, w_hh, b_hh, hidden)
        h = (1 - z) * n + z * h
        out[1 + t] = h
    out[0] = h
    return out


def _gru_vjp(g, node):
    xproj, w_hh, b_hh, h0 = node.inputs
    steps, batch, hidden = _dims("gru_recurrence", xproj, w_hh)
    packed = gru_recurrence_grad(g, xproj, w_hh, b_hh, node, h0, reverse=node.attrs["reverse"])
    ops = _ops()
    d_x = block(packed, 1, steps, 0, 3 * hidden)
    d_hidden = ops.concatenate([block(packed, 1, steps, 0, 2 * hidden), block(packed, 1, steps, 3 * hidden, hidden)],
                               axis=-1)
    h_prev = block(packed, 1, steps, 4 * hidden, hidden)
    flat = ops.reshape(d_hidden, (-1, 3 * hidden))
    d_w = ops.transpose(flat) @ ops.reshape(h_prev, (-1, hidden))
    return d_x, d_w, ops.sum(flat, axis=0), row0(packed, 0, hidden)


register(OpDef("gru_recurrence", "template", _infer_gru, _gru_reference, _gru_vjp, "gru_recurrence", arity=4,
               flops=_flops(3, 12, 1), vendor=_vendor))  # a product with w_hh and ~12 gate flops per unit, per step


def _infer_gru_grad(inputs, attrs):
    g, xproj, w_hh, b_hh, out, h0 = inputs
    steps, batch, hidden = _dims("gru_recurrence_grad", xproj, w_hh)
    _check("gru_recurrence_grad", dict(zip(("g", "xproj", "w_hh", "b_hh", "out", "h0"), inputs)),
           {"g": (steps + 1, batch, hidden), "xproj": xproj.shape, "w_hh": w_hh.shape, "b_hh": (3 * hidden,),
            "out": (steps + 1, batch, hidden), "h0": (batch, hidden)}, xproj.dtype)
    return xproj.dtype, (steps + 1, batch, 5 * hidden)


def _gru_grad_reference(node, arrays, shape):
    g, xproj, w_hh, b_hh, out, h0 = arrays
    hidden, reverse = w_hh.shape[1], node.attrs["reverse"]
    steps = xproj.shape[0]
    packed = np.zeros(shape, xproj.dtype)
    dh = g[0]
    for t in reversed(list(_order(steps, reverse))):
        before = t + 1 if reverse else t - 1
        h = out[1 + before] if 0 <= before < steps else h0
        r, z, n, n_h = _gru_step(xproj[t], h, w_hh, b_hh, hidden)
        dh = dh + g[1 + t]
        d_n = dh * (1 - z) * (1 - n ** 2)
        d_r, d_z = d_n * n_h * r * (1 - r), dh * (h - n) * z * (1 - z)
        d_nh = d_n * r
        packed[1 + t] = np.concatenate([d_r, d_z, d_n, d_nh, h], axis=-1)
        dh = dh * z + np.concatenate([d_r, d_z, d_nh], axis=-1) @ w_hh
    packed[0, :, :hidden] = dh
    return packed


register(OpDef("gru_recurrence_grad", "template", _infer_gru_grad, _gru_grad_reference, None,
               "gru_recurrence_grad", arity=6,
               flops=_flops(3, 30, 2), vendor=_vendor))  # the forward's product recomputed, the dh product, ~30 flops per unit


# --- what the layers build -------------------------------------------------------------------------
def run_direction(cell: str, xproj, w_hh, b_hh, states: tuple, reverse: bool = False) -> tuple:
    """One direction of an LSTM or GRU layer (`cell` "lstm" or "gru") as one node: (every
    step's h as [T, B, H], the final states as [B, H] each: (h_n, c_n) or (h_n,)). `states`
    holds the initial states, None for zeros; `b_hh` is None for a layer without bias (an
    LSTM's b_hh is already in xproj)."""
    ops = _ops()
    steps, batch, hidden = _dims(f"{cell}_recurrence", xproj, w_hh)
    zeros = ops.broadcast_to(ops.constant(0.0, xproj.dtype), (batch, hidden))
    states = tuple(zeros if s is None else s for s in states)
    if cell == "lstm":
        out = lstm_recurrence(xproj, w_hh, *states, reverse=reverse)
        return block(out, 1, steps, 0, hidden), (row0(out, 0, hidden), row0(out, hidden, hidden))
    bias = ops.broadcast_to(ops.constant(0.0, xproj.dtype), (3 * hidden,)) if b_hh is None else b_hh
    out = gru_recurrence(xproj, w_hh, bias, *states, reverse=reverse)
    return block(out, 1, steps, 0, hidden), (row0(out, 0, hidden),)
