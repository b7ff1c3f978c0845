"""torch's pooling options (the pool entries of kgen/ir/ops_conv.py, kgen/kernels/pool.py):
dilation, ceil_mode and return_indices for max pooling, ceil_mode, count_include_pad and
divisor_override for average pooling; the 1-D, adaptive and unbatched pools kgen.ops builds
from the 2-D ones; kgen.nn's pooling layers.

- the float64 references against torch: values, indices and gradients;
- VJPs by central finite differences and against torch.autograd, the gradient ops' too;
- the float32 kernels (Triton's interpreter) against the reference (kgen.check, strict) and
  torch, windows hanging over the edge, odd sizes, -inf and NaN windows;
- torch's defaults build the nodes they always did; bad options are ShapeErrors;
- the new template variants compiled ahead of time for sm_80 and sm_90;
- a training step of the layers under kgen.check.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops
from kgen.ir import ops_conv
from kgen.kernels import aot
from kgen.kernels.combo import flatten
from conftest import random_array, run_compiled
from test_conv_pool import assert_close, finite_difference_check, t64

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # masked-off lanes under the interpreter

MAX_CASES = [
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ((1, 2, 9, 8), dict(kernel_size=(2, 3), stride=2, padding=(1, 0), dilation=(3, 1))),
    ((2, 2, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),  # the last window hangs over, no padding
    ((1, 3, 6, 7), dict(kernel_size=3, stride=(3, 2), dilation=(1, 2), ceil_mode=True)),
    ((1, 2, 2, 3), dict(kernel_size=3, stride=2, ceil_mode=True)),  # one window, larger than the input
    ((1, 1, 8, 5), dict(kernel_size=2, stride=1, padding=1, dilation=3, ceil_mode=True)),
]
AVG_CASES = [
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((2, 2, 5, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    ((1, 3, 6, 7), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, ceil_mode=True, count_include_pad=False)),
    ((1, 2, 7, 5), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ((1, 2, 7, 5), dict(kernel_size=3, stride=2, padding=1, divisor_override=4)),
    ((1, 2, 7, 5), dict(kernel_size=(2, 3), stride=2, padding=(1, 1), ceil_mode=True, divisor_override=5)),
]


def max_graph(shape, **kw):
    """Graph (x, g) -> max_pool2d(x), its indices and its gradient for the output gradient g."""
    x = kgen.tensor("x", shape)
    y, index = ops.max_pool2d(x, return_indices=True, **kw)
    g = kgen.tensor("g", y.shape)
    return kgen.Graph([x, g], [y, index, kgen.grad(y, x, seed=g)]), tuple(int(d) for d in y.shape)


def avg_graph(shape, **kw):
    x = kgen.tensor("x", shape)
    y = ops.avg_pool2d(x, **kw)
    g = kgen.tensor("g", y.shape)
    return kgen.Graph([x, g], [y, kgen.grad(y, x, seed=g)]), tuple(int(d) for d in y.shape)


def torch_max(xv, gv, **kw):
    x = t64(xv, True)
    y, index = F.max_pool2d(x, return_indices=True, **kw)
    (y * t64(gv)).sum().backward()
    return y.detach(), index, x.grad


def torch_avg(xv, gv, **kw):
    x = t64(xv, True)
    y = F.avg_pool2d(x, **kw)
    (y * t64(gv)).sum().backward()
    return y.detach(), x.grad


# --- references against torch -------------------------------------------------------------------
@pytest.mark.parametrize("shape, kw", MAX_CASES, ids=str)
def test_max_pool2d_reference_matches_torch(shape, kw, rng):
    graph, out = max_graph(shape, **kw)
    xv, gv = random_array(rng, shape), random_array(rng, out)
    y, index, dx = kgen.reference.run(graph, {"x": xv, "g": gv})
    ty, tindex, tdx = torch_max(xv, gv, **kw)
    assert_close(y, ty, rtol=0, what="y")
    assert index.dtype == np.int64
    np.testing.assert_array_equal(index, tindex.numpy())
    assert_close(dx, tdx, rtol=1e-12, what="dx")


@pytest.mark.parametrize("shape, kw", AVG_CASES, ids=str)
def test_avg_pool2d_reference_matches_torch(shape, kw, rng):
    graph, out = avg_graph(shape, **kw)
    xv, gv = random_array(rng, shape), random_array(rng, out)
    for got, want, what in zip(kgen.reference.run(graph, {"x": xv, "g": gv}), torch_avg(xv, gv, **kw), ("y", "dx")):
        assert_close(got, want, rtol=1e-12, what=what)


def test_ceil_mode_drops_a_window_starting_past_the_input_and_its_padding():
    x = kgen.tensor("x", (1, 1, 5, 5))
    # (5 + 2 - 2) / 2 rounds up to 3, plus 1: the fourth window would start at 6 - 1 = 5, past the input
    assert ops.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert ops.avg_pool2d(x, 2, 2, 0, ceil_mode=True).shape == (1, 1, 3, 3)
    assert ops.avg_pool2d(x, 2, 2, 0).shape == (1, 1, 2, 2)
    for size in range(1, 12):
        for k, s, p, d in ((2, 2, 1, 1), (3, 2, 1, 2), (3, 3, 0, 1), (2, 3, 1, 3)):
            try:
                want = F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, d, ceil_mode=True).shape[2]
            except RuntimeError:  # torch's output is too small
                continue
            assert ops_conv.pool_out_size(size, k, s, p, d, ceil_mode=True) == want, (size, k, s, p, d)


# --- VJPs -----------------------------------------------------------------------------------------
VJP_MAX = [dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
           dict(kernel_size=2, stride=2, ceil_mode=True)]
VJP_AVG = [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
           dict(kernel_size=(2, 3), stride=2, padding=1, ceil_mode=True, divisor_override=5)]


@pytest.mark.parametrize("kw", VJP_MAX, ids=str)
def test_max_pool_vjps(kw, rng):
    x = {"x": random_array(rng, (1, 2, 6, 7))}
    finite_difference_check(lambda x: ops.max_pool2d(x, **kw), x, ("x",), rng, lambda x: F.max_pool2d(x, **kw))
    pooled = tuple(int(d) for d in ops.max_pool2d(kgen.tensor("x", (1, 2, 6, 7)), **kw).shape)
    g, t = random_array(rng, pooled), random_array(rng, (1, 2, 6, 7))
    finite_difference_check(lambda g, x: ops_conv.max_pool2d_grad(g, x, **kw), {"g": g, **x}, ("g", "x"), rng)
    finite_difference_check(lambda t, x: ops_conv.max_pool2d_gather(t, x, **kw), {"t": t, **x}, ("t", "x"), rng)


@pytest.mark.parametrize("kw", VJP_AVG, ids=str)
def test_avg_pool_vjps(kw, rng):
    x = {"x": random_array(rng, (1, 2, 6, 7))}
    finite_difference_check(lambda x: ops.avg_pool2d(x, **kw), x, ("x",), rng, lambda x: F.avg_pool2d(x, **kw))
    pooled = tuple(int(d) for d in ops.avg_pool2d(kgen.tensor("x", (1, 2, 6, 7)), **kw).shape)
    finite_difference_check(lambda g: ops_conv.avg_pool2d_grad(g, (6, 7), **kw), {"g": random_array(rng, pooled)},
                            ("g",), rng)


def test_composed_pool_vjps(rng):
    x3, x4 = {"x": random_array(rng, (2, 3, 7))}, {"x": random_array(rng, (1, 2, 7, 5))}
    finite_difference_check(lambda x: ops.max_pool1d(x, 3, 2, 1, 2, True), x3, ("x",), rng,
                            lambda x: F.max_pool1d(x, 3, 2, 1, 2, True))
    finite_difference_check(lambda x: ops.avg_pool1d(x, 2, 2, 1, True, False), x3, ("x",), rng,
                            lambda x: F.avg_pool1d(x, 2, 2, 1, True, False))
    for size in ((3, 2), 1, (None, 3)):
        finite_difference_check(lambda x: ops.adaptive_avg_pool2d(x, size), x4, ("x",), rng,
                                lambda x: F.adaptive_avg_pool2d(x, size))
    finite_difference_check(lambda x: ops.adaptive_avg_pool1d(x, 3), x3, ("x",), rng,
                            lambda x: F.adaptive_avg_pool1d(x, 3))


# --- kernels against the reference and torch -----------------------------------------------------
@pytest.mark.parametrize("shape, kw", MAX_CASES, ids=str)
def test_max_pool2d_kernels(shape, kw, rng):
    graph, out = max_graph(shape, **kw)
    values = {"x": random_array(rng, shape), "g": random_array(rng, out)}
    kgen.check(graph, values, strict=True)
    y, index, dx = run_compiled(graph, values)
    ty, tindex, tdx = torch_max(values["x"], values["g"], **kw)
    assert_close(y, ty, rtol=0, what="y")
    np.testing.assert_array_equal(index, tindex.numpy())
    assert_close(dx, tdx, rtol=1e-6, what="dx")


@pytest.mark.parametrize("shape, kw", AVG_CASES, ids=str)
def test_avg_pool2d_kernels(shape, kw, rng):
    graph, out = avg_graph(shape, **kw)
    values = {"x": random_array(rng, shape), "g": random_array(rng, out)}
    kgen.check(graph, values, strict=True)
    for got, want, what in zip(run_compiled(graph, values), torch_avg(values["x"], values["g"], **kw), ("y", "dx")):
        assert_close(got, want, what=what)


def test_max_pool2d_kernels_on_inf_and_nan_windows(rng):
    """Windows of -inf only (the index is their first element inside the image), a NaN in a
    window (the maximum, and its index), ties; dilated windows hanging over the edge."""
    xv = rng.integers(-2, 3, size=(2, 2, 9, 8)).astype(np.float32)
    xv[0, 1, :5, :5] = -np.inf
    xv[1, 0, 2, 3] = xv[1, 1, 7, 7] = np.nan
    kw = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)
    graph, out = max_graph(xv.shape, **kw)
    gv = random_array(rng, out)
    kgen.check(graph, {"x": xv, "g": gv}, strict=True)
    got, want = run_compiled(graph, {"x": xv, "g": gv}), kgen.reference.run(graph, {"x": xv, "g": gv})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # NaN where NaN
    ty, tindex, tdx = torch_max(xv, gv, **kw)  # one NaN per window: torch's choice is kgen's
    np.testing.assert_array_equal(got[0], ty.numpy().astype(np.float32))
    np.testing.assert_array_equal(got[1], tindex.numpy())
    assert_close(got[2], tdx, rtol=1e-6)
    assert np.isneginf(got[0][0, 1, 0, 0]) and got[1][0, 1, 0, 0] == 1 * 8 + 1  # rows and columns -1, 1, 3


def test_composed_and_unbatched_pools_match_torch(rng):
    """The 1-D pools, the adaptive ones and unbatched inputs, reference and kernels."""
    x3v, x4v, c3v = random_array(rng, (2, 3, 11)), random_array(rng, (2, 3, 7, 6)), random_array(rng, (3, 7, 6))
    x3, x4, c3, c2 = (kgen.tensor(n, v.shape) for n, v in (("x3", x3v), ("x4", x4v), ("c3", c3v), ("c2", x3v[0])))
    cases = [  # (kgen node, torch value)
        (ops.max_pool1d(x3, 3, 2, 1, 2, True, True)[0], lambda t: F.max_pool1d(t["x3"], 3, 2, 1, 2, True)),
        (ops.max_pool1d(x3, 3, 2, 1, 2, True, True)[1],
         lambda t: F.max_pool1d(t["x3"], 3, 2, 1, 2, True, return_indices=True)[1]),
        (ops.avg_pool1d(x3, 4, 3, 2, True, False), lambda t: F.avg_pool1d(t["x3"], 4, 3, 2, True, False)),
        (ops.adaptive_avg_pool1d(x3, 4), lambda t: F.adaptive_avg_pool1d(t["x3"], 4)),
        (ops.adaptive_avg_pool2d(x4, (3, 4)), lambda t: F.adaptive_avg_pool2d(t["x4"], (3, 4))),
        (ops.adaptive_avg_pool2d(x4, (None, 4)), lambda t: F.adaptive_avg_pool2d(t["x4"], (None, 4))),
        (ops.adaptive_avg_pool2d(x4, 1), lambda t: F.adaptive_avg_pool2d(t["x4"], 1)),
        (ops.max_pool2d(c3, 2, ceil_mode=True), lambda t: F.max_pool2d(t["c3"], 2, ceil_mode=True)),
        (ops.avg_pool2d(c3, 3, 2, 1), lambda t: F.avg_pool2d(t["c3"], 3, 2, 1)),
        (ops.adaptive_avg_pool2d(c3, (2, 5)), lambda t: F.adaptive_avg_pool2d(t["c3"], (2, 5))),
        (ops.max_pool1d(c2, 2), lambda t: F.max_pool1d(t["c2"], 2)),
        (ops.adaptive_avg_pool1d(c2, 3), lambda t: F.adaptive_avg_pool1d(t["c2"], 3)),
    ]
    values = {"x3": x3v, "x4": x4v, "c3": c3v, "c2": x3v[0]}
    graph = kgen.Graph([x3, x4, c3, c2], [node for node, _ in cases])
    torch_values = {k: t64(v) for k, v in values.items()}
    wants = [fn(torch_values) for _, fn in cases]
    kgen.check(graph, values, strict=True)
    for got64, got32, want, (node, _) in zip(kgen.reference.run(graph, values), run_compiled(graph, values), wants,
                                             cases):
        assert got64.shape == got32.shape == tuple(want.shape) == tuple(node.shape)
        assert_close(got64, want, rtol=1e-12, what=str(node))
        assert_close(got32, want, rtol=1e-5, what=str(node))


def test_adaptive_average_pool_builds_a_mean_a_pool_or_matmuls():
    x = kgen.tensor("x", ("N", 3, 8, 6))

    def built(y):
        return sorted({n.op for n in kgen.Graph([x], [y]).nodes} - {"input", "reshape"})
    assert built(ops.adaptive_avg_pool2d(x, 1)) == ["mean"]  # global average pooling: a reduction that fuses
    pooled = ops.adaptive_avg_pool2d(x, (4, 3))
    assert built(pooled) == ["avg_pool2d"] and pooled.attrs == {"kernel_size": (2, 2), "stride": (2, 2),
                                                                "padding": (0, 0)}
    assert built(ops.adaptive_avg_pool2d(x, (8, 6))) == []
    assert built(ops.adaptive_avg_pool2d(x, (3, 6))) == built(ops.adaptive_avg_pool2d(x, (5, 4))) == \
        ["constant", "div", "matmul"]
    assert ops.adaptive_avg_pool1d(kgen.tensor("v", (2, 9)), 1).shape == (2, 1)


# --- the defaults, and bad options ----------------------------------------------------------------
def test_the_defaults_build_the_nodes_they_always_did():
    x = kgen.tensor("x", (2, 3, 9, 9))
    old = {"kernel_size": (3, 3), "stride": (3, 3), "padding": (0, 0)}
    assert ops.max_pool2d(x, 3, dilation=1, ceil_mode=False).attrs == old
    assert ops.avg_pool2d(x, 3, None, 0, False, True, None).attrs == old
    assert ops.max_pool2d(x, 3, dilation=(1, 2), ceil_mode=True).attrs == {**old, "dilation": (1, 2), "ceil_mode": True}
    y = ops.avg_pool2d(x, 3, count_include_pad=False, divisor_override=2)
    assert y.attrs == {**old, "count_include_pad": False, "divisor_override": 2}
    dx = kgen.grad(ops.sum(y), x)
    assert dx.op == "avg_pool2d_grad" and dx.attrs == {**y.attrs, "input_size": (9, 9)}


def test_bad_pool_options_are_shape_errors():
    x = kgen.tensor("x", (2, 3, 9, 9))
    with pytest.raises(kgen.ShapeError, match="dilation must be an int or a pair"):
        ops.max_pool2d(x, 3, dilation=(1, 2, 3))
    with pytest.raises(kgen.ShapeError, match=r"dilation must be a pair of ints >= 1"):
        ops.max_pool2d(x, 3, dilation=0)
    with pytest.raises(kgen.ShapeError, match="ceil_mode must be True or False, got 1"):
        ops.max_pool2d(x, 3, ceil_mode=1)
    with pytest.raises(kgen.ShapeError, match="divisor_override must be None or an int >= 1, got 0"):
        ops.avg_pool2d(x, 3, divisor_override=0)
    with pytest.raises(kgen.ShapeError, match="holds no element of the input"):
        ops.max_pool2d(kgen.tensor("x", (1, 1, 2, 2)), 2, 1, 1, dilation=3)  # torch: -inf at index 6 of 4
    with pytest.raises(kgen.ShapeError, match="unknown attribute 'dilation'"):
        kgen.ir.Node("avg_pool2d", (x,), {**ops.avg_pool2d(x, 3).attrs, "dilation": (2, 2)})
    with pytest.raises(kgen.ShapeError, match=r"takes x \[N, C, L\] or \[C, L\], got f32\[9\]"):
        ops.max_pool1d(kgen.tensor("v", (9,)), 2)
    with pytest.raises(kgen.ShapeError, match="output_size must be >= 1"):
        ops.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(kgen.ShapeError, match="H and W must be ints"):
        ops.adaptive_avg_pool2d(kgen.tensor("x", (2, 3, "H", 4)), 2)
    with pytest.raises(kgen.ArgumentError):
        ops.avg_pool1d(kgen.tensor("v", (2, 9)), 2, divisor_override=2)  # torch's avg_pool1d has none


# --- ahead-of-time compilation of the new variants -------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pool_option_kernels_compile_for_sm80_and_sm90(dtype):
    x, t = kgen.tensor("x", ("N", 3, 9, 8), dtype), kgen.tensor("t", ("N", 3, 9, 8), dtype)
    mkw = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)
    akw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    y, index = ops.max_pool2d(x, return_indices=True, **mkw)
    a = ops.avg_pool2d(x, **akw)
    g, ga = kgen.tensor("g", y.shape, dtype), kgen.tensor("ga", a.shape, dtype)
    outs = [y, index, ops_conv.max_pool2d_grad(g, x, **mkw), ops_conv.max_pool2d_gather(t, x, **mkw), a,
            ops_conv.avg_pool2d_grad(ga, (9, 8), **akw), ops.avg_pool2d(x, 2, ceil_mode=True, divisor_override=3)]
    program = kgen.compile(kgen.Graph([x, t, g, ga], outs))
    templates = sorted(k.name.split("_", 1)[1] for k in flatten(program.kernels))
    assert templates == sorted(n.op for n in program.graph.outputs)  # one kernel per op
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"))
    targets = ("sm_80", "sm_90")
    assert [(b.kernel, b.target) for b in binaries] == [(k.name, t) for k in program.kernels for t in targets]
    for b in binaries:
        assert re.search(rf"^\.target\s+{b.target}", b.ptx, re.M) and b.cubin[:4] == b"\x7fELF"


# --- kgen.nn's layers -------------------------------------------------------------------------------
def test_pool_layers_take_torchs_arguments():
    x = kgen.tensor("x", (2, 3, 9, 9))
    y, index = nn.MaxPool2d(3, 2, 1, 2, True, True)(x)
    assert (y.attrs, index.op) == (ops.max_pool2d(x, 3, 2, 1, 2, True).attrs, "max_pool2d_indices")
    assert nn.AvgPool2d(3, 2, 1, True, False, 4)(x).attrs == ops.avg_pool2d(x, 3, 2, 1, True, False, 4).attrs
    assert nn.AdaptiveAvgPool2d((None, 3))(x).shape == (2, 3, 9, 3)
    v = kgen.tensor("v", (2, 3, 9))
    assert nn.MaxPool1d(2, ceil_mode=True)(v).shape == (2, 3, 5)
    assert nn.AvgPool1d(3, 1, 1, count_include_pad=False)(v).shape == (2, 3, 9)
    assert nn.AdaptiveAvgPool1d(4)(v).shape == (2, 3, 4)
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2)"  # as before
    assert repr(nn.MaxPool2d(3, 2, dilation=2, ceil_mode=True)) == \
        "MaxPool2d(kernel_size=3, stride=2, dilation=2, ceil_mode=True)"


def test_training_step_through_the_pool_layers_checks(rng):
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                          nn.AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False),
                          nn.AdaptiveAvgPool2d((3, 2)), nn.Flatten(), nn.Linear(24, 5))
    xv = random_array(rng, (4, 1, 9, 9))
    yv = rng.integers(0, 5, size=(4,)).astype(np.int64)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), lr=0.1), xv, yv)
    kgen.check(step, (xv, yv), strict=True)
