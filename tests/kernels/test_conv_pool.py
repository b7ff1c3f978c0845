"""conv2d, max_pool2d and avg_pool2d, and the ops of their gradients (kgen/ir/ops_conv.py,
kgen/kernels/conv.py, kgen/kernels/pool.py):

- the op table's NumPy references against torch.nn.functional, values and gradients;
- their VJPs by central finite differences on the float64 reference, and against torch.autograd;
- the generated kernels (Triton's interpreter) against the reference (kgen.check, strict) and
  against torch's outputs and gradients, across strides, paddings, dilations and odd sizes;
- NHWC through transposes, float16, symbolic batch sizes, ties and -inf in max pooling;
- every conv/pool kernel compiled ahead of time for sm_80 and sm_90;
- the MNIST CNN's forward and backward step against torch.
"""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import ops
from kgen.ir import ops_conv
from kgen.kernels import aot
from kgen.kernels.combo import flatten
from conftest import random_array, run_compiled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # masked-off lanes under the interpreter


def t64(array, grad=False):
    return torch.tensor(np.asarray(array, np.float64), requires_grad=grad)


def assert_close(got, want, rtol=1e-4, what=""):
    """Within `rtol` of the largest magnitude of `want` (kernels accumulate in float32)."""
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def torch_conv(xv, wv, gv, **kw):
    """torch's conv2d output and the gradients of sum(conv2d(x, w) * g), in float64."""
    x, w = t64(xv, True), t64(wv, True)
    y = F.conv2d(x, w, **kw)
    (y * t64(gv)).sum().backward()
    return y.detach(), x.grad, w.grad


def torch_pool(pool, xv, gv, before=lambda x: x, **kw):
    x = t64(xv, True)
    y = pool(before(x), **kw)
    (y * t64(gv)).sum().backward()
    return y.detach(), x.grad


def conv_graph(shape_x, shape_w, dtype="float32", **kw):
    """Graph (x, w, g) -> conv2d(x, w) and its gradients for the output gradient g."""
    x, w = kgen.tensor("x", shape_x, dtype), kgen.tensor("w", shape_w, dtype)
    y = ops.conv2d(x, w, **kw)
    g = kgen.tensor("g", y.shape, dtype)
    dx, dw = kgen.grad(y, [x, w], seed=g)
    return kgen.Graph([x, w, g], [y, dx, dw]), tuple(int(d) for d in y.shape)


def pool_graph(names, shape_x, dtype="float32", **kw):
    """Graph (x, g) -> each pooling of `names` over x and its gradient for the output gradient g."""
    x = kgen.tensor("x", shape_x, dtype)
    pooled = [getattr(ops, name)(x, **kw) for name in names]
    g = kgen.tensor("g", pooled[0].shape, dtype)
    outs = [out for y in pooled for out in (y, kgen.grad(y, x, seed=g))]
    return kgen.Graph([x, g], outs), tuple(int(d) for d in g.shape)


def conv_kwargs(stride, padding, dilation):
    return dict(stride=stride, padding=padding, dilation=dilation)


# --- the op table's references against torch --------------------------------------------------
# (N, C, H, W, F, KH, KW, stride, padding, dilation): every stride, padding and dilation on two
# shapes, then odd ones
CONV_CASES = [(n, c, h, w, f, kh, kw, stride, padding, dilation)
              for (n, c, h, w), (f, kh, kw) in [((2, 3, 7, 7), (4, 3, 3)), ((1, 1, 13, 8), (1, 2, 3))]
              for stride, padding, dilation in itertools.product([1, 2, (2, 1)], [0, 1, 2, (0, 2)], [1, 2])] + [
    (1, 3, 13, 13, 4, 3, 3, 2, 2, 2),
    (2, 1, 13, 13, 4, 5, 5, 1, 2, 1),
    (2, 3, 7, 7, 1, 3, 3, 2, 0, 2),
    (1, 3, 13, 7, 4, 2, 3, (2, 1), (1, 0), (1, 2)),
    (2, 3, 8, 8, 4, 1, 1, 2, 0, 1),  # a 1x1 kernel with stride 2: some pixels are never read
    (2, 1, 7, 7, 4, 7, 7, 1, 0, 1),  # the window is the whole image
    # sizes of 1, which index expressions simplify away
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1), (1, 1, 5, 1, 1, 1, 1, 1, 0, 1), (1, 2, 1, 1, 1, 3, 3, 2, 1, 1),
    (1, 1, 2, 2, 3, 2, 2, 1, 0, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_reference_matches_torch(case, rng):
    n, c, h, w, f, kh, kw, stride, padding, dilation = case
    kw_ = conv_kwargs(stride, padding, dilation)
    graph, out_shape = conv_graph((n, c, h, w), (f, c, kh, kw), **kw_)
    xv, wv, gv = random_array(rng, (n, c, h, w)), random_array(rng, (f, c, kh, kw)), random_array(rng, out_shape)
    got = kgen.reference.run(graph, {"x": xv, "w": wv, "g": gv})
    for g, want, what in zip(got, torch_conv(xv, wv, gv, **kw_), ("y", "dx", "dw")):
        assert_close(g, want, rtol=1e-12, what=what)


def _pool_cases():
    """(N, C, H, W, kernel_size, stride, padding): every kernel, stride and padding torch allows."""
    for (n, c, h, w), k, stride, padding in itertools.product([(2, 3, 7, 7), (1, 1, 8, 13)], [1, 2, 3, (3, 2)],
                                                              [None, 1, 2, (1, 3)], [0, 1, (1, 0)]):
        kp = (k, k) if isinstance(k, int) else k
        pp = (padding, padding) if isinstance(padding, int) else padding
        if all(p <= q // 2 for p, q in zip(pp, kp)):
            yield (n, c, h, w, k, stride, padding)


POOL_CASES = list(_pool_cases()) + [(1, 1, 1, 1, 1, None, 0), (1, 1, 1, 1, 3, 1, 1), (1, 1, 3, 3, 3, None, 0),
                                    (1, 2, 5, 1, (3, 1), 2, (1, 0))]


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_reference_matches_torch(name, case, rng):
    n, c, h, w, k, stride, padding = case
    kw = dict(kernel_size=k, stride=stride, padding=padding)
    graph, out_shape = pool_graph([name], (n, c, h, w), **kw)
    xv, gv = random_array(rng, (n, c, h, w)), random_array(rng, out_shape)
    got = kgen.reference.run(graph, {"x": xv, "g": gv})
    want = torch_pool(getattr(F, name), xv, gv, **kw)
    for g, t, what in zip(got, want, ("y", "dx")):
        assert_close(g, t, rtol=1e-12, what=what)


def test_max_pool2d_reference_breaks_ties_as_torch(rng):
    """Ties go to the first maximum in window order; a window of -inf to its first pixel
    inside the image; overlapping windows add up."""
    xv = rng.integers(-1, 2, size=(2, 2, 7, 7)).astype(np.float32)  # many ties
    xv[0, 0, :3, :3] = -np.inf
    for kw in (dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2)):
        graph, out_shape = pool_graph(["max_pool2d"], xv.shape, **kw)
        gv = random_array(rng, out_shape)
        got = kgen.reference.run(graph, {"x": xv, "g": gv})
        for g, t in zip(got, torch_pool(F.max_pool2d, xv, gv, **kw)):
            np.testing.assert_array_equal(g, t.numpy())


def test_gradient_ops_references_match_torch(rng):
    kw = dict(stride=2, padding=1, dilation=2)
    xv, wv, gv = random_array(rng, (2, 3, 9, 8)), random_array(rng, (4, 3, 2, 3)), random_array(rng, (2, 4, 5, 3))
    x, w, g = kgen.tensor("x", xv.shape), kgen.tensor("w", wv.shape), kgen.tensor("g", gv.shape)
    outs = [ops_conv.conv2d_input_grad(g, w, (9, 8), **kw), ops_conv.conv2d_weight_grad(x, g, (2, 3), **kw)]
    graph = kgen.Graph([x, w, g], outs)
    dx, dw = kgen.reference.run(graph, {"x": xv, "w": wv, "g": gv})
    assert_close(dx, torch.nn.grad.conv2d_input(xv.shape, t64(wv), t64(gv), **kw), rtol=1e-12)
    assert_close(dw, torch.nn.grad.conv2d_weight(t64(xv), wv.shape, t64(gv), **kw), rtol=1e-12)
    # max_pool2d_gather is max_pool2d's derivative in a direction t: torch's indices pick it
    tv = random_array(rng, xv.shape)
    t = kgen.tensor("t", tv.shape)
    (got,) = kgen.reference.run(kgen.Graph([t, x], [ops_conv.max_pool2d_gather(t, x, 3, 2, 1)]), {"t": tv, "x": xv})
    out, index = F.max_pool2d(t64(xv), 3, 2, 1, return_indices=True)
    want = torch.gather(t64(tv).flatten(2), 2, index.flatten(2)).view_as(out)
    assert_close(got, want, rtol=0)


# --- VJPs: finite differences on the float64 reference, and torch.autograd ------------------------
EPS = 1e-6


def finite_difference_check(build, arrays, wrt, rng, torch_fn=None):
    """d sum(build(...) * r) / d input, by the VJP rules, central differences and torch."""
    nodes = {k: kgen.tensor(k, v.shape) for k, v in arrays.items()}
    out = build(**nodes)
    r = kgen.tensor("r", out.shape)
    arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    arrays["r"] = random_array(rng, tuple(int(d) for d in out.shape)).astype(np.float64)
    y = ops.sum(out * r)
    inputs = list(nodes.values()) + [r]
    analytic = kgen.reference.run(kgen.Graph(inputs, kgen.grad(y, [nodes[k] for k in wrt])), arrays)
    y_graph = kgen.Graph(inputs, [y])
    for name, got in zip(wrt, analytic):
        numeric = np.zeros_like(arrays[name])
        for idx in np.ndindex(numeric.shape):
            ends = []
            for sign in (1.0, -1.0):
                bumped = arrays[name].copy()
                bumped[idx] += sign * EPS
                ends.append(kgen.reference.run(y_graph, {**arrays, name: bumped})[0])
            numeric[idx] = (ends[0] - ends[1]) / (2 * EPS)
        assert_close(got, numeric, rtol=1e-6, what=f"d/d{name} vs finite differences")
    if torch_fn is not None:
        tensors = {k: t64(v, k in wrt) for k, v in arrays.items() if k != "r"}
        (torch_fn(**tensors) * t64(arrays["r"])).sum().backward()
        for name, got in zip(wrt, analytic):
            assert_close(got, tensors[name].grad, rtol=1e-10, what=f"d/d{name} vs torch")


VJP_CONV = [dict(stride=1, padding=0, dilation=1), dict(stride=2, padding=1, dilation=1),
            dict(stride=(2, 1), padding=(2, 0), dilation=(1, 2)), dict(stride=1, padding=2, dilation=2)]


@pytest.mark.parametrize("kw", VJP_CONV, ids=str)
def test_conv2d_vjp(kw, rng):
    arrays = {"x": random_array(rng, (1, 2, 6, 7)), "w": random_array(rng, (2, 2, 2, 3))}
    finite_difference_check(lambda x, w: ops.conv2d(x, w, **kw), arrays, ("x", "w"), rng,
                            lambda x, w: F.conv2d(x, w, **kw))


@pytest.mark.parametrize("kw", VJP_CONV, ids=str)
def test_conv2d_gradient_ops_vjps(kw, rng):
    """Second derivatives: the gradient ops' own VJPs (other conv ops, in closed form)."""
    probe = ops.conv2d(kgen.tensor("x", (1, 2, 6, 7)), kgen.tensor("w", (2, 2, 2, 3)), **kw)
    gshape = tuple(int(d) for d in probe.shape)
    arrays = {"g": random_array(rng, gshape), "w": random_array(rng, (2, 2, 2, 3))}
    finite_difference_check(lambda g, w: ops_conv.conv2d_input_grad(g, w, (6, 7), **kw), arrays, ("g", "w"), rng,
                            lambda g, w: torch.nn.grad.conv2d_input((1, 2, 6, 7), w, g, **kw))
    arrays = {"x": random_array(rng, (1, 2, 6, 7)), "g": random_array(rng, gshape)}
    finite_difference_check(lambda x, g: ops_conv.conv2d_weight_grad(x, g, (2, 3), **kw), arrays, ("x", "g"), rng,
                            lambda x, g: torch.nn.grad.conv2d_weight(x, (2, 2, 2, 3), g, **kw))


VJP_POOL = [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=(3, 2), stride=(2, 1),
                                                                                padding=(1, 0))]


@pytest.mark.parametrize("kw", VJP_POOL, ids=str)
def test_pool_vjps(kw, rng):
    x = {"x": random_array(rng, (1, 2, 6, 7))}
    finite_difference_check(lambda x: ops.max_pool2d(x, **kw), x, ("x",), rng, lambda x: F.max_pool2d(x, **kw))
    finite_difference_check(lambda x: ops.avg_pool2d(x, **kw), x, ("x",), rng, lambda x: F.avg_pool2d(x, **kw))
    pooled = tuple(int(d) for d in ops.max_pool2d(kgen.tensor("x", (1, 2, 6, 7)), **kw).shape)
    g = random_array(rng, pooled)
    finite_difference_check(lambda g: ops_conv.avg_pool2d_grad(g, (6, 7), **kw), {"g": g}, ("g",), rng)
    # max_pool2d_grad and max_pool2d_gather transpose each other; x gets no gradient from either
    finite_difference_check(lambda g, x: ops_conv.max_pool2d_grad(g, x, **kw), {"g": g, **x}, ("g", "x"), rng)
    t = random_array(rng, (1, 2, 6, 7))
    finite_difference_check(lambda t, x: ops_conv.max_pool2d_gather(t, x, **kw), {"t": t, **x}, ("t", "x"), rng)


# --- generated kernels: against the reference (kgen.check) and torch, on the same cases -----------
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_kernels(case, rng):
    n, c, h, w, f, kh, kw, stride, padding, dilation = case
    kw_ = conv_kwargs(stride, padding, dilation)
    graph, out_shape = conv_graph((n, c, h, w), (f, c, kh, kw), **kw_)
    values = {"x": random_array(rng, (n, c, h, w)), "w": random_array(rng, (f, c, kh, kw)),
              "g": random_array(rng, out_shape)}
    report = kgen.check(graph, values, strict=True)
    assert {"conv2d", "conv2d_input_grad", "conv2d_weight_grad"} <= {k.name.split("_", 1)[1] for k in flatten(kgen.compile(graph).kernels)}
    got = run_compiled(graph, values)
    for g, want, what in zip(got, torch_conv(values["x"], values["w"], values["g"], **kw_), ("y", "dx", "dw")):
        assert_close(g, want, what=what)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool_kernels(case, rng):
    n, c, h, w, k, stride, padding = case
    kw = dict(kernel_size=k, stride=stride, padding=padding)
    graph, out_shape = pool_graph(["max_pool2d", "avg_pool2d"], (n, c, h, w), **kw)
    values = {"x": random_array(rng, (n, c, h, w)), "g": random_array(rng, out_shape)}
    kgen.check(graph, values, strict=True)
    got = run_compiled(graph, values)
    want = torch_pool(F.max_pool2d, values["x"], values["g"], **kw) + \
        torch_pool(F.avg_pool2d, values["x"], values["g"], **kw)
    for g, t, what in zip(got, want, ("max", "d max / dx", "avg", "d avg / dx")):
        assert_close(g, t, what=what)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2),
                                dict(kernel_size=3, stride=2)], ids=str)
def test_max_pool2d_kernels_break_ties_as_torch(kw, rng):
    """Integer values tie often, relu zeros too; a region of -inf makes windows of -inf only."""
    xv = rng.integers(-2, 3, size=(2, 2, 9, 9)).astype(np.float32)
    xv[0, 1, :4, :4] = -np.inf
    x = kgen.tensor("x", xv.shape)
    y = ops.max_pool2d(ops.relu(x) + ops.minimum(x, 0.0), **kw)  # relu zeros, and x again
    g = kgen.tensor("g", y.shape)
    graph = kgen.Graph([x, g], [y, kgen.grad(y, x, seed=g)])
    gv = random_array(rng, tuple(int(d) for d in y.shape))
    kgen.check(graph, {"x": xv, "g": gv}, strict=True)
    got = run_compiled(graph, {"x": xv, "g": gv})
    # the same expression in torch: minimum splits the gradient of a tie at x == 0
    same = lambda t: F.relu(t) + torch.minimum(t, torch.zeros_like(t))  # noqa: E731
    for a, b in zip(got, torch_pool(F.max_pool2d, xv, gv, before=same, **kw)):
        assert_close(a, b, rtol=1e-6)  # overlapping windows add in float32


def test_max_pool2d_gather_kernel(rng):
    t, x = kgen.tensor("t", (2, 3, 9, 8)), kgen.tensor("x", (2, 3, 9, 8))
    graph = kgen.Graph([t, x], [ops_conv.max_pool2d_gather(t, x, 3, 2, 1), ops_conv.max_pool2d_gather(t, x, 2)])
    values = {"t": random_array(rng, (2, 3, 9, 8)), "x": random_array(rng, (2, 3, 9, 8))}
    kgen.check(graph, values, strict=True)
    got = run_compiled(graph, values)
    for out, kw in zip(got, (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2))):
        pooled, index = F.max_pool2d(t64(values["x"]), return_indices=True, **kw)
        want = torch.gather(t64(values["t"]).flatten(2), 2, index.flatten(2)).view_as(pooled)
        np.testing.assert_array_equal(out, want.numpy().astype(np.float32))


def test_second_derivative_through_conv_kernels(rng):
    """A gradient penalty: d/dw of |d loss/dx|^2, which runs every conv op twice."""
    x, w = kgen.tensor("x", (2, 2, 7, 7)), kgen.tensor("w", (3, 2, 3, 3))
    loss = ops.sum(ops.tanh(ops.conv2d(x, w, stride=2, padding=1)))
    dx = kgen.grad(loss, x)
    penalty = ops.sum(dx * dx)
    graph = kgen.Graph([x, w], [penalty, kgen.grad(penalty, w)])
    values = {"x": random_array(rng, (2, 2, 7, 7)), "w": random_array(rng, (3, 2, 3, 3), low=0.1, high=0.5)}
    kgen.check(graph, values, strict=True)
    got = run_compiled(graph, values)
    tx, tw = t64(values["x"], True), t64(values["w"], True)
    (tdx,) = torch.autograd.grad(torch.tanh(F.conv2d(tx, tw, stride=2, padding=1)).sum(), tx, create_graph=True)
    tpen = (tdx * tdx).sum()
    tpen.backward()
    assert_close(got[0], tpen.detach())
    assert_close(got[1], tw.grad)


def test_symbolic_batch_runs_at_several_sizes(rng):
    x, w = kgen.tensor("x", ("N", 3, 7, 7)), kgen.tensor("w", (4, 3, 3, 3))
    y = ops.max_pool2d(ops.relu(ops.conv2d(x, w, padding=1)), 2)
    dw = kgen.grad(ops.sum(y * y), w)
    graph = kgen.Graph([x, w], [y, dw])
    program = kgen.compile(graph)
    wv = random_array(rng, (4, 3, 3, 3))
    for n in (1, 3):
        xv = random_array(rng, (n, 3, 7, 7))
        kgen.check(graph, {"x": xv, "w": wv}, strict=True)
        got = [o.numpy() for o in program.run({x: program.to_tensor(xv, x), w: program.to_tensor(wv, w)})]
        tx, tw = t64(xv), t64(wv, True)
        ty = F.max_pool2d(F.relu(F.conv2d(tx, tw, padding=1)), 2)
        (ty * ty).sum().backward()
        assert_close(got[0], ty.detach())
        assert_close(got[1], tw.grad)


# --- layouts, bias, float16 ------------------------------------------------------------------
def test_nhwc_equals_nchw_through_transposes(rng):
    x_nhwc, w, b = kgen.tensor("x", (2, 7, 7, 3)), kgen.tensor("w", (4, 3, 3, 3)), kgen.tensor("b", (4,))
    kw = dict(stride=2, padding=1, dilation=1)
    y_nhwc = ops.conv2d(x_nhwc, w, b, layout="NHWC", **kw)
    assert y_nhwc.shape == (2, 4, 4, 4) and y_nhwc.op == "transpose"
    y_nchw = ops.transpose(ops.conv2d(ops.transpose(x_nhwc, (0, 3, 1, 2)), w, b, **kw), (0, 2, 3, 1))
    outs = []
    for y in (y_nhwc, y_nchw):
        loss = ops.sum(ops.relu(y) * y)
        outs.append(kgen.Graph([x_nhwc, w, b], [y] + kgen.grad(loss, [x_nhwc, w, b])))
    values = {"x": random_array(rng, (2, 7, 7, 3)), "w": random_array(rng, (4, 3, 3, 3)), "b": random_array(rng, (4,))}
    results = []
    for graph in outs:
        kgen.check(graph, values, strict=True)
        results.append(run_compiled(graph, values))
    # the transposes are index expressions: no copy kernels, the same kernels either way
    assert len(kgen.compile(outs[0]).kernels) == len(kgen.compile(outs[1]).kernels)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)
    tx, tw, tb = t64(values["x"], True), t64(values["w"], True), t64(values["b"], True)
    ty = F.conv2d(tx.permute(0, 3, 1, 2), tw, tb, **kw).permute(0, 2, 3, 1)
    (F.relu(ty) * ty).sum().backward()
    for got, want in zip(results[0], (ty.detach(), tx.grad, tw.grad, tb.grad)):
        assert_close(got, want)


def test_conv2d_builder_arguments():
    x, w = kgen.tensor("x", (1, 3, 9, 9)), kgen.tensor("w", (4, 3, 3, 3))
    y = ops.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=2)
    assert y.attrs == {"stride": (2, 1), "padding": (1, 0), "dilation": (2, 2), "groups": 1} and y.shape == (1, 4, 4, 5)
    assert ops.conv2d(x, w, padding="same").attrs["padding"] == (1, 1)
    assert ops.conv2d(x, w, padding="same", dilation=2).shape == (1, 4, 9, 9)
    assert ops.conv2d(x, w, padding="valid").shape == (1, 4, 7, 7)
    biased = ops.conv2d(x, w, np.arange(4, dtype=np.float32))
    assert biased.op == "add" and biased.shape == (1, 4, 7, 7)
    assert ops.max_pool2d(x, 3).attrs == {"kernel_size": (3, 3), "stride": (3, 3), "padding": (0, 0)}
    assert ops.avg_pool2d(x, (3, 2), stride=[], padding=(1, 0)).attrs["stride"] == (3, 2)
    assert ops.max_pool2d(ops.cast(x, "int32"), 2).dtype is kgen.float32  # as matmul: ints compute in float32


def test_conv2d_float16(rng):
    graph, out_shape = conv_graph((2, 3, 9, 9), (8, 3, 3, 3), "float16", stride=2, padding=1)
    values = {"x": random_array(rng, (2, 3, 9, 9), "float16"), "w": random_array(rng, (8, 3, 3, 3), "float16"),
              "g": random_array(rng, out_shape, "float16")}
    report = kgen.check(graph, values, strict=True)
    assert all(r.tolerance == 1e-2 for r in report.rows)
    got = run_compiled(graph, values)
    assert all(g.dtype == np.float16 for g in got)
    for g, want, what in zip(got, torch_conv(values["x"], values["w"], values["g"], stride=2, padding=1),
                             ("y", "dx", "dw")):
        assert_close(g, want, rtol=1e-2, what=what)


def test_pool_float16(rng):
    x = kgen.tensor("x", (2, 3, 9, 9), "float16")
    ymax, yavg = ops.max_pool2d(x, 3, 2, 1), ops.avg_pool2d(x, 3, 2, 1)
    graph = kgen.Graph([x], [ymax, yavg] + [kgen.grad(ops.sum(y * y), x) for y in (ymax, yavg)])
    xv = random_array(rng, (2, 3, 9, 9), "float16")
    kgen.check(graph, {"x": xv}, strict=True)
    got = run_compiled(graph, {"x": xv})
    tx = t64(xv)
    np.testing.assert_array_equal(got[0], F.max_pool2d(tx, 3, 2, 1).numpy().astype(np.float16))
    assert_close(got[1], F.avg_pool2d(tx, 3, 2, 1), rtol=1e-2)


# --- errors ----------------------------------------------------------------------------------
def test_shape_and_dtype_errors_name_the_shapes():
    x, w = kgen.tensor("x", (2, 3, 7, 7)), kgen.tensor("w", (4, 2, 3, 3))
    with pytest.raises(kgen.ShapeError, match=r"x \[2,3,7,7\] has 3 channels but w \[4,2,3,3\] expects 2"):
        ops.conv2d(x, w)
    with pytest.raises(kgen.ShapeError, match=r"window 9x9 is larger than the padded input 7x7"):
        ops.conv2d(x, kgen.tensor("k", (4, 3, 5, 5)), dilation=2)
    with pytest.raises(kgen.ShapeError, match=r"4-D"):
        ops.conv2d(kgen.tensor("v", (7, 7)), w)
    with pytest.raises(kgen.ShapeError, match=r"stride must be a pair of ints >= 1, got \(0, 0\)"):
        ops.conv2d(x, kgen.tensor("k", (4, 3, 3, 3)), stride=0)
    with pytest.raises(kgen.ShapeError, match=r"symbolic"):
        ops.conv2d(kgen.tensor("s", ("N", 3, "H", 7)), kgen.tensor("k", (4, 3, 3, 3)))
    with pytest.raises(kgen.ShapeError, match=r"bias must be \[4\]"):
        ops.conv2d(x, kgen.tensor("k", (4, 3, 3, 3)), kgen.tensor("b", (3,)))
    with pytest.raises(kgen.ShapeError, match=r"padding='same' needs stride 1"):
        ops.conv2d(x, kgen.tensor("k", (4, 3, 2, 2)), padding="same", stride=2)
    with pytest.raises(kgen.KgenError, match=r"layout"):
        ops.conv2d(x, w, layout="CHWN")
    with pytest.raises(kgen.DTypeError, match=r"f16\[2,3,7,7\] and f32\[4,3,3,3\]"):
        kgen.Node("conv2d", (ops.cast(x, "float16"), kgen.tensor("k", (4, 3, 3, 3))),
                  {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)})
    with pytest.raises(kgen.ShapeError, match=r"missing attribute 'dilation'"):
        kgen.Node("conv2d", (x, kgen.tensor("k", (4, 3, 3, 3))), {"stride": (1, 1), "padding": (0, 0)})
    with pytest.raises(kgen.ShapeError, match=r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"):
        ops.max_pool2d(x, 3, padding=2)
    with pytest.raises(kgen.ShapeError, match=r"kernel_size must be an int or a pair"):
        ops.avg_pool2d(x, (2, 2, 2))
    with pytest.raises(kgen.ShapeError, match=r"g \[2,4,5,5\] must have spatial size 3x3"):
        ops_conv.conv2d_input_grad(kgen.tensor("g", (2, 4, 5, 5)), kgen.tensor("k", (4, 3, 3, 3)), (5, 5))
    with pytest.raises(kgen.ShapeError, match=r"differ in batch size or channels"):
        ops_conv.max_pool2d_grad(kgen.tensor("g", (2, 4, 3, 3)), x, 2)


# --- ahead-of-time compilation -----------------------------------------------------------------
def _aot_conv(dtype):
    x, w, g = kgen.tensor("x", ("N", 3, 9, 9), dtype), kgen.tensor("w", (8, 3, 3, 3), dtype), \
        kgen.tensor("g", ("N", 8, 5, 5), dtype)
    kw = dict(stride=2, padding=1, dilation=1)
    outs = [ops.conv2d(x, w, **kw), ops_conv.conv2d_input_grad(g, w, (9, 9), **kw),
            ops_conv.conv2d_weight_grad(x, g, (3, 3), **kw), ops.conv2d(x, w, padding=2, dilation=2)]
    return kgen.Graph([x, w, g], outs)


def _aot_pool(dtype):
    x, g, t = kgen.tensor("x", ("N", 3, 9, 9), dtype), kgen.tensor("g", ("N", 3, 5, 5), dtype), \
        kgen.tensor("t", ("N", 3, 9, 9), dtype)
    kw = dict(kernel_size=3, stride=2, padding=1)
    outs = [ops.max_pool2d(x, **kw), ops.avg_pool2d(x, **kw), ops_conv.max_pool2d_grad(g, x, **kw),
            ops_conv.avg_pool2d_grad(g, (9, 9), **kw), ops_conv.max_pool2d_gather(t, x, **kw)]
    return kgen.Graph([x, g, t], outs)


@pytest.mark.parametrize("build", [_aot_conv, _aot_pool], ids=["conv", "pool"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_conv_and_pool_kernel_compiles_for_sm80_and_sm90(build, dtype):
    program = kgen.compile(build(dtype))
    templates = {k.name.split("_", 1)[1] for k in flatten(program.kernels)}
    assert templates == {n.op for n in program.graph.outputs}  # one kernel per op, nothing else
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"))
    expected = [(k.name, t) for k in program.kernels for t in ("sm_80", "sm_90")]
    assert [(b.kernel, b.target) for b in binaries] == expected
    for b in binaries:
        assert re.search(rf"^\.target\s+{b.target}", b.ptx, re.M)  # sm_90 compiles as sm_90a
        assert re.search(rf"\.entry\s+{b.kernel}\b", b.ptx)
        assert b.cubin[:4] == b"\x7fELF"
        if "conv" in b.kernel:  # float32 takes exact products; halves go to tensor cores
            assert ("mma" in b.ptx) == (dtype == "float16"), b.kernel


# --- the MNIST CNN -------------------------------------------------------------------------------
CNN_PARAMETERS = {"w1": (32, 1, 3, 3), "b1": (32,), "w2": (64, 32, 3, 3), "b2": (64,), "w3": (10, 1600), "b3": (10,)}


def test_mnist_cnn_forward_and_backward_match_torch(rng):
    """Conv2d(1,32,3)+relu, MaxPool2d(2), Conv2d(32,64,3)+relu, MaxPool2d(2), flatten, linear
    to 10, cross-entropy: the loss and every weight gradient, at batch 2."""
    x, y = kgen.tensor("x", ("N", 1, 28, 28)), kgen.tensor("y", ("N",), "int64")
    p = {k: kgen.tensor(k, s) for k, s in CNN_PARAMETERS.items()}
    h = ops.max_pool2d(ops.relu(ops.conv2d(x, p["w1"], p["b1"])), 2)
    h = ops.max_pool2d(ops.relu(ops.conv2d(h, p["w2"], p["b2"])), 2)
    loss = ops.cross_entropy(ops.flatten(h) @ ops.transpose(p["w3"]) + p["b3"], y)
    graph = kgen.Graph([x, y] + list(p.values()), [loss] + kgen.grad(loss, list(p.values())))
    values = {"x": rng.random((2, 1, 28, 28)).astype(np.float32), "y": rng.integers(0, 10, 2)}
    for k, s in CNN_PARAMETERS.items():
        values[k] = (rng.uniform(-1, 1, s) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 10)).astype(np.float32)
    kgen.check(graph, values, strict=True)
    got = run_compiled(graph, values)

    t = {k: t64(values[k], True) for k in CNN_PARAMETERS}
    th = F.max_pool2d(F.relu(F.conv2d(t64(values["x"]), t["w1"], t["b1"])), 2)
    th = F.max_pool2d(F.relu(F.conv2d(th, t["w2"], t["b2"])), 2)
    tloss = F.cross_entropy(th.flatten(1) @ t["w3"].T + t["b3"], torch.from_numpy(values["y"]))
    tloss.backward()
    assert_close(got[0], tloss.detach(), rtol=1e-5, what="loss")
    for name, g in zip(CNN_PARAMETERS, got[1:]):
        assert_close(g, t[name].grad, what=f"d loss / d {name}")
