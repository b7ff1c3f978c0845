"""kgen.scan: the loop primitive. Its reference against NumPy and torch, its gradient (a
reverse scan) against torch and finite differences, the kernels of its unrolled steps
against the reference, the printer's nested body, and its refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import ops

RNG = np.random.default_rng(0)


def _zeros(shape):
    return ops.broadcast_to(ops.constant(0.0), shape)


def _run_both(inputs, outputs, values):
    """The reference's outputs, after checking the compiled kernels give the same."""
    graph = kgen.Graph(inputs, outputs)
    want = kgen.reference.run(graph, values)
    got = kgen.function(inputs, outputs)(*values)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)
    return want


@pytest.mark.parametrize("reverse", [False, True])
def test_cumulative_body_matches_numpy(reverse):
    x = kgen.tensor("x", (6, 4))
    total, partial = kgen.scan(lambda c, xt: (c + xt, c + xt), _zeros((4,)), x, reverse=reverse)
    data = RNG.standard_normal((6, 4)).astype(np.float32)
    final, stacked = _run_both([x], [total, partial], [data])
    expected = np.cumsum(data[::-1], 0)[::-1] if reverse else np.cumsum(data, 0)
    np.testing.assert_allclose(stacked, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(final, data.sum(0), rtol=1e-6, atol=1e-6)


def test_tuple_carries_several_inputs_no_outputs_and_a_bare_length():
    a, b = kgen.tensor("a", (5, 3)), kgen.tensor("b", (5, 3))
    (s, p), ys = kgen.scan(lambda c, x: ((c[0] + x[0], c[1] * x[1]), None), (_zeros((3,)), _zeros((3,)) + 1.0),
                           (a, b))
    assert ys is None
    da, db = RNG.standard_normal((5, 3)).astype(np.float32), RNG.standard_normal((5, 3)).astype(np.float32)
    got_s, got_p = _run_both([a, b], [s, p], [da, db])
    np.testing.assert_allclose(got_s, da.sum(0), rtol=1e-6)
    np.testing.assert_allclose(got_p, db.prod(0), rtol=1e-5)
    counter, ramp = kgen.scan(lambda c, _: (c + 1.0, c * 2.0), _zeros(()), length=4)
    np.testing.assert_array_equal(kgen.reference.run(kgen.Graph([], [counter, ramp]), [])[1], [0, 2, 4, 6])


def _rnn(x, h0, wx, wh, b, reverse=False):
    """h_t = tanh(x_t @ wx + h_{t-1} @ wh + b), every h_t: weights read from outside the step."""
    return kgen.scan(lambda h, xt: (ops.tanh(xt @ wx + h @ wh + b),) * 2, h0, x, reverse=reverse)


def _torch_rnn(x, h, wx, wh, b, reverse=False):
    hs = [None] * len(x)
    for t in (reversed(range(len(x))) if reverse else range(len(x))):
        h = torch.tanh(x[t] @ wx + h @ wh + b)
        hs[t] = h
    return h, torch.stack(hs)


@pytest.mark.parametrize("length, reverse", [(1, False), (7, False), (7, True)])
def test_recurrence_values_and_every_gradient_match_torch(length, reverse):
    shapes = {"x": (length, 2, 3), "h0": (2, 4), "wx": (3, 4), "wh": (4, 4), "b": (4,)}
    nodes = {name: kgen.tensor(name, shape) for name, shape in shapes.items()}
    data = {name: (RNG.standard_normal(shape) * 0.5).astype(np.float32) for name, shape in shapes.items()}
    last, every = _rnn(*nodes.values(), reverse=reverse)
    weight = kgen.tensor("g", (length, 2, 4))
    loss = ops.sum(every * weight) + ops.sum(last * last)
    grads = kgen.grad(loss, list(nodes.values()))
    cot = RNG.standard_normal((length, 2, 4)).astype(np.float32)
    got = _run_both([*nodes.values(), weight], [last, every, *grads], [*data.values(), cot])
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in data.items()}
    t_last, t_every = _torch_rnn(*leaves.values(), reverse=reverse)
    ((t_every * torch.tensor(cot, dtype=torch.float64)).sum() + (t_last * t_last).sum()).backward()
    want = [t_last, t_every] + [leaf.grad for leaf in leaves.values()]
    for name, g, w in zip(["h_n", "hs", *shapes], got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=1e-6, atol=1e-8, err_msg=name)


def _reverse_scan_families(outputs) -> set:
    """The (body, inputs) of every reverse scan the gradient graph of `outputs` holds."""
    from kgen.ir.graph import topological_order
    return {(id(n.attrs["body"]), tuple(i.id for i in n.inputs)) for n in topological_order(outputs)
            if n.op == "scan" and n.attrs["reverse"]}


def test_the_gradient_of_every_result_a_loss_reads_is_one_reverse_scan():
    """Two carries and two step outputs, all read by the loss, one of them through a value
    that comes after the others (its cotangent arrives last): kgen.grad builds ONE reverse
    scan for the family, its gradients those of torch's loop."""
    x, w, h0 = kgen.tensor("x", (5, 2, 3)), kgen.tensor("w", (3, 3)), kgen.tensor("h0", (2, 3))

    def step(carry, xt):
        h, s = carry
        new = ops.tanh(xt + h @ w)
        return (new, s + new * h), (new, s * xt)

    (last_h, last_s), (hs, ps) = kgen.scan(step, (h0, _zeros((2, 3)) + 0.5), x)
    late = ops.exp(ops.sum(last_s * 0.1))  # read after the step outputs' sums
    loss = ops.sum(hs * hs) + ops.sum(last_h) + ops.sum(ps) * late
    grads = kgen.grad(loss, [x, w, h0])
    assert len(_reverse_scan_families(grads)) == 1
    data = [RNG.standard_normal(s).astype(np.float32) * 0.5 for s in ((5, 2, 3), (3, 3), (2, 3))]
    got = kgen.reference.run(kgen.Graph([x, w, h0], [loss, *grads]), data)
    leaves = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data]
    tx, tw, h = leaves
    s, hs_t, ps_t = torch.full((2, 3), 0.5, dtype=torch.float64), [], []
    for t in range(5):
        new = torch.tanh(tx[t] + h @ tw)
        hs_t.append(new)
        ps_t.append(s * tx[t])
        h, s = new, s + new * h
    t_loss = (torch.stack(hs_t) ** 2).sum() + h.sum() + torch.stack(ps_t).sum() * torch.exp((s * 0.1).sum())
    t_loss.backward()
    np.testing.assert_allclose(got[0], t_loss.item(), rtol=1e-6)
    for name, g, leaf in zip("x w h0".split(), got[1:], leaves):
        np.testing.assert_allclose(g, leaf.grad.numpy(), rtol=1e-6, atol=1e-8, err_msg=name)


def test_gradient_matches_finite_differences():
    x, w = kgen.tensor("x", (4, 3)), kgen.tensor("w", (3,))
    last, _ = kgen.scan(lambda c, xt: (ops.tanh(c * w) + xt, None),
                        _zeros((3,)) + 0.3, x)
    loss = ops.sum(last * last)
    gx, gw = kgen.grad(loss, [x, w])
    graph = kgen.Graph([x, w], [loss, gx, gw])
    xv, wv = RNG.standard_normal((4, 3)), RNG.standard_normal(3)
    _, got_x, got_w = kgen.reference.run(graph, [xv, wv])
    eps = 1e-6
    for value, got, which in ((xv, got_x, 0), (wv, got_w, 1)):
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[idx] += eps
            down[idx] -= eps
            args = [up, wv] if which == 0 else [xv, up]
            args_down = [down, wv] if which == 0 else [xv, down]
            numeric[idx] = (kgen.reference.run(graph, args)[0] - kgen.reference.run(graph, args_down)[0]) / (2 * eps)
        np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-6)


def test_shared_weights_are_trained_through_a_scan():
    w = kgen.shared(np.full((3,), 0.5, np.float32), name="w_scan")
    x = kgen.tensor("x", (4, 3))
    last, _ = kgen.scan(lambda c, xt: (ops.tanh(c * w + xt), None), _zeros((3,)), x)
    loss = ops.sum(last * last)
    (gw,) = kgen.grad(loss, [w])
    step = kgen.function([x], [loss], updates=[(w, w - 0.1 * gw)])
    data = RNG.standard_normal((4, 3)).astype(np.float32)
    first = float(np.asarray(step(data)[0]))
    for _ in range(5):
        last_loss = float(np.asarray(step(data)[0]))
    assert last_loss < first


def test_a_scan_inside_a_scan():
    x = kgen.tensor("x", (3, 4, 2))  # outer steps, inner steps, features

    def outer(c, block):
        inner, _ = kgen.scan(lambda d, row: (d + row * c, None), _zeros((2,)), block)
        return c + inner, inner

    final, inners = kgen.scan(outer, _zeros((2,)) + 1.0, x)
    data = RNG.standard_normal((3, 4, 2)).astype(np.float32)
    got_final, got_inners = _run_both([x], [final, inners], [data])
    c, seen = np.ones(2, np.float32), []
    for block in data:
        inner = (block * c).sum(0)
        c, _ = c + inner, seen.append(inner)
    np.testing.assert_allclose(got_final, c, rtol=1e-5)
    np.testing.assert_allclose(got_inners, np.stack(seen), rtol=1e-5)


def test_the_printer_nests_the_body_under_the_scan():
    x, w = kgen.tensor("x", (5, 3)), kgen.tensor("w", (3,))
    last, every = kgen.scan(lambda c, xt: (c * w + xt, c), _zeros((3,)), x)
    text = str(kgen.Graph([x, w], [last, every]))
    assert "scan[body=<body of" in text and "result=(carry,0)" in text.replace(" ", "")
    assert "    graph(c0: f32[3], x0: f32[3], k0: f32[3]) {" in text, text
    assert text.count("    graph(") == 1  # the siblings share one body, printed once


def test_a_bool_scanned_input_has_no_cotangent_and_the_gradient_stays_one_kernel():
    """A mask scanned with the values (sequence lengths: the state stays past a row's end):
    the backward scan stacks no cotangent for it, so at a symbolic length the forward and
    the gradient are one persistent kernel each; the gradient against torch's loop."""
    x, w = kgen.tensor("x", ("T", 2, 3)), kgen.tensor("w", (3, 3))
    lengths = kgen.tensor("n", (2,), "int32")
    valid = ops.expand_dims(ops.less(ops.iota((x.shape[0], 2), 0), ops.expand_dims(lengths, 0)), 2)

    def step(h, xs):
        xt, keep = xs
        new = ops.tanh(xt + h @ w)
        return ops.where(keep, new, h), ops.where(keep, new, 0.0)

    last, hs = kgen.scan(step, _zeros((2, 3)), (x, valid))
    loss = ops.sum(hs * hs) + ops.sum(last)
    fn = kgen.function([x, w, lengths], [loss] + kgen.grad(loss, [x, w]))
    assert [d.outcome for d in fn.program.plan.decisions if d.rule == "S1"] == ["fused", "fused"]
    data = [RNG.standard_normal(s).astype(np.float32) * 0.5 for s in ((4, 2, 3), (3, 3))]
    got = fn(*data, np.array([4, 2], np.int32))
    tx, tw = (torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data)
    h, t_loss = torch.zeros(2, 3, dtype=torch.float64), 0
    for t in range(4):
        keep = torch.tensor([[True], [t < 2]])
        new = torch.tanh(tx[t] + h @ tw)
        t_loss = t_loss + (torch.where(keep, new, 0.0) ** 2).sum()
        h = torch.where(keep, new, h)
    (t_loss + h.sum()).backward()
    for g, want in zip(got, [t_loss.item() + h.sum().item(), tx.grad.numpy(), tw.grad.numpy()]):
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-5)


def test_a_symbolic_length_runs_on_the_reference_and_compiles_when_its_body_fits_the_persistent_kernel():
    x = kgen.tensor("x", ("T", 3))
    last, _ = kgen.scan(lambda c, xt: (c + xt, None), _zeros((3,)), x)
    data = RNG.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_allclose(kgen.reference.run(kgen.Graph([x], [last]), [data])[0], data.sum(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(kgen.function([x], [last])(data)[0]), data.sum(0), rtol=1e-5)
    # a body the persistent kernel cannot take (a reduction) cannot be unrolled either
    total, _ = kgen.scan(lambda c, xt: (c + ops.sum(xt), None), _zeros(()), x)
    with pytest.raises(kgen.ShapeError, match="T steps\\): a symbolic length needs the persistent scan kernel, and "
                                              "the body does not fit it: the body's %0 sum is a reduction"):
        kgen.function([x], [total])


def test_bad_steps_are_clear_errors():
    x = kgen.tensor("x", (4, 3))
    with pytest.raises(kgen.ShapeError, match="carry 0 goes in as f32\\[3\\] and comes out as f32\\[\\]"):
        kgen.scan(lambda c, xt: (ops.sum(c + xt), None), _zeros((3,)), x)
    with pytest.raises(kgen.KgenError, match="step must return \\(carry, y\\)"):
        kgen.scan(lambda c, xt: c + xt, _zeros((3,)), x)
    with pytest.raises(kgen.ShapeError, match="give xs, or length"):
        kgen.scan(lambda c, xt: (c, None), _zeros((3,)))
    with pytest.raises(kgen.ShapeError, match="every xs needs axis 0 of the scan's length 4"):
        kgen.scan(lambda c, xt: (c, None), _zeros((3,)), (x, kgen.tensor("y", (5, 3))))


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_carry_sized_by_an_expression_of_a_symbol_runs_at_every_size(n):
    """The body's shapes hold the graph's symbols (a carry [2*N]); the reference binds them
    from the graph, since 2*N alone cannot tell N at N = 0 (found by kgen.fuzz)."""
    x = kgen.tensor("x", (2, 1, 1, "N"))
    rows = ops.reshape(x, (1, -1))
    _, every = kgen.scan(lambda c, t: (ops.tanh(c + t), c), rows[0] * 0.0, rows)
    data = RNG.standard_normal((2, 1, 1, n)).astype(np.float32)
    got = _run_both([x], [every], [data])[0]
    np.testing.assert_array_equal(got, np.zeros((1, 2 * n)))
