"""The persistent scan template (kgen/kernels/scan.py, fusion rules S1 and E6): a scan whose
body fits runs as one kernel, forward and backward, also at a symbolic length; one that does
not is unrolled (static length) with its reason in the fusion decisions, or refused
(symbolic length). Values against NumPy and torch, every kernel against the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import ops
from kgen.kernels import aot
from kgen.lowering.explain import format_explanation, loop_decisions

RNG = np.random.default_rng(7)


def _zeros(shape):
    return ops.broadcast_to(ops.constant(0.0), shape)


def _s1(fn) -> list:
    """(outcome, reason) of each loop decision of a compiled function."""
    return [(d.outcome, d.reason) for d in fn.program.plan.decisions if d.rule == "S1"]


def _launches_of(fn) -> list:
    return [k.kind for k in fn.kernels]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_cumulative_sum_is_one_kernel(reverse):
    x = kgen.tensor("x", (6, 3, 5))
    total, partial = kgen.scan(lambda c, xt: (c + xt, c + xt), _zeros((3, 5)), x, reverse=reverse)
    fn = kgen.function([x], [total, partial])
    assert _launches_of(fn) == ["scan"], fn.source
    data = RNG.standard_normal((6, 3, 5)).astype(np.float32)
    assert kgen.check(fn, [data], strict=True).ok
    got_total, got_partial = (np.asarray(v) for v in fn(data))
    expected = np.cumsum(data[::-1], 0)[::-1] if reverse else np.cumsum(data, 0)
    np.testing.assert_allclose(got_partial, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_total, data.sum(0), rtol=1e-5, atol=1e-6)
    assert _s1(fn) == [("fused", f"scan %2 (carries f32[3,5], 6 steps{', reversed' if reverse else ''}): one "
                                 "persistent kernel, the carries in registers over the steps")]


def test_a_carry_without_rows_and_a_scalar_counter():
    """[n] and [] carries are one row: cumulative product of a [4] vector, and a counter
    with no scanned input at all."""
    x = kgen.tensor("x", (5, 4))
    prod, _ = kgen.scan(lambda c, xt: (c * xt, None), _zeros((4,)) + 1.0, x)
    counter, ramp = kgen.scan(lambda c, _: (c + 1.0, c * 2.0), _zeros(()), length=4)
    fn = kgen.function([x], [prod, counter, ramp])
    # the [4] scan's initial carry (ones) is a kernel of its own, beside the counter's scan (L1)
    assert [(k.kind, [p.kind for p in k.parts]) for k in fn.kernels] == [("combo", ["pointwise", "scan"]),
                                                                          ("scan", [])]
    data = RNG.uniform(0.5, 1.5, (5, 4)).astype(np.float32)
    assert kgen.check(fn, [data], strict=True).ok
    got = [np.asarray(v) for v in fn(data)]
    np.testing.assert_allclose(got[0], data.prod(0), rtol=1e-5)
    np.testing.assert_allclose(got[1], 4.0)
    np.testing.assert_allclose(got[2], [0, 2, 4, 6])
    assert all(outcome == "fused" for outcome, _ in _s1(fn))


def _elman(x, h0, w_ih, w_hh, b, reverse=False):
    return kgen.scan(lambda h, xt: (ops.tanh(xt @ w_ih + h @ w_hh + b),) * 2, h0, x, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_an_elman_rnn_forward_and_backward_are_persistent_kernels(reverse):
    """Values and every gradient against torch.nn.RNN (its weights transposed), forward and
    backward each one persistent kernel: the weight gradients are one matmul over all steps."""
    steps, batch, n_in, hidden = 6, 3, 5, 7
    shapes = {"x": (steps, batch, n_in), "h0": (batch, hidden), "w_ih": (n_in, hidden), "w_hh": (hidden, hidden),
              "b": (hidden,)}
    nodes = {k: kgen.tensor(k, s) for k, s in shapes.items()}
    data = {k: (RNG.standard_normal(s) * 0.5).astype(np.float32) for k, s in shapes.items()}
    last, every = _elman(*nodes.values(), reverse=reverse)
    weight = kgen.tensor("g", (steps, batch, hidden))
    loss = ops.sum(every * weight) + ops.sum(last * last)
    grads = kgen.grad(loss, list(nodes.values()))
    fn = kgen.function([*nodes.values(), weight], [last, every, *grads])
    cot = RNG.standard_normal((steps, batch, hidden)).astype(np.float32)
    assert kgen.check(fn, [*data.values(), cot], strict=True).ok
    decisions = _s1(fn)
    # the forward scan and ONE reverse scan for the gradients of both results the loss reads
    assert len(decisions) == 2 and all(o == "fused" for o, _ in decisions), decisions
    # and the weight gradients: one matmul over every step per weight
    kinds = [k.kind for launch in fn.kernels for k in (launch.parts or [launch])]
    assert kinds.count("scan") == 2 and kinds.count("matmul") == 2, kinds
    # launches: the forward scan, the last carry's cotangent (2 * last), the reverse scan,
    # both weight gradients
    assert [k.kind for k in fn.kernels] == ["combo", "pointwise", "scan", "combo"], fn.kernels

    rnn = torch.nn.RNN(n_in, hidden, batch_first=False, bias=True, nonlinearity="tanh").double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.tensor(data["w_ih"].T))
        rnn.weight_hh_l0.copy_(torch.tensor(data["w_hh"].T))
        rnn.bias_ih_l0.copy_(torch.tensor(data["b"]))
        rnn.bias_hh_l0.zero_()
    x = torch.tensor(data["x"], dtype=torch.float64, requires_grad=True)
    h0 = torch.tensor(data["h0"], dtype=torch.float64, requires_grad=True)
    hs, h_n = rnn(x.flip(0) if reverse else x, h0[None])
    hs = hs.flip(0) if reverse else hs
    t_loss = (hs * torch.tensor(cot, dtype=torch.float64)).sum() + (h_n[0] * h_n[0]).sum()
    t_loss.backward()
    want = [h_n[0], hs, x.grad, h0.grad, rnn.weight_ih_l0.grad.T, rnn.weight_hh_l0.grad.T, rnn.bias_ih_l0.grad]
    got = fn(*data.values(), cot)
    for name, g, w in zip(["h_n", "hs", "x", "h0", "w_ih", "w_hh", "b"], got, want):
        np.testing.assert_allclose(np.asarray(g), w.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_symbolic_length_compiles_once_and_serves_every_length():
    xs = kgen.tensor("xs", ("T", 4, 8))
    w_ih, w_hh, h0 = kgen.tensor("w_ih", (8, 16)), kgen.tensor("w_hh", (16, 16)), kgen.tensor("h0", (4, 16))
    last, every = kgen.scan(lambda h, xt: (ops.tanh(xt @ w_ih + h @ w_hh),) * 2, h0, xs)
    loss = ops.sum(every * every)
    grads = kgen.grad(loss, [w_ih, w_hh, xs])
    fn = kgen.function([xs, w_ih, w_hh, h0], [last, every, *grads])
    weights = [(RNG.standard_normal(s) * 0.3).astype(np.float32) for s in ((8, 16), (16, 16), (4, 16))]
    fn(RNG.standard_normal((2, 4, 8)).astype(np.float32), *weights)  # compiles
    before = kgen.counters.snapshot()
    for steps in (3, 5):
        data = RNG.standard_normal((steps, 4, 8)).astype(np.float32)
        got = fn(data, *weights)
        want = kgen.reference.run(fn.program.graph, [data, *weights])
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5)
        assert np.asarray(got[1]).shape == (steps, 4, 16)
    assert kgen.counters.since(before).get("lowerings", 0) == 0


def test_a_body_the_template_cannot_take_is_unrolled_and_says_why():
    x = kgen.tensor("x", (4, 2, 3))
    last, _ = kgen.scan(lambda c, xt: (c + ops.sum(xt, axis=1, keepdims=True), None), _zeros((2, 1)), x)
    fn = kgen.function([x], [last])
    (decision,) = _s1(fn)
    assert decision[0] == "refused"
    assert "per-step kernels because the body's %0 sum is a reduction" in decision[1], decision
    text = format_explanation([], loop_decisions(fn.program.plan))
    assert "scan %2 (carries f32[2,1], 4 steps): per-step kernels because" in text, text
    data = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    assert kgen.check(fn, [data], strict=True).ok
    np.testing.assert_allclose(np.asarray(fn(data)[0]), data.sum((0, 2))[:, None], rtol=1e-5)


def test_a_carry_read_through_a_slice_is_unrolled():
    """A carry lives in registers: a view moving its elements cannot be read there."""
    x = kgen.tensor("x", (3, 2, 4))
    last, _ = kgen.scan(lambda c, xt: (ops.concatenate([c[:, 2:], c[:, :2]], axis=1) + xt, None), _zeros((2, 4)), x)
    fn = kgen.function([x], [last])
    (decision,) = _s1(fn)
    assert decision[0] == "refused" and "a carry, held in registers" in decision[1], decision
    data = RNG.standard_normal((3, 2, 4)).astype(np.float32)
    assert kgen.check(fn, [data], strict=True).ok


def test_a_symbolic_length_with_a_body_that_does_not_fit_is_a_clear_error():
    x = kgen.tensor("x", ("T", 2, 3))
    last, _ = kgen.scan(lambda c, xt: (c + ops.sum(xt, axis=1, keepdims=True), None), _zeros((2, 1)), x)
    with pytest.raises(kgen.ShapeError, match=r"scan %2 \(carries f32\[2,1\], T steps\): a symbolic length needs "
                                              r"the persistent scan kernel, and the body does not fit it: the body's "
                                              r"%0 sum is a reduction"):
        kgen.function([x], [last])


def test_a_column_slice_of_a_product_reads_a_slice_of_the_weight():
    """A GRU-like body: one product h @ W[16, 48] sliced into three gates."""
    x, h0, w = kgen.tensor("x", (5, 3, 16)), kgen.tensor("h0", (3, 16)), kgen.tensor("w", (16, 48))

    def step(h, xt):
        z = h @ w
        r, u, n = z[:, :16], z[:, 16:32], z[:, 32:]
        new = ops.sigmoid(u + xt) * h + (1.0 - ops.sigmoid(u + xt)) * ops.tanh(n + ops.sigmoid(r) * xt)
        return new, new

    last, every = kgen.scan(step, h0, x)
    fn = kgen.function([x, h0, w], [last, every])
    assert _launches_of(fn) == ["scan"]
    data = [(RNG.standard_normal(s) * 0.4).astype(np.float32) for s in ((5, 3, 16), (3, 16), (16, 48))]
    assert kgen.check(fn, data, strict=True).ok


def test_column_blocks_of_carries_are_multiplied_and_stored_block_by_block():
    """A step output [h*2 | tanh(h) | zeros] (a sum of column pads around the carry) is stored
    block by block, the gap as zeros, and a product of a slice of it is a sum of block @
    W[its rows]: one kernel, the carry never moved (scan_fit.column_blocks)."""
    x, h0, w = kgen.tensor("x", (5, 3, 6)), kgen.tensor("h0", (3, 6)), kgen.tensor("w", (12, 6))

    def step(h, xt):
        blocks = ops.pad(ops.concatenate([h * 2.0, ops.tanh(h)], 1), ((0, 0), (0, 5)))
        return ops.tanh(blocks[:, :12] @ w) + xt, blocks

    last, every = kgen.scan(step, h0, x)
    fn = kgen.function([x, h0, w], [last, every])
    assert _launches_of(fn) == ["scan"], _s1(fn)
    data = [(RNG.standard_normal(s) * 0.4).astype(np.float32) for s in ((5, 3, 6), (3, 6), (12, 6))]
    assert kgen.check(fn, data, strict=True).ok
    got = np.asarray(fn(*data)[1])
    assert got.shape == (5, 3, 17) and not got[:, :, 12:].any()


def test_the_kernel_compiles_ahead_of_time_for_sm80_and_sm90():
    xs = kgen.tensor("xs", ("T", "N", 8))
    w_ih, w_hh, h0 = kgen.tensor("w_ih", (8, 32)), kgen.tensor("w_hh", (32, 32)), kgen.tensor("h0", ("N", 32))
    last, every = kgen.scan(lambda h, xt: (ops.tanh(xt @ w_ih + h @ w_hh),) * 2, h0, xs)
    program = kgen.compile(kgen.Graph([xs, w_ih, w_hh, h0], [last, every]))
    (kernel,) = program.kernels
    assert kernel.kind == "scan"
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"), sizes={"T": 7, "N": 64})
    assert [b.target for b in binaries] == ["sm_80", "sm_90"]
    for b in binaries:
        assert b.cubin[:4] == b"\x7fELF" and f".target {b.target}" in b.ptx
        assert "mma" not in b.ptx and "fma.rn.f32" in b.ptx  # exact float32 products


def test_the_cost_model_counts_the_loop():
    """A persistent scan's work is its length times a step's: flops, the latency of a chain of
    dependent steps, and the weights read again from L2 at every step after the first."""
    from kgen.autotune import costmodel
    from kgen.kernels.families import lookup

    xs = kgen.tensor("xs", ("T", "N", 8))
    w_ih, w_hh, h0 = kgen.tensor("w_ih", (8, 64)), kgen.tensor("w_hh", (64, 64)), kgen.tensor("h0", ("N", 64))
    last, every = kgen.scan(lambda h, xt: (ops.tanh(xt @ w_ih + h @ w_hh),) * 2, h0, xs)
    (kernel,) = kgen.compile(kgen.Graph([xs, w_ih, w_hh, h0], [last, every])).kernels
    config = {"BLOCK_B": 16, "num_warps": 4, "num_stages": 1}
    step_flops = 256 * 64 * (2 * 8 + 2 * 64) + 2 * 256 * 64  # two products, an add and a tanh per element
    works = {t: costmodel.kernel_work(kernel, {"T": t, "N": 256}) for t in (10, 100)}
    for t, work in works.items():
        assert work.flops == t * step_flops
        assert lookup(kernel.config_rule).rereads(dict(work.dims), config) == 16 * (t - 1) * (8 * 64 + 64 * 64) * 4
    for target in ("sm_80", "sm_90"):
        short, long = (costmodel.predict(kernel, {"T": t, "N": 256}, target, config) for t in (10, 100))
        launch = costmodel.LAUNCH_US
        assert 8 < (long.us - launch) / (short.us - launch) < 11, (short, long)
        assert long.parts["latency"] > 9 * short.parts["latency"]
        assert short.resources.shared_bytes > 0  # the products' operands are staged in shared memory
