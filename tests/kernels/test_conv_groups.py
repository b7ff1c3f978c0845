"""Convolution as torch models use it: `groups` (grouped and depthwise conv2d), padding
"same" and "valid", conv1d, unbatched inputs, and kgen.nn's Conv2d / Conv1d
(kgen/ir/ops_conv.py, kgen/kernels/conv.py, kgen/kernels/depthwise.py, kgen/ops.py):

- the op table's references (float64) against torch, values and the gradients of x, w, bias;
- the VJPs of the new attrs by finite differences and against torch.autograd;
- the generated kernels (float32, Triton's interpreter) against the reference (kgen.check,
  strict) and torch, and which lowering each case takes;
- a depthwise-separable training step through kgen.check; AOT compiles for sm_80 / sm_90;
- the layers' parameters, initialisation and outputs against torch.nn, and bad arguments.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops
from kgen.ir import ops_conv
from kgen.kernels import aot
from kgen.kernels.combo import flatten
from conftest import random_array, run_compiled
from test_conv_pool import assert_close, finite_difference_check, t64

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

# (N, C, H, W, F, KH, KW, groups, stride, padding, dilation)
GROUP_CASES = [
    (2, 4, 7, 7, 6, 3, 3, 2, 1, 1, 1),  # two groups of two channels, three filters each
    (2, 6, 7, 6, 9, 2, 3, 3, 1, "same", 1),  # "same" with an even kernel: one more row after the image
    (1, 4, 9, 8, 4, 3, 3, 2, (2, 1), (1, 0), (1, 2)),
    (2, 4, 7, 7, 4, 3, 3, 4, 1, 1, 1),  # depthwise
    (2, 4, 7, 7, 8, 3, 3, 4, 2, 1, 1),  # depthwise, channel multiplier 2, stride 2
    (1, 3, 9, 8, 6, 3, 3, 3, (2, 1), (1, 0), (1, 2)),  # depthwise x2, uneven stride, dilation
    (1, 4, 6, 6, 8, 2, 2, 4, 1, "same", 2),  # depthwise, "same" and dilation 2
    (2, 4, 5, 5, 4, 1, 1, 4, 2, 0, 1),  # depthwise 1x1, stride 2: pixels never read
    (1, 2, 8, 5, 2, 5, 5, 2, 1, 2, 1),  # depthwise 5x5
    (1, 2, 7, 7, 6, 3, 3, 2, 2, "valid", 1),  # depthwise x3, "valid"
    (1, 2, 1, 1, 2, 3, 3, 2, 2, 1, 1),  # sizes of 1
    (2, 3, 6, 6, 3, 3, 3, 1, 1, "same", 1),  # one group: the implicit GEMM as before
    (1, 4, 2, 4, 2, 1, 1, 2, (2, 1), 0, 1),  # one filter per group: its bias is one element per program
    (2, 6, 5, 5, 3, 3, 3, 3, 1, 1, 1),  # the same with 3x3 windows (found by kgen.fuzz --through torch)
]


def _kw(case):
    return dict(groups=case[7], stride=case[8], padding=case[9], dilation=case[10])


def group_graph(case, bias=True):
    """Graph (x, w, b, g) -> conv2d(x, w, b) and its gradients for the output gradient g."""
    n, c, h, w, f, kh, kw, groups = case[:8]
    x, wt, b = kgen.tensor("x", (n, c, h, w)), kgen.tensor("w", (f, c // groups, kh, kw)), kgen.tensor("b", (f,))
    y = ops.conv2d(x, wt, b if bias else None, **{k: v for k, v in _kw(case).items() if k != "groups"},
                   groups=groups)
    g = kgen.tensor("g", y.shape)
    return kgen.Graph([x, wt, b, g], [y] + kgen.grad(y, [x, wt, b], seed=g)), tuple(int(d) for d in y.shape)


def group_values(case, out_shape, rng):
    n, c, h, w, f, kh, kw, groups = case[:8]
    return {"x": random_array(rng, (n, c, h, w)), "w": random_array(rng, (f, c // groups, kh, kw)),
            "b": random_array(rng, (f,)), "g": random_array(rng, out_shape)}


def torch_outputs(fn, values, names, g):
    """fn(*tensors) in float64 and the gradients of sum(fn(...) * g) for each of `names`."""
    tensors = [t64(values[k], True) for k in names]
    y = fn(*tensors)
    (y * t64(g)).sum().backward()
    return [y.detach()] + [t.grad for t in tensors]


@pytest.mark.parametrize("case", GROUP_CASES, ids=str)
def test_grouped_reference_matches_torch(case, rng):
    graph, out_shape = group_graph(case)
    values = group_values(case, out_shape, rng)
    got = kgen.reference.run(graph, {k: v.astype(np.float64) for k, v in values.items()})
    want = torch_outputs(lambda x, w, b: F.conv2d(x, w, b, **_kw(case)), values, "xwb", values["g"])
    for a, b, what in zip(got, want, ("y", "dx", "dw", "db")):
        assert_close(a, b, rtol=1e-12, what=what)


@pytest.mark.parametrize("case", GROUP_CASES, ids=str)
def test_grouped_kernels(case, rng):
    graph, out_shape = group_graph(case)
    values = group_values(case, out_shape, rng)
    kgen.check(graph, values, strict=True)
    families = {k.name.split("_", 1)[1]: k.config_rule for k in flatten(kgen.compile(graph).kernels)
                if "conv" in k.name}
    depthwise = case[7] > 1 and case[1] == case[7]
    assert families == ({"conv2d": "depthwise", "conv2d_input_grad": "depthwise", "conv2d_weight_grad": "reduction"}
                        if depthwise else dict.fromkeys(("conv2d", "conv2d_input_grad", "conv2d_weight_grad"), "conv"))
    got = run_compiled(graph, values)
    want = torch_outputs(lambda x, w, b: F.conv2d(x, w, b, **_kw(case)), values, "xwb", values["g"])
    for a, b, what in zip(got, want, ("y", "dx", "dw", "db")):
        assert_close(a, b, what=what)


def test_depthwise_epilogue_and_half_precision(rng):
    """A depthwise conv's bias and relu run in its kernel (fusion rule E1), and float16
    operands accumulate in float32 as the GEMM templates do."""
    x, w, b = kgen.tensor("x", ("N", 4, 6, 6), "float16"), kgen.tensor("w", (8, 1, 3, 3), "float16"), \
        kgen.tensor("b", (8,), "float16")
    graph = kgen.Graph([x, w, b], [ops.relu(ops.conv2d(x, w, b, padding=1, groups=4))])
    program = kgen.compile(graph)
    assert [k.config_rule for k in program.kernels] == ["depthwise"]
    values = {"x": random_array(rng, (3, 4, 6, 6), "float16"), "w": random_array(rng, (8, 1, 3, 3), "float16"),
              "b": random_array(rng, (8,), "float16")}
    kgen.check(graph, values, strict=True)
    want = F.relu(F.conv2d(*(t64(values[k]) for k in "xwb"), padding=1, groups=4))
    assert_close(run_compiled(graph, values)[0], want, rtol=2e-3)


def test_groups_with_no_filters(rng):
    """G groups of no filters: an empty output and a zero input gradient (the GEMM
    templates, whose K is then empty, compute it; the depthwise ones would read no weight)."""
    graph, out_shape = group_graph((2, 4, 5, 5, 0, 3, 3, 4, 1, 1, 1), bias=False)
    values = group_values((2, 4, 5, 5, 0, 3, 3, 4), out_shape, rng)
    kgen.check(graph, values, strict=True)
    y, dx, dw, db = run_compiled(graph, values)
    assert y.shape == (2, 0, 5, 5) and dw.shape == (0, 1, 3, 3) and not dx.any()


# --- VJPs of the new attrs: finite differences and torch.autograd ----------------------------------
VJP_GROUPS = [dict(groups=2, stride=1, padding=1, dilation=1), dict(groups=4, stride=2, padding=1, dilation=1),
              dict(groups=4, stride=(2, 1), padding=(0, 2), dilation=(1, 2))]


@pytest.mark.parametrize("kw", VJP_GROUPS, ids=str)
def test_grouped_conv2d_vjps(kw, rng):
    f = 8 if kw["groups"] == 4 else 4  # depthwise with multiplier 2, or two groups of two
    shape_x, shape_w = (1, 4, 5, 6), (f, 4 // kw["groups"], 2, 3)
    arrays = {"x": random_array(rng, shape_x), "w": random_array(rng, shape_w)}
    finite_difference_check(lambda x, w: ops.conv2d(x, w, **kw), arrays, ("x", "w"), rng,
                            lambda x, w: F.conv2d(x, w, **kw))
    attrs = {k: v for k, v in kw.items()}
    gshape = tuple(int(d) for d in ops.conv2d(kgen.tensor("x", shape_x), kgen.tensor("w", shape_w), **kw).shape)
    arrays = {"g": random_array(rng, gshape), "w": random_array(rng, shape_w)}
    finite_difference_check(lambda g, w: ops_conv.conv2d_input_grad(g, w, (5, 6), **attrs), arrays, ("g", "w"), rng,
                            lambda g, w: torch.nn.grad.conv2d_input(shape_x, w, g, **attrs))
    arrays = {"x": random_array(rng, shape_x), "g": random_array(rng, gshape)}
    finite_difference_check(lambda x, g: ops_conv.conv2d_weight_grad(x, g, (2, 3), **attrs), arrays, ("x", "g"),
                            rng, lambda x, g: torch.nn.grad.conv2d_weight(x, shape_w, g, **attrs))


def test_conv1d_and_unbatched_vjps(rng):
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    arrays = {"x": random_array(rng, (2, 4, 7)), "w": random_array(rng, (4, 2, 3)), "b": random_array(rng, (4,))}
    finite_difference_check(lambda x, w, b: ops.conv1d(x, w, b, **kw), arrays, ("x", "w", "b"), rng,
                            lambda x, w, b: F.conv1d(x, w, b, **kw))
    arrays = {"x": random_array(rng, (4, 5, 6)), "w": random_array(rng, (4, 1, 3, 3))}
    finite_difference_check(lambda x, w: ops.conv2d(x, w, padding="same", groups=4), arrays, ("x", "w"), rng,
                            lambda x, w: F.conv2d(x, w, padding="same", groups=4))


# --- conv1d and unbatched inputs ---------------------------------------------------------------------
CONV1D_CASES = [  # (x shape, w shape, kwargs)
    ((2, 3, 11), (4, 3, 3), dict(stride=1, padding=1, dilation=1, groups=1)),
    ((2, 4, 11), (6, 2, 3), dict(stride=2, padding=2, dilation=2, groups=2)),
    ((2, 4, 10), (8, 1, 4), dict(stride=1, padding="same", dilation=1, groups=4)),  # depthwise, uneven "same"
    ((3, 9), (6, 3, 2), dict(stride=(1,), padding=(0,), dilation=(2,), groups=1)),  # unbatched, 1-tuples
    ((3, 9), (3, 1, 3), dict(stride=1, padding="valid", dilation=1, groups=3)),  # unbatched depthwise
]


@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
def test_conv1d_matches_torch(case, rng):
    shape_x, shape_w, kw = case
    x, w, b = kgen.tensor("x", shape_x), kgen.tensor("w", shape_w), kgen.tensor("b", (shape_w[0],))
    y = ops.conv1d(x, w, b, **kw)
    g = kgen.tensor("g", y.shape)
    graph = kgen.Graph([x, w, b, g], [y] + kgen.grad(y, [x, w, b], seed=g))
    values = {"x": random_array(rng, shape_x), "w": random_array(rng, shape_w), "b": random_array(rng, (shape_w[0],)),
              "g": random_array(rng, tuple(int(d) for d in y.shape))}
    want = torch_outputs(lambda x, w, b: F.conv1d(x, w, b, **kw), values, "xwb", values["g"])
    assert y.shape == tuple(want[0].shape)
    for a, b_, what in zip(kgen.reference.run(graph, {k: v.astype(np.float64) for k, v in values.items()}), want,
                           ("y", "dx", "dw", "db")):
        assert_close(a, b_, rtol=1e-12, what=what)
    kgen.check(graph, values, strict=True)
    for a, b_, what in zip(run_compiled(graph, values), want, ("y", "dx", "dw", "db")):
        assert_close(a, b_, what=what)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_unbatched_conv2d_matches_torch(layout, rng):
    shape_x = (4, 6, 7) if layout == "NCHW" else (6, 7, 4)
    x, w, b = kgen.tensor("x", shape_x), kgen.tensor("w", (6, 2, 3, 3)), kgen.tensor("b", (6,))
    y = ops.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2, layout=layout)
    g = kgen.tensor("g", y.shape)
    graph = kgen.Graph([x, w, b, g], [y] + kgen.grad(y, [x, w, b], seed=g))
    values = {"x": random_array(rng, shape_x), "w": random_array(rng, (6, 2, 3, 3)), "b": random_array(rng, (6,)),
              "g": random_array(rng, tuple(int(d) for d in y.shape))}

    def torch_fn(x, w, b):
        out = F.conv2d(x if layout == "NCHW" else x.permute(2, 0, 1), w, b, stride=(1, 2), padding=1, groups=2)
        return out if layout == "NCHW" else out.permute(1, 2, 0)
    want = torch_outputs(torch_fn, values, "xwb", values["g"])
    kgen.check(graph, values, strict=True)
    for a, b_, what in zip(run_compiled(graph, values), want, ("y", "dx", "dw", "db")):
        assert_close(a, b_, what=what)


# --- op facts ------------------------------------------------------------------------------------------
def test_grouped_facts():
    """One group is one GEMM (the `gemm` fact, which fusion rule E4 reads); G groups are G
    GEMMs or none, so the fact is None and the template reads each group's extents; flops
    count each filter's own channels."""
    x, w = kgen.tensor("x", ("N", 8, 6, 6)), kgen.tensor("w", (12, 2, 3, 3))
    y = ops.conv2d(x, w, groups=4)
    assert y.opdef.gemm(y) is None
    m, n, k, a, b = ops_conv.group_gemm(y)
    assert (n, k, a, b) == (3, 18, x, w) and str(m) == "16*N"
    assert sympy.simplify(y.opdef.flops(y) - 2 * 16 * 12 * 18 * sympy.Symbol("N", integer=True, positive=True)) == 0
    one = ops.conv2d(x, kgen.tensor("v", (12, 8, 3, 3)))
    assert one.opdef.gemm(one)[1:3] == (12, 72) and one.attrs["groups"] == 1
    dx, dw = kgen.grad(ops.sum(y), [x, w])
    assert dx.opdef.gemm(dx) is None and ops_conv.group_gemm(dx)[1:3] == (2, 27)
    assert dw.opdef.gemm(dw) is None and ops_conv.group_gemm(dw)[:2] == (3, 18)


# --- a depthwise-separable training step ---------------------------------------------------------------
def separable_model():
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(8, 6, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 5 * 5, 3))


def test_depthwise_separable_training_step_matches_reference_and_torch():
    nn.manual_seed(0)
    model = separable_model()
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 4, 5, 5)).astype(np.float32), rng.integers(0, 3, 5)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    step = nn.train_step(model, nn.losses.get("cross_entropy"), nn.SGD(model.parameters(), lr=0.1), x, y)
    kgen.check(step, [x, y], strict=True)

    reference = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1, groups=4), torch.nn.ReLU(),
                                    torch.nn.Conv2d(8, 6, 1), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(6 * 5 * 5, 3)).double()
    reference.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in state.items()})
    model.load_state_dict(state)
    loss = step(x, y)[0]  # the loss, then the metrics
    want = F.cross_entropy(reference(torch.tensor(x, dtype=torch.float64)), torch.tensor(y))
    want.backward()
    assert abs(float(loss) - float(want)) < 1e-4
    with torch.no_grad():
        for name, p in reference.named_parameters():
            assert_close(model.state_dict()[name], p - 0.1 * p.grad, rtol=1e-4, what=name)


# --- layers ------------------------------------------------------------------------------------------
def test_conv_layers_match_torch_parameters_and_outputs(rng):
    nn.manual_seed(3)
    mine = [nn.Conv2d(6, 9, (3, 2), stride=2, padding=1, groups=3), nn.Conv1d(4, 8, 3, padding="same", groups=4),
            nn.Conv2d(4, 4, 3, groups=4, bias=False)]
    theirs = [torch.nn.Conv2d(6, 9, (3, 2), stride=2, padding=1, groups=3),
              torch.nn.Conv1d(4, 8, 3, padding="same", groups=4), torch.nn.Conv2d(4, 4, 3, groups=4, bias=False)]
    inputs = [(2, 6, 7, 7), (2, 4, 9), (4, 6, 6)]  # the last unbatched
    for layer, ref, shape in zip(mine, theirs, inputs):
        state = layer.state_dict()
        assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        fan_in = ref.weight[0].numel()  # torch's bound: 1/sqrt(in/groups * kernel)
        assert np.abs(state["weight"]).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(state["weight"]).max() > 0.8 / np.sqrt(fan_in)
        ref.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        xv = random_array(rng, shape)
        x = kgen.tensor("x", shape)
        got = kgen.function([x], layer(x))(xv)
        assert_close(got.numpy(), ref(torch.tensor(xv)).detach(), what=repr(layer))


def test_conv_layers_refuse_other_padding_modes():
    with pytest.raises(kgen.errors.OptionError, match=r"Conv2d: padding_mode must be 'zeros' \(kgen's "
                                                      r"convolutions pad with zeros\), got 'reflect'"):
        nn.Conv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(kgen.errors.OptionError, match=r"Conv1d: padding_mode must be 'zeros'.*'circular'"):
        nn.Conv1d(2, 2, 3, padding_mode="circular")
    with pytest.raises(kgen.ShapeError, match=r"Conv2d: in_channels 4 and out_channels 6 must both be divisible "
                                              r"by groups 4"):
        nn.Conv2d(4, 6, 3, groups=4)


def test_bad_group_arguments():
    x = kgen.tensor("x", (2, 4, 7, 7))
    with pytest.raises(kgen.ShapeError, match=r"groups=3 must divide the 4 channels and the 6 filters"):
        ops.conv2d(x, kgen.tensor("w", (6, 1, 3, 3)), groups=3)
    with pytest.raises(kgen.ShapeError, match=r"has 4 channels but w \[6,1,3,3\] expects 2 \(1 per group of 2\)"):
        ops.conv2d(x, kgen.tensor("w", (6, 1, 3, 3)), groups=2)
    with pytest.raises(kgen.ShapeError, match=r"groups must be an int >= 1, got 0"):
        ops.conv2d(x, kgen.tensor("w", (6, 4, 3, 3)), groups=0)
    with pytest.raises(kgen.ShapeError, match=r"groups=4 must divide the 6 filters"):
        ops_conv.conv2d_input_grad(kgen.tensor("g", (2, 6, 5, 5)), kgen.tensor("w", (6, 1, 3, 3)), (7, 7), groups=4)
    with pytest.raises(kgen.ShapeError, match=r"padding='same' needs stride 1"):
        ops.conv1d(kgen.tensor("s", (2, 4, 9)), kgen.tensor("w", (4, 4, 3)), stride=2, padding="same")
    with pytest.raises(kgen.ShapeError, match=r"conv1d takes a 3-D x \[N, C, L\] or an unbatched 2-D one"):
        ops.conv1d(x, kgen.tensor("w", (4, 4, 3)))
    with pytest.raises(kgen.ShapeError, match=r"conv1d: stride must be an int or a 1-tuple, got \(1, 2\)"):
        ops.conv1d(kgen.tensor("s", (2, 4, 9)), kgen.tensor("w", (4, 4, 3)), stride=(1, 2))
    with pytest.raises(kgen.ShapeError, match=r"conv2d takes a 4-D x \(NCHW\) or an unbatched 3-D one"):
        ops.conv2d(kgen.tensor("s", (4, 9)), kgen.tensor("w", (4, 4, 3, 3)))


# --- ahead-of-time compilation -------------------------------------------------------------------------
def _aot_groups(dtype):
    """Every grouped and depthwise kernel: forward and both gradients, a symbolic batch."""
    x, g = kgen.tensor("x", ("N", 4, 9, 9), dtype), kgen.tensor("g", ("N", 8, 5, 5), dtype)
    outs = []
    for groups, w in ((2, kgen.tensor("w", (8, 2, 3, 3), dtype)), (4, kgen.tensor("d", (8, 1, 3, 3), dtype))):
        kw = dict(stride=2, padding=1, dilation=1, groups=groups)
        outs += [ops.conv2d(x, w, **kw), ops_conv.conv2d_input_grad(g, w, (9, 9), **kw),
                 ops_conv.conv2d_weight_grad(x, g, (3, 3), **kw)]
    return kgen.Graph([x, g] + [o.inputs[1] for o in outs[::3]], outs)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_grouped_and_depthwise_kernels_compile_for_sm80_and_sm90(dtype):
    program = kgen.compile(_aot_groups(dtype))
    kernels = flatten(program.kernels)
    assert sorted(k.config_rule for k in kernels) == ["conv"] * 3 + ["depthwise"] * 2 + ["reduction"]
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"))
    assert [(b.kernel, b.target) for b in binaries] == [(k.name, t) for k in program.kernels
                                                        for t in ("sm_80", "sm_90")]
    for b in binaries:
        assert re.search(rf"^\.target\s+{b.target}", b.ptx, re.M)
        assert re.search(rf"\.entry\s+{b.kernel}\b", b.ptx)
        assert b.cubin[:4] == b"\x7fELF"
