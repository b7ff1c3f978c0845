"""The VJP rule of every differentiable op, checked two ways on the float64 reference
interpreter: against central finite differences, and against torch.autograd in float64.

Each case computes y = sum(f(inputs) * weights) with random weights (an input of the graph,
so it stays float64), so y is a scalar whose gradient exercises a non-uniform cotangent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import ops
from kgen.ir import ops_conv
from kgen.ir.ops_gather import embedding_grad
from ir_helpers import assert_close, ops_in, random_array, to_torch

EPS = 1e-6


@dataclass
class Case:
    op: str  # the table op whose VJP this case is about
    fn: Callable  # kgen: f(*nodes) -> node, the inputs in order
    torch_fn: Callable  # torch: f(*tensors) -> tensor
    inputs: dict  # name -> (shape, dict(dtype=..., positive=..., ...)) or (shape, dtype, values-fn)
    wrt: tuple = None  # names to differentiate (default: every float input)
    sizes: dict = field(default_factory=dict)  # concrete shape of symbolic inputs
    torch_rtol: float = 1e-9


def _spec(spec):
    shape, opts = spec
    return shape, dict(opts)


def make_inputs(case, rng):
    nodes, arrays = {}, {}
    for name, spec in case.inputs.items():
        shape, opts = _spec(spec)
        dtype = opts.pop("dtype", "float32")
        values = opts.pop("values", None)
        concrete = case.sizes.get(name, shape)
        nodes[name] = kgen.tensor(name, shape, dtype)
        if values is not None:
            arrays[name] = values(rng, concrete)
        else:
            arrays[name] = random_array(rng, concrete, dtype, **opts)
        if nodes[name].dtype.is_float:
            arrays[name] = np.asarray(arrays[name], np.float64)
    return nodes, arrays


def build(case, rng):
    """(graph of y, graph of y and its gradients, arrays, wrt names)."""
    nodes, arrays = make_inputs(case, rng)
    out = case.fn(*nodes.values())
    # the weights: an input of out's shape and dtype, valued from out's concrete shape
    shape_graph = kgen.Graph(list(nodes.values()), [out])
    out_value = kgen.reference.run(shape_graph, arrays)[0]
    weights = kgen.tensor("weights", out.shape, out.dtype)
    arrays["weights"] = random_array(rng, out_value.shape).astype(np.float64)
    y = ops.sum(out * weights)
    wrt = case.wrt or tuple(n for n, node in nodes.items() if node.dtype.is_float)
    grads = kgen.grad(y, [nodes[n] for n in wrt])
    inputs = list(nodes.values()) + [weights]
    y_graph = kgen.Graph(inputs, [y])
    full = kgen.ir.verify(kgen.Graph(inputs, [y] + list(grads)))
    return y_graph, full, arrays, wrt, shape_graph


def numeric_grad(y_graph, arrays, name):
    base = arrays[name]
    out = np.zeros_like(base, dtype=np.float64)
    for idx in np.ndindex(base.shape):
        values = []
        for sign in (1.0, -1.0):
            bumped = base.copy()
            bumped[idx] += sign * EPS
            values.append(kgen.reference.run(y_graph, {**arrays, name: bumped})[0])
        out[idx] = (values[0] - values[1]) / (2 * EPS)
    return out


def torch_grads(case, arrays, wrt):
    tensors = {}
    for name, value in arrays.items():
        t = to_torch(value)
        if name in wrt:
            t.requires_grad_(True)
        tensors[name] = t
    weights = tensors.pop("weights")
    out = case.torch_fn(*tensors.values())
    (out * weights).sum().backward()
    return [tensors[n].grad for n in wrt]


def f(**kw):
    return kw


def pos(shape):
    return (shape, f(positive=True))


def any_(shape, **kw):
    return (shape, f(**kw))


CASES = {
    # unary
    "neg": Case("neg", lambda x: -x, lambda x: -x, f(x=any_((3, 4)))),
    "stop_gradient": Case("stop_gradient", lambda x: ops.stop_gradient(x) * x, lambda x: x.detach() * x,
                          f(x=any_((3, 4)))),
    "exp": Case("exp", lambda x: ops.exp(x), torch.exp, f(x=any_((3, 4)))),
    "log": Case("log", lambda x: ops.log(x), torch.log, f(x=pos((3, 4)))),
    "sqrt": Case("sqrt", lambda x: ops.sqrt(x), torch.sqrt, f(x=pos((3, 4)))),
    "abs": Case("abs", lambda x: abs(x), torch.abs, f(x=any_((3, 4)))),
    "tanh": Case("tanh", lambda x: ops.tanh(x), torch.tanh, f(x=any_((3, 4)))),
    "sigmoid": Case("sigmoid", lambda x: ops.sigmoid(x), torch.sigmoid, f(x=any_((3, 4)))),
    "relu": Case("relu", lambda x: ops.relu(x), torch.relu, f(x=any_((3, 4)))),
    "erf": Case("erf", lambda x: ops.erf(x), torch.erf, f(x=any_((3, 4)))),
    "floor": Case("floor", lambda x: ops.floor(x * 3.0) * x, lambda x: torch.floor(x * 3.0) * x, f(x=any_((3, 4)))),
    # binary, same shapes and broadcast
    "add": Case("add", lambda a, b: a + b, lambda a, b: a + b, f(a=any_((4, 3)), b=any_((3,)))),
    "add_outer": Case("add", lambda a, b: a + b, lambda a, b: a + b, f(a=any_((4, 1)), b=any_((1, 3)))),
    "add_scalar_operand": Case("add", lambda a, b: a + b, lambda a, b: a + b, f(a=any_(()), b=any_((2, 3)))),
    "add_symbolic_batch": Case("add", lambda a, b: a + b, lambda a, b: a + b, f(a=any_(("N", 3)), b=any_((3,))),
                               sizes=f(a=(5, 3))),
    "mul_symbolic_outer": Case("mul", lambda a, b: a * b, lambda a, b: a * b, f(a=any_(("N", 1)), b=any_((1, 3))),
                               sizes=f(a=(4, 1))),
    "sub": Case("sub", lambda a, b: a - b, lambda a, b: a - b, f(a=any_((3,)), b=any_((4, 3)))),
    "mul": Case("mul", lambda a, b: a * b, lambda a, b: a * b, f(a=any_((4, 1)), b=any_((1, 3)))),
    "mul_same": Case("mul", lambda a, b: a * b, lambda a, b: a * b, f(a=any_((2, 3)), b=any_((2, 3)))),
    "div": Case("div", lambda a, b: a / b, lambda a, b: a / b, f(a=any_((4, 3)), b=any_((3,)))),
    "div_rev": Case("div", lambda a, b: a / b, lambda a, b: a / b, f(a=any_((2, 1, 3)), b=any_((4, 1)))),
    "fmod": Case("fmod", ops.fmod, torch.fmod, f(a=any_((4, 3), low=0.5, high=9.0), b=any_((3,)))),
    "remainder": Case("remainder", ops.remainder, torch.remainder, f(a=any_((4, 3), low=0.5, high=9.0), b=any_((4, 1)))),
    "maximum": Case("maximum", ops.maximum, torch.maximum, f(a=any_((4, 3)), b=any_((3,)))),
    "minimum": Case("minimum", ops.minimum, torch.minimum, f(a=any_((4, 1)), b=any_((1, 3)))),
    "pow_tensor_exponent": Case("pow", lambda a, b: a ** b, torch.pow, f(a=pos((4, 3)), b=any_((3,)))),
    "pow_scalar_exponent": Case("pow", lambda a: a ** 3, lambda a: a ** 3, f(a=any_((3, 4)))),
    "pow_square": Case("pow", lambda a: a ** 2, lambda a: a ** 2, f(a=any_((3, 4)))),
    "pow_half": Case("pow", lambda a: a ** 0.5, lambda a: a ** 0.5, f(a=pos((3, 4)))),
    "pow_scalar_base": Case("pow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, f(a=any_((3, 4)))),
    "where": Case("where", lambda c, a, b: ops.where(c, a, b), torch.where,
                  f(c=any_((4, 1), dtype="bool"), a=any_((4, 3)), b=any_((3,)))),
    "where_scalar_branch": Case("where", lambda c, a: ops.where(c, a, 0.5),
                                lambda c, a: torch.where(c, a, torch.tensor(0.5, dtype=torch.float64)),
                                f(c=any_((4, 3), dtype="bool"), a=any_((4, 3)))),
    "cast_f32_to_f16": Case("cast", lambda x: ops.cast(x, "float16") * 3.0,
                            lambda x: x.to(torch.float16) * 3.0, f(x=any_((3, 4))), torch_rtol=2e-3),
    "cast_f16_to_f32": Case("cast", lambda x: ops.cast(x, "float32") ** 2,
                            lambda x: x.to(torch.float32).double() ** 2, f(x=any_((3, 4), dtype="float16")),
                            torch_rtol=1e-6),  # torch rounds to float32 here; float64 reference does not
    # reductions
    "sum_axis": Case("sum", lambda x: ops.sum(x, 1), lambda x: x.sum(1), f(x=any_((3, 4, 2)))),
    "sum_keepdims_neg": Case("sum", lambda x: ops.sum(x, (-1, 0), keepdims=True),
                             lambda x: x.sum((-1, 0), keepdim=True), f(x=any_((3, 4, 2)))),
    "sum_all": Case("sum", lambda x: ops.sum(x) * ops.sum(x), lambda x: x.sum() * x.sum(), f(x=any_((3, 4)))),
    "mean_axes_keepdims": Case("mean", lambda x: ops.mean(x, (0, 2), keepdims=True),
                               lambda x: x.mean((0, 2), keepdim=True), f(x=any_((3, 4, 2)))),
    "mean_symbolic": Case("mean", lambda x: ops.mean(x, 0), lambda x: x.mean(0), f(x=any_(("N", 3))),
                          sizes=f(x=(5, 3))),
    "mean_all": Case("mean", lambda x: ops.mean(x) ** 2, lambda x: x.mean() ** 2, f(x=any_((3, 4)))),
    "max_axis": Case("max", lambda x: ops.max(x, 1), lambda x: torch.amax(x, 1), f(x=any_((4, 5)))),
    "max_keepdims": Case("max", lambda x: ops.max(x, 0, keepdims=True), lambda x: torch.amax(x, 0, keepdim=True),
                         f(x=any_((4, 5)))),
    "max_all": Case("max", lambda x: ops.max(x) * x, lambda x: torch.amax(x) * x, f(x=any_((3, 4)))),
    # matmul
    "matmul_2d": Case("matmul", ops.matmul, torch.matmul, f(a=any_((3, 4)), b=any_((4, 2)))),
    "matmul_batched": Case("matmul", ops.matmul, torch.matmul, f(a=any_((2, 3, 4)), b=any_((2, 4, 2)))),
    "matmul_broadcast_batch": Case("matmul", ops.matmul, torch.matmul, f(a=any_((2, 3, 4)), b=any_((4, 2)))),
    "matmul_unit_batch": Case("matmul", ops.matmul, torch.matmul, f(a=any_((1, 3, 4)), b=any_((2, 4, 2)))),
    "matmul_vec_mat": Case("matmul", ops.matmul, torch.matmul, f(a=any_((4,)), b=any_((4, 3)))),
    "matmul_mat_vec": Case("matmul", ops.matmul, torch.matmul, f(a=any_((3, 4)), b=any_((4,)))),
    "matmul_dot": Case("matmul", ops.matmul, torch.matmul, f(a=any_((4,)), b=any_((4,)))),
    "matmul_symbolic": Case("matmul", ops.matmul, torch.matmul, f(a=any_(("N", 4)), b=any_((4, 2))),
                            sizes=f(a=(3, 4))),
    # views
    "reshape": Case("reshape", lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6), f(x=any_((2, 3, 4)))),
    "reshape_minus_one": Case("reshape", lambda x: x.reshape(-1, 2), lambda x: x.reshape(-1, 2),
                              f(x=any_((3, 4)))),
    "transpose": Case("transpose", lambda x: ops.transpose(x, (2, 0, 1)), lambda x: x.permute(2, 0, 1),
                      f(x=any_((2, 3, 4)))),
    "transpose_T": Case("transpose", lambda x: x.T * x.T, lambda x: x.T * x.T, f(x=any_((3, 4)))),
    "broadcast_to": Case("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3)), lambda x: x.expand(2, 3),
                         f(x=any_((3,)))),
    "broadcast_to_unit": Case("broadcast_to", lambda x: ops.broadcast_to(x, (5, 2, 4)), lambda x: x.expand(5, 2, 4),
                              f(x=any_((2, 1)))),
    "expand_dims": Case("reshape", lambda x: ops.expand_dims(x, 1) * x, lambda x: x.unsqueeze(1) * x,
                        f(x=any_((3, 2)))),
    "squeeze": Case("reshape", lambda x: ops.squeeze(x), lambda x: x.squeeze(), f(x=any_((1, 3, 1)))),
    "flatten": Case("reshape", lambda x: ops.flatten(x), lambda x: torch.flatten(x, 1), f(x=any_((2, 3, 2)))),
    "slice": Case("slice", lambda x: x[1:, ::2] * 3.0, lambda x: x[1:, ::2] * 3.0, f(x=any_((3, 5)))),
    "slice_index": Case("slice", lambda x: x[..., 2, 1:4], lambda x: x[..., 2, 1:4], f(x=any_((2, 3, 5)))),
    "slice_symbolic_batch": Case("slice", lambda x: x[:, 1::3], lambda x: x[:, 1::3],
                                 f(x=any_(("N", 7))), sizes=f(x=(4, 7))),
    "pad": Case("pad", lambda x: ops.pad(x, ((1, 0), (2, 3))), lambda x: F.pad(x, (2, 3, 1, 0)), f(x=any_((3, 4)))),
    "pad_strided": Case("pad", lambda x: ops.pad_strided(x, (1, 0), (3, 2), (8, 5)),
                        lambda x: torch.zeros(8, 5, dtype=x.dtype).index_put(
                            (torch.arange(1, 8, 3)[:, None], torch.arange(0, 5, 2)[None, :]), x),
                        f(x=any_((3, 3)))),
    "concatenate": Case("pad", lambda a, b: ops.concatenate([a, b, a], axis=1), lambda a, b: torch.cat([a, b, a], 1),
                        f(a=any_(("N", 2)), b=any_(("N", 3))), sizes=f(a=(3, 2), b=(3, 3))),
    "stack": Case("pad", lambda a, b: ops.stack([a, b], axis=0), lambda a, b: torch.stack([a, b], 0),
                  f(a=any_((2, 3)), b=any_((2, 3)))),
    # composites
    "softmax": Case("exp", lambda x: ops.softmax(x), lambda x: torch.softmax(x, -1), f(x=any_((3, 5)))),
    "softmax_axis0": Case("exp", lambda x: ops.softmax(x, 0), lambda x: torch.softmax(x, 0), f(x=any_((3, 5)))),
    "log_softmax": Case("log", lambda x: ops.log_softmax(x), lambda x: torch.log_softmax(x, -1), f(x=any_((3, 5)))),
    "logsumexp": Case("log", lambda x: ops.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1), f(x=any_((3, 5)))),
    "cross_entropy": Case("mean", lambda x, y: ops.cross_entropy(x, y), lambda x, y: F.cross_entropy(x, y),
                          f(x=any_((6, 4)), y=any_((6,), dtype="int64", values=lambda rng, s: rng.integers(0, 4, s))),
                          wrt=("x",)),
    "nll_loss": Case("mean", lambda x, y: ops.nll_loss(x, y), lambda x, y: F.nll_loss(x, y),
                     f(x=any_((6, 4)), y=any_((6,), dtype="int64", values=lambda rng, s: rng.integers(0, 4, s))),
                     wrt=("x",)),
    "mse": Case("mean", ops.mse, F.mse_loss, f(p=any_((4, 3)), t=any_((4, 3)))),
    "binary_cross_entropy": Case(
        "log", ops.binary_cross_entropy, F.binary_cross_entropy,
        f(p=any_((4, 3), values=lambda rng, s: rng.uniform(0.05, 0.95, s)),
          t=any_((4, 3), values=lambda rng, s: rng.uniform(0.0, 1.0, s)))),
}


# --- convolution and pooling (kgen/ir/ops_conv.py) ------------------------------------------------
def _torch_pool_grad(pool, g, x_shape, **kw):
    """torch's gradient of pool(x) for the output gradient g, differentiable in g."""
    x = torch.zeros(x_shape, dtype=g.dtype, requires_grad=True)
    return torch.autograd.grad(pool(x, **kw), x, g, create_graph=True)[0]


def _torch_max_pool_grad(g, x, **kw):
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(F.max_pool2d(x, **kw), x, g, create_graph=True)[0]


def _torch_max_pool_gather(t, x, **kw):
    out, index = F.max_pool2d(x, return_indices=True, **kw)
    return torch.gather(t.flatten(2), 2, index.flatten(2)).view_as(out)


_CONV = dict(stride=2, padding=1)
_POOL = dict(kernel_size=3, stride=2, padding=1)
CASES.update({
    "conv2d": Case("conv2d", lambda x, w: ops.conv2d(x, w, **_CONV), lambda x, w: F.conv2d(x, w, **_CONV),
                   f(x=any_((2, 3, 7, 7)), w=any_((4, 3, 3, 3)))),
    "conv2d_dilated": Case("conv2d", lambda x, w: ops.conv2d(x, w, stride=(1, 2), padding=(2, 1), dilation=2),
                           lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(2, 1), dilation=2),
                           f(x=any_((1, 2, 6, 7)), w=any_((3, 2, 2, 3)))),
    "conv2d_symbolic_batch": Case("conv2d", lambda x, w: ops.conv2d(x, w, padding=1),
                                  lambda x, w: F.conv2d(x, w, padding=1),
                                  f(x=any_(("N", 2, 5, 5)), w=any_((2, 2, 3, 3))), sizes=f(x=(2, 2, 5, 5))),
    "conv2d_input_grad": Case("conv2d_input_grad", lambda g, w: ops_conv.conv2d_input_grad(g, w, (7, 7), **_CONV),
                              lambda g, w: torch.nn.grad.conv2d_input((2, 3, 7, 7), w, g, **_CONV),
                              f(g=any_((2, 4, 4, 4)), w=any_((4, 3, 3, 3)))),
    "conv2d_weight_grad": Case("conv2d_weight_grad", lambda x, g: ops_conv.conv2d_weight_grad(x, g, (3, 3), **_CONV),
                               lambda x, g: torch.nn.grad.conv2d_weight(x, (4, 3, 3, 3), g, **_CONV),
                               f(x=any_((2, 3, 7, 7)), g=any_((2, 4, 4, 4)))),
    "max_pool2d": Case("max_pool2d", lambda x: ops.max_pool2d(x, **_POOL), lambda x: F.max_pool2d(x, **_POOL),
                       f(x=any_((2, 3, 7, 7)))),
    "max_pool2d_grad": Case("max_pool2d_grad", lambda g, x: ops_conv.max_pool2d_grad(g, x, **_POOL),
                            lambda g, x: _torch_max_pool_grad(g, x, **_POOL),
                            f(g=any_((2, 3, 4, 4)), x=any_((2, 3, 7, 7))), wrt=("g",)),
    "max_pool2d_gather": Case("max_pool2d_gather", lambda t, x: ops_conv.max_pool2d_gather(t, x, **_POOL),
                              lambda t, x: _torch_max_pool_gather(t, x, **_POOL),
                              f(t=any_((2, 3, 7, 7)), x=any_((2, 3, 7, 7))), wrt=("t",)),
    "avg_pool2d": Case("avg_pool2d", lambda x: ops.avg_pool2d(x, **_POOL), lambda x: F.avg_pool2d(x, **_POOL),
                       f(x=any_((2, 3, 7, 7)))),
    "avg_pool2d_grad": Case("avg_pool2d_grad", lambda g: ops_conv.avg_pool2d_grad(g, (7, 7), **_POOL),
                            lambda g: _torch_pool_grad(F.avg_pool2d, g, (2, 3, 7, 7), **_POOL),
                            f(g=any_((2, 3, 4, 4)))),
})

# groups: two groups of two channels, and depthwise with a channel multiplier of 2
_GROUPED, _DEPTHWISE = dict(stride=2, padding=1, groups=2), dict(stride=(1, 2), padding=(1, 0), groups=4)
CASES.update({
    "conv2d_grouped": Case("conv2d", lambda x, w: ops.conv2d(x, w, **_GROUPED), lambda x, w: F.conv2d(x, w, **_GROUPED),
                           f(x=any_((2, 4, 6, 6)), w=any_((6, 2, 3, 3)))),
    "conv2d_depthwise": Case("conv2d", lambda x, w: ops.conv2d(x, w, **_DEPTHWISE),
                             lambda x, w: F.conv2d(x, w, **_DEPTHWISE), f(x=any_((1, 4, 5, 6)), w=any_((8, 1, 3, 2)))),
    "conv2d_input_grad_depthwise": Case(
        "conv2d_input_grad", lambda g, w: ops_conv.conv2d_input_grad(g, w, (5, 6), **_DEPTHWISE),
        lambda g, w: torch.nn.grad.conv2d_input((1, 4, 5, 6), w, g, **_DEPTHWISE),
        f(g=any_((1, 8, 5, 3)), w=any_((8, 1, 3, 2)))),
    "conv2d_weight_grad_grouped": Case(
        "conv2d_weight_grad", lambda x, g: ops_conv.conv2d_weight_grad(x, g, (3, 3), **_GROUPED),
        lambda x, g: torch.nn.grad.conv2d_weight(x, (6, 2, 3, 3), g, **_GROUPED),
        f(x=any_((2, 4, 6, 6)), g=any_((2, 6, 3, 3)))),
})


def _rows(rng, shape):  # indices into a table of 5 rows, repeated ones included
    return np.resize(np.array([3, 0, 3, 4, 1, 3], np.int64), shape)


def _torch_scan(x, w, c):
    ys = []
    for t in range(len(x)):
        ys.append(c)
        c = torch.tanh(x[t] @ w + c)
    return torch.stack(ys).sum(0) + c


# scan (kgen/ir/ops_loop.py): a recurrence reading a weight from outside its step; more in tests/ir/test_scan.py
CASES["scan"] = Case("scan", lambda x, w, c: (lambda r: r[0] + ops.sum(r[1], 0))(
                         ops.scan(lambda h, xt: (ops.tanh(xt @ w + h), h), c, x)),
                     _torch_scan, f(x=any_((4, 2, 3)), w=any_((3, 3)), c=any_((2, 3))))


CASES.update({
    # (padding_idx departs from the true derivative by design: tests/ir/test_embedding.py checks it against torch)
    "embedding": Case("embedding", lambda i, w: ops.embedding(i, w), F.embedding,
                      f(i=any_((2, 3), dtype="int64", values=_rows), w=any_((5, 4))), wrt=("w",)),
    "embedding_grad": Case("embedding_grad", lambda g, i: embedding_grad(g, i, 5, padding_idx=4),
                           lambda g, i: torch.ops.aten.embedding_dense_backward(g, i, 5, 4, False),
                           f(g=any_((2, 3, 4)), i=any_((2, 3), dtype="int64", values=_rows)), wrt=("g",)),
})

@pytest.mark.parametrize("case_id", sorted(CASES))
def test_vjp_matches_finite_differences(case_id, rng):
    case = CASES[case_id]
    if case.op == "stop_gradient":
        pytest.skip("stop_gradient departs from the true derivative by design; torch.detach is its oracle")
    y_graph, full, arrays, wrt, shape_graph = build(case, rng)
    assert case.op in ops_in(shape_graph), f"{case_id} does not use {case.op}"
    analytic = kgen.reference.run(full, arrays)[1:]
    for name, got in zip(wrt, analytic):
        assert got.shape == arrays[name].shape
        want = numeric_grad(y_graph, arrays, name)
        scale = max(1.0, float(np.abs(want).max()))
        assert_close(got, want, rtol=1e-5, atol=1e-6 * scale, what=f"d y / d {name}")


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_vjp_matches_torch(case_id, rng):
    case = CASES[case_id]
    _, full, arrays, wrt, _ = build(case, rng)
    analytic = kgen.reference.run(full, arrays)[1:]
    for name, got, want in zip(wrt, analytic, torch_grads(case, arrays, wrt)):
        assert want is not None, name
        assert_close(got, want, rtol=case.torch_rtol, atol=1e-12, what=f"d y / d {name}")


def test_every_differentiable_op_has_a_vjp_case():
    differentiable = {name for name, opdef in kgen.ir.TABLE.items() if opdef.vjp is not None}
    assert differentiable == {case.op for case in CASES.values()}


def test_non_differentiable_ops_have_no_vjp():
    none = {name for name, opdef in kgen.ir.TABLE.items() if opdef.vjp is None}
    assert none == {"input", "constant", "iota", "rand", "less", "less_equal", "greater", "greater_equal",
                    "equal", "not_equal", "trunc_div", "max_pool2d_indices",  # integer results
                    "persistent_scan"}  # made by lowering (S1), after kgen.grad has differentiated the scan


# --- specific rules ------------------------------------------------------------------------------
def _grads(y, wrt, inputs, arrays):
    graph = kgen.ir.verify(kgen.Graph(inputs, kgen.grad(y, wrt)))
    return kgen.reference.run(graph, arrays)


def test_max_splits_the_gradient_between_ties_like_torch_amax():
    x = kgen.tensor("x", (3, 4))
    a = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, -1.0], [0.5, -2.0, 7.0, 1.0]])
    w = np.array([2.0, -1.0, 0.5])
    (got,) = _grads(ops.sum(ops.max(x, 1) * w), [x], [x], {"x": a})
    t = torch.tensor(a, requires_grad=True)
    (torch.amax(t, 1) * torch.tensor(w)).sum().backward()
    assert_close(got, t.grad)
    assert_close(got[0], [0.0, 1.0, 1.0, 0.0])
    assert_close(got[1], [-1 / 3, -1 / 3, -1 / 3, 0.0])


def test_max_all_axes_ties():
    x = kgen.tensor("x", (2, 2))
    a = np.array([[4.0, 1.0], [4.0, 4.0]])
    (got,) = _grads(ops.max(x), [x], [x], {"x": a})
    assert_close(got, np.array([[1 / 3, 0.0], [1 / 3, 1 / 3]]))


def test_grad_of_unrelated_tensor_is_zero(rng):
    x, z = kgen.tensor("x", (3, 2)), kgen.tensor("z", ("N", 4))
    y = ops.sum(x * x)
    gx, gz = _grads(y, [x, z], [x, z], {"x": random_array(rng, (3, 2)), "z": random_array(rng, (5, 4))})
    assert gz.shape == (5, 4)
    assert_close(gz, np.zeros((5, 4)))


def test_grad_accumulates_over_uses(rng):
    x = kgen.tensor("x", (4,))
    a = random_array(rng, (4,)).astype(np.float64)
    y = ops.sum(x * x + 3.0 * x + ops.exp(x))
    (got,) = _grads(y, [x], [x], {"x": a})
    assert_close(got, 2 * a + 3.0 + np.exp(a))


def test_grad_through_shared_subexpression(rng):
    x = kgen.tensor("x", (3,))
    a = random_array(rng, (3,)).astype(np.float64)
    h = ops.tanh(x)
    y = ops.sum(h * h) + ops.sum(h)
    (got,) = _grads(y, [x], [x], {"x": a})
    t = np.tanh(a)
    assert_close(got, (2 * t + 1) * (1 - t * t))


def test_grad_of_y_with_respect_to_itself_is_one(rng):
    x = kgen.tensor("x", (3,))
    y = ops.sum(x)
    gy, gx = _grads(y, [y, x], [x], {"x": random_array(rng, (3,))})
    assert_close(gy, 1.0)
    assert_close(gx, np.ones(3))


def test_grad_single_node_returns_a_node():
    x = kgen.tensor("x", (3,))
    g = kgen.grad(ops.sum(x), x)
    assert isinstance(g, kgen.Node) and g.shape == (3,)


def test_grad_with_seed(rng):
    x = kgen.tensor("x", (2, 3))
    a, s = random_array(rng, (2, 3)).astype(np.float64), random_array(rng, (2, 3)).astype(np.float32)
    y = ops.exp(x)
    graph = kgen.Graph([x], [kgen.grad(y, x, seed=s)])
    (got,) = kgen.reference.run(graph, {"x": a})
    assert_close(got, s.astype(np.float64) * np.exp(a))
    seed_node = kgen.tensor("s", (2, 3))
    graph = kgen.Graph([x, seed_node], [kgen.grad(y, x, seed=seed_node)])
    (got,) = kgen.reference.run(graph, {"x": a, "s": s})
    assert_close(got, s.astype(np.float64) * np.exp(a))


def test_grad_seed_of_wrong_shape():
    x = kgen.tensor("x", (2, 3))
    with pytest.raises(kgen.GradError, match="seed"):
        kgen.grad(x * 2.0, x, seed=np.ones((3, 2), np.float32))


def test_grad_does_not_flow_through_integer_casts(rng):
    x = kgen.tensor("x", (6,))
    a = (random_array(rng, (6,)) * 3).astype(np.float64)
    y = ops.sum(x * ops.cast(ops.cast(x, "int32"), "float32"))
    (got,) = _grads(y, [x], [x], {"x": a})
    assert_close(got, np.trunc(a))
    t = torch.tensor(a, requires_grad=True)
    (t * t.to(torch.int32).to(torch.float64)).sum().backward()
    assert_close(got, t.grad)


def test_grad_does_not_flow_through_comparisons(rng):
    x = kgen.tensor("x", (5,))
    a = random_array(rng, (5,)).astype(np.float64)
    y = ops.sum(ops.cast(x > 0, "float32") * x)
    (got,) = _grads(y, [x], [x], {"x": a})
    assert_close(got, (a > 0).astype(np.float64))


def test_grad_in_half_precision_keeps_dtype(rng):
    x = kgen.tensor("x", (4,), "float16")
    y = ops.sum(x * x)
    g = kgen.grad(y, x)
    assert g.dtype is kgen.float16
    a = random_array(rng, (4,), "float16")
    (got,) = kgen.reference.run(kgen.Graph([x], [g]), {"x": a}, precision="native")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, (2 * a.astype(np.float32)).astype(np.float16))


def test_second_order_grad(rng):
    x = kgen.tensor("x", (3,))
    a = random_array(rng, (3,)).astype(np.float64)
    (gx,) = [kgen.grad(ops.sum(x * x * x), x)]
    (ggx,) = _grads(ops.sum(gx), [x], [x], {"x": a})
    assert_close(ggx, 6 * a)


def test_grad_with_respect_to_an_intermediate_node(rng):
    x = kgen.tensor("x", (4,))
    h = ops.exp(x)
    y = ops.sum(h * h)
    a = random_array(rng, (4,)).astype(np.float64)
    gh, gx = _grads(y, [h, x], [x], {"x": a})
    assert_close(gh, 2 * np.exp(a))
    assert_close(gx, 2 * np.exp(2 * a))


def test_gradients_are_ordinary_ir():
    x, w = kgen.tensor("x", ("N", 4)), kgen.tensor("w", (4, 2))
    y = ops.mean(ops.tanh(x @ w))
    gx, gw = kgen.grad(y, [x, w])
    assert gx.shape == x.shape and gx.dtype is x.dtype
    assert gw.shape == w.shape and gw.dtype is w.dtype
    graph = kgen.ir.verify(kgen.Graph([x, w], [gx, gw]))
    assert {n.op for n in graph.nodes} <= set(kgen.ir.TABLE)
