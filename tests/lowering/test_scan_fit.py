"""kgen/lowering/scan_fit.py: which scan bodies the persistent scan template takes, and the
reason it gives for each it does not (fusion rule S1 records it). Pure IR: nothing compiles."""
from __future__ import annotations

import pytest

import kgen
from kgen import ops
from kgen.lowering.scan_fit import refusal


def _zeros(shape):
    return ops.broadcast_to(ops.constant(0.0), shape)


def _scan(step, init_shape, xs_shape, **kwargs):
    last, _ = kgen.scan(step, _zeros(init_shape), kgen.tensor("x", xs_shape), **kwargs)
    return last


W = {"w": kgen.tensor("w", (4, 4)), "big": kgen.tensor("big", (300, 200)), "v": kgen.tensor("v", (4,)),
     "tall": kgen.tensor("tall", (8, 4)), "wide": kgen.tensor("wide", (4, 12))}


def _blocks_step(h, x):
    """A step output of column blocks [h | tanh(h) | zeros] and a product of two of them
    (the gradient of column slices builds such sums of pads)."""
    blocks = ops.pad(ops.concatenate([h * 2.0, ops.tanh(h)], 1), ((0, 0), (0, 4)))
    return ops.tanh(blocks[:, :8] @ W["tall"]) + x, blocks


def _gates_step(h, x):
    """Gates as column slices of one product, and values of them padded back into its width
    (as the gradient of the slices is) times the weight's transpose, as a reverse LSTM step."""
    z = h @ W["wide"] + x
    back = ops.pad(ops.sigmoid(z[:, :4]) * h, ((0, 0), (0, 8))) + ops.pad(ops.tanh(z[:, 8:]) * h, ((0, 0), (8, 0)))
    return back @ W["wide"].T, None

FITS = {
    "cumulative sum": (lambda c, x: (c + x, None), (3, 4), (5, 3, 4)),
    "elman": (lambda h, x: (ops.tanh(x @ W["w"] + h @ W["w"] + W["v"]), None), (3, 4), ("T", 3, 4)),
    "one row": (lambda c, x: (c * x + W["v"], None), (4,), (5, 4)),
    "a batch of one row": (lambda h, x: (ops.tanh(h @ W["w"]) + x, None), (1, 4), (5, 1, 4)),
    "a batch of one column": (lambda c, x: (ops.tanh(c) + x, None), (1, 1), (5, 1, 1)),
    "a scalar": (lambda c, x: (c + ops.exp(x), None), (), (5,)),
    "a transposed weight": (lambda h, x: (ops.sigmoid(h @ W["w"].T) + x, None), (2, 4), (5, 2, 4)),
    "a step input through views": (lambda c, x: (c + ops.reshape(x, (2, 4)), None), (2, 4), (5, 8)),
    "a column slice of a product": (lambda h, x: (h @ ops.concatenate([W["w"], W["w"]], 1)[:, 2:6] + x, None),
                                    (2, 4), (5, 2, 4)),
    "column blocks of a carry, multiplied and stored": (_blocks_step, (2, 4), (5, 2, 4)),
    "gates sliced from a product, their cotangents padded back": (_gates_step, (2, 4), (5, 2, 12)),
}

REFUSED = {
    "a reduction": ((lambda c, x: (c + ops.sum(x, axis=1, keepdims=True), None), (2, 1), (5, 2, 3)),
                    "the body's %0 sum is a reduction"),
    "a product of two per-step values": ((lambda h, x: (h @ x, None), (4, 4), (5, 4, 4)),
                                         "multiplies by a value that changes per step"),
    "a product too deep": ((lambda h, x: (ops.tanh(x @ W["big"]) + h, None), (2, 200), (5, 2, 300)),
                           "sums over 300 terms: the template holds static depths of at most 256"),
    "three axes": ((lambda c, x: (c + x, None), (2, 2, 2), (5, 2, 2, 2)),
                   "carry 0 is f32[2,2,2]; the template holds [R, n], [n] or [] values"),
    "a symbolic width": ((lambda c, x: (c + x, None), (2, "N"), (5, 2, "N")),
                         "carry 0 is f32[2,N]; the template holds static widths"),
    "rows and one row mixed": ((lambda c, x: ((c[0] + x, c[1] + 1.0), None), None, (5, 2, 4)),
                               "carry 1 is f32[4] and carry 0 f32[2,4]: the template runs the rows"),
    "a transposed carry": ((lambda c, x: (c.T + x, None), (4, 4), (5, 4, 4)),
                           "the body's c0 (a carry, held in registers) is read at other elements"),
    "column blocks that overlap, stored": ((lambda c, x: (c + x, ops.pad(c, ((0, 0), (0, 2))) + ops.pad(
        c, ((0, 0), (2, 0)))), (2, 4), (5, 2, 4)), "the body's c0 (a carry, held in registers) is read at other "
                                                  "elements"),
    "a carry that is a concatenation": ((lambda c, x: (ops.concatenate([c[:, 2:], c[:, :2] * 2.0], 1) + x, None),
                                         (2, 4), (5, 2, 4)), "the body's c0 (a carry, held in registers) is read"),
    "a scan inside": ((lambda c, x: (c + kgen.scan(lambda d, r: (d + r, None), _zeros((4,)), x)[0], None),
                       (4,), (5, 3, 4)), "is a scan inside the body"),
}


@pytest.mark.parametrize("name", list(FITS))
def test_bodies_the_template_takes(name):
    step, init, xs = FITS[name]
    assert refusal(_scan(step, init, xs)) == ""


@pytest.mark.parametrize("name", list(REFUSED))
def test_bodies_it_does_not_take_say_why(name):
    (step, init, xs), reason = REFUSED[name]
    if init is None:  # two carries: [2, 4] and [4]
        last, _ = kgen.scan(step, (_zeros((2, 4)), _zeros((4,))), kgen.tensor("x", xs))
        node = last[0]
    else:
        node = _scan(step, init, xs)
    assert reason in refusal(node)
