"""layer_norm and batch_norm (composites in kgen.ops): values and gradients against torch in
float64 on the reference, gradients by finite differences, the float32 kernels against the
reference (kgen.check), the kernels they fuse into (pinned), their errors, and AOT.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import ops
from kgen.kernels import aot
from kgen.lowering.stats import unfused_stats
from ir_helpers import assert_close, random_array, to_torch

EPS = 1e-6


def _reference(inputs: dict, outputs: list, arrays: dict) -> list:
    return kgen.reference.run(kgen.Graph(list(inputs.values()), outputs), arrays)


def _numeric_grad(graph, arrays, name):
    base, out = arrays[name], np.zeros_like(arrays[name])
    for idx in np.ndindex(base.shape):
        values = []
        for sign in (1.0, -1.0):
            bumped = base.copy()
            bumped[idx] += sign * EPS
            values.append(kgen.reference.run(graph, {**arrays, name: bumped})[0])
        out[idx] = (values[0] - values[1]) / (2 * EPS)
    return out


def _check_gradients(nodes: dict, out, torch_fn, arrays: dict, rng):
    """d sum(out * weights) / d every float input: finite differences and torch.autograd agree."""
    weights = kgen.tensor("weights", out.shape)
    arrays = {**arrays, "weights": random_array(rng, _reference(nodes, [out], arrays)[0].shape).astype(np.float64)}
    y = ops.sum(out * weights)
    names = [n for n, node in nodes.items() if node.dtype.is_float]
    inputs = list(nodes.values()) + [weights]
    got = kgen.reference.run(kgen.Graph(inputs, kgen.grad(y, [nodes[n] for n in names])), arrays)
    tensors = {n: to_torch(v).requires_grad_(n in names) for n, v in arrays.items()}
    (torch_fn(**{n: tensors[n] for n in nodes}) * tensors["weights"]).sum().backward()
    y_graph = kgen.Graph(inputs, [y])
    for name, g in zip(names, got):
        want = _numeric_grad(y_graph, arrays, name)
        assert_close(g, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max())), what=f"fd d/d{name}")
        assert_close(g, tensors[name].grad, rtol=1e-9, atol=1e-11, what=f"torch d/d{name}")


# --- layer_norm -------------------------------------------------------------------------------
LAYER_NORM = {  # x shape, normalized_shape, affine
    "last": ((3, 5), 5, True),
    "two_dims": ((2, 3, 4), (3, 4), True),
    "no_affine": ((4, 6), (6,), False),
    "row_of_one": ((3, 1), 1, True),
}


@pytest.mark.parametrize("case", sorted(LAYER_NORM))
def test_layer_norm_values_and_gradients_match_torch(case, rng):
    shape, norm, affine = LAYER_NORM[case]
    wshape = (norm,) if isinstance(norm, int) else norm
    nodes = {"x": kgen.tensor("x", shape)}
    arrays = {"x": random_array(rng, shape).astype(np.float64)}
    if affine:
        nodes.update(w=kgen.tensor("w", wshape), b=kgen.tensor("b", wshape))
        arrays.update(w=random_array(rng, wshape).astype(np.float64), b=random_array(rng, wshape).astype(np.float64))
    out = ops.layer_norm(nodes["x"], norm, nodes.get("w"), nodes.get("b"), eps=1e-3)

    def twin(x, w=None, b=None):
        return F.layer_norm(x, wshape, w, b, eps=1e-3)
    assert_close(_reference(nodes, [out], arrays)[0], twin(**{n: to_torch(v) for n, v in arrays.items()}),
                 rtol=1e-12, atol=1e-12, what="layer_norm")
    _check_gradients(nodes, out, twin, arrays, rng)


def test_layer_norm_float32_kernels_match_the_reference(rng):
    x, w, b = kgen.tensor("x", ("N", 7)), kgen.tensor("w", (7,)), kgen.tensor("b", (7,))
    out = ops.layer_norm(x, 7, w, b)
    loss = ops.sum(out * out * ops.iota(out.shape, 1, "float32"))
    graph = kgen.Graph([x, w, b], [out] + kgen.grad(loss, [x, w, b]))
    arrays = {"x": random_array(rng, (5, 7)), "w": random_array(rng, (7,)), "b": random_array(rng, (7,))}
    report = kgen.check(graph, arrays, strict=True)
    assert report.ok


def test_layer_norm_of_constant_rows_is_its_bias():
    """Zero variance: (x - mean) is exactly 0, so y = bias, as in torch (no 0/0)."""
    x = kgen.tensor("x", (2, 4))
    out = ops.layer_norm(x, 4, np.full(4, 3.0, np.float32), np.arange(4, dtype=np.float32))
    (got,) = kgen.reference.run(kgen.Graph([x], [out]), {"x": np.full((2, 4), 7.5)})
    np.testing.assert_array_equal(got, np.tile(np.arange(4.0), (2, 1)))


# --- batch_norm -------------------------------------------------------------------------------
BATCH_NORM = {"2d": (5, 3), "3d": (4, 3, 2), "4d": (3, 2, 2, 3)}


def _bn_arrays(rng, shape):
    c = shape[1]
    return {"x": random_array(rng, shape).astype(np.float64), "w": random_array(rng, (c,)).astype(np.float64),
            "b": random_array(rng, (c,)).astype(np.float64), "rm": random_array(rng, (c,)).astype(np.float64),
            "rv": random_array(rng, (c,), positive=True).astype(np.float64)}


def _bn_nodes(shape):
    c = (shape[1],)
    return {"x": kgen.tensor("x", shape), "w": kgen.tensor("w", c), "b": kgen.tensor("b", c),
            "rm": kgen.tensor("rm", c), "rv": kgen.tensor("rv", c)}


@pytest.mark.parametrize("case", sorted(BATCH_NORM))
def test_batch_norm_in_evaluation_matches_torch(case, rng):
    shape = BATCH_NORM[case]
    nodes, arrays = _bn_nodes(shape), _bn_arrays(rng, shape)
    out = ops.batch_norm(nodes["x"], nodes["rm"], nodes["rv"], nodes["w"], nodes["b"], eps=1e-3)

    t = {n: to_torch(v) for n, v in arrays.items()}
    assert_close(_reference(nodes, [out], arrays)[0], F.batch_norm(t["x"], t["rm"], t["rv"], t["w"], t["b"], eps=1e-3),
                 rtol=1e-12, atol=1e-12, what="batch_norm")
    view = (1, -1) + (1,) * (len(shape) - 2)

    def twin(x, w, b, rm, rv):  # torch's batch_norm takes no gradient for the running statistics
        return (x - rm.reshape(view)) / torch.sqrt(rv.reshape(view) + 1e-3) * w.reshape(view) + b.reshape(view)
    _check_gradients(nodes, out, twin, arrays, rng)


@pytest.mark.parametrize("case", sorted(BATCH_NORM))
def test_batch_norm_in_training_matches_torch_with_its_running_statistics(case, rng):
    shape = BATCH_NORM[case]
    nodes, arrays = _bn_nodes(shape), _bn_arrays(rng, shape)
    y, mean, var = ops.batch_norm(nodes["x"], nodes["rm"], nodes["rv"], nodes["w"], nodes["b"], training=True,
                                  momentum=0.3, eps=1e-3)
    t = {n: to_torch(v) for n, v in arrays.items()}
    want = F.batch_norm(t["x"], t["rm"], t["rv"], t["w"], t["b"], training=True, momentum=0.3, eps=1e-3)
    got = _reference(nodes, [y, mean, var], arrays)
    for g, w, what in zip(got, (want, t["rm"], t["rv"]), ("y", "running_mean", "running_var (unbiased)")):
        assert_close(g, w, rtol=1e-12, atol=1e-12, what=what)

    del nodes["rm"], nodes["rv"], arrays["rm"], arrays["rv"]  # y does not read them
    y, _, _ = ops.batch_norm(nodes["x"], None, None, nodes["w"], nodes["b"], training=True, eps=1e-3)

    def twin(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-3)
    _check_gradients(nodes, y, twin, arrays, rng)


def test_batch_norm_running_statistics_take_no_gradient(rng):
    nodes, arrays = _bn_nodes((4, 3)), _bn_arrays(rng, (4, 3))
    _, mean, var = ops.batch_norm(nodes["x"], nodes["rm"], nodes["rv"], training=True)
    gx, grm = kgen.grad(ops.sum(mean) + ops.sum(var), [nodes["x"], nodes["rm"]])
    got = kgen.reference.run(kgen.Graph(list(nodes.values()), [gx, grm]), arrays)
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_allclose(got[1], 0.9)  # (1 - momentum) * running


def test_batch_norm_momentum_none_is_the_cumulative_average(rng):
    """torch's momentum=None: the k-th batch (k counted from 1) moves the statistics by 1/k."""
    nodes, arrays = _bn_nodes((6, 2, 3)), _bn_arrays(rng, (6, 2, 3))
    count = kgen.tensor("count", (), "int64")
    _, mean, var = ops.batch_norm(nodes["x"], nodes["rm"], nodes["rv"], training=True, momentum=None,
                                  num_batches_tracked=count)
    graph = kgen.Graph(list(nodes.values()) + [count], [mean, var])
    module = torch.nn.BatchNorm1d(2, momentum=None, affine=False).double()
    module.running_mean.copy_(to_torch(arrays["rm"]))
    module.running_var.copy_(to_torch(arrays["rv"]))
    module.num_batches_tracked.fill_(4)
    module(to_torch(arrays["x"]))
    got = kgen.reference.run(graph, {**arrays, "count": np.int64(4)})
    assert_close(got[0], module.running_mean, rtol=1e-12, atol=1e-12, what="running_mean")
    assert_close(got[1], module.running_var, rtol=1e-12, atol=1e-12, what="running_var")


def test_batch_norm_in_training_without_running_statistics(rng):
    x = kgen.tensor("x", ("N", 3))
    y, mean, var = ops.batch_norm(x, None, None, training=True)
    assert mean is None and var is None
    values = random_array(rng, (5, 3)).astype(np.float64)
    (got,) = kgen.reference.run(kgen.Graph([x], [y]), {"x": values})
    assert_close(got, F.batch_norm(to_torch(values), None, None, training=True), rtol=1e-12, atol=1e-12)


def test_batch_norm_float32_kernels_match_the_reference(rng):
    x, w, b = kgen.tensor("x", ("N", 2, 3, 3)), kgen.tensor("w", (2,)), kgen.tensor("b", (2,))
    rm, rv = kgen.tensor("rm", (2,)), kgen.tensor("rv", (2,))
    y, mean, var = ops.batch_norm(x, rm, rv, w, b, training=True)
    loss = ops.sum(ops.relu(y) * ops.iota(y.shape, 3, "float32"))
    graph = kgen.Graph([x, w, b, rm, rv], [y, mean, var] + kgen.grad(loss, [x, w, b]))
    arrays = {"x": random_array(rng, (3, 2, 3, 3)), "w": random_array(rng, (2,)), "b": random_array(rng, (2,)),
              "rm": random_array(rng, (2,)), "rv": random_array(rng, (2,), positive=True)}
    assert kgen.check(graph, arrays, strict=True).ok


# --- kernel counts (R6 row kernels, E5, and the batch norm's reductions) --------------------------
def _kinds(graph):
    return [k.kind for k in kgen.compile(graph).kernels]


def test_layer_norm_forward_is_one_row_kernel_and_joins_a_matmul_epilogue():
    x, w = kgen.tensor("x", ("N", 64)), kgen.tensor("w", (32, 64))
    assert _kinds(kgen.Graph([x], [ops.layer_norm(x, 64, np.ones(64, np.float32))])) == ["reduction"]
    assert _kinds(kgen.Graph([x, w], [ops.layer_norm(x @ ops.transpose(w), 32)])) == ["matmul"]  # E5


def test_layer_norm_gradient_is_one_row_kernel():
    x, g = kgen.tensor("x", ("N", 64)), kgen.tensor("g", ("N", 64))
    (gx,) = kgen.grad(ops.sum(ops.layer_norm(x, 64) * g), [x])
    program = kgen.compile(kgen.Graph([x, g], [gx]))
    assert [k.kind for k in program.kernels] == ["reduction"]
    assert len(program.plan.groups[0].rows) == 3  # mean, variance and the gradient's two sums: one kernel


def test_linear_layer_norm_cross_entropy_step_kernel_count():
    """Pinned: Linear -> layer_norm -> cross_entropy, its gradient and an SGD update: 6 launches
    (9 kernels; 58 unfused). The layer norm runs in the matmul's epilogue (E5), its gradient
    in one row kernel; the cross-entropy rows are a row kernel of their own (they read the
    layer norm's output through that matmul kernel, a cycle R6 refuses)."""
    x, y = kgen.tensor("x", ("N", 32)), kgen.tensor("y", ("N",), "int32")
    w = kgen.shared(np.full((64, 32), 0.01, np.float32), name="w")
    gamma, beta = kgen.shared(np.ones(64, np.float32), name="gamma"), kgen.shared(np.zeros(64, np.float32), name="beta")
    loss = ops.cross_entropy(ops.layer_norm(x @ ops.transpose(w), 64, gamma, beta), y)
    params = [w, gamma, beta]
    step = kgen.function([x, y], loss, updates=[(p, p - 0.1 * g) for p, g in zip(params, kgen.grad(loss, params))])
    assert [k.kind for k in step.kernels] == ["pointwise", "matmul", "reduction", "combo", "combo", "combo"]
    assert len(step.program.plan.groups) == 9
    assert step.kernels[1].config_rule == "matmul_rows"
    assert unfused_stats(step.program.graph, {"N": 8})["launches"] == 58


def test_batch_norm_training_forward_and_step_kernel_counts():
    """Pinned: batch norm's per-channel statistics over N, H, W (N symbolic: no row kernel) are
    two reductions, mean then variance, with the running statistics' updates in their
    epilogues; y is one pointwise kernel. The backward's two sums per channel (of g and
    of g times x-hat) share one launch, and the input gradient is one pointwise kernel: a
    step x -> batch_norm -> relu -> mse with SGD on weight and bias takes 5 launches
    (9 kernels; 52 unfused)."""
    x, t = kgen.tensor("x", ("N", 4, 5, 5)), kgen.tensor("t", ("N", 4, 5, 5))
    w, b = kgen.shared(np.ones(4, np.float32), name="w"), kgen.shared(np.zeros(4, np.float32), name="b")
    rm, rv = kgen.shared(np.zeros(4, np.float32), name="rm"), kgen.shared(np.ones(4, np.float32), name="rv")
    y, mean, var = ops.batch_norm(x, rm, rv, w, b, training=True)
    assert _kinds(kgen.Graph([x, w, b, rm, rv], [y, mean, var])) == ["reduction", "reduction", "pointwise"]
    loss = ops.mse(ops.relu(y), t)
    gx, gw, gb = kgen.grad(loss, [x, w, b])
    step = kgen.function([x, t], [loss, gx], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb), (rm, mean), (rv, var)])
    assert [k.kind for k in step.kernels] == ["reduction", "reduction", "pointwise", "combo", "combo"]
    assert len(step.program.plan.groups) == 9
    assert unfused_stats(step.program.graph, {"N": 8})["launches"] == 52



def test_batch_norm_with_a_static_batch_is_one_row_kernel_forward_and_backward(rng):
    """With N static and N*H*W <= ROW_MAX, a channel's values are a row (R6): the statistics,
    y, the new running statistics and the gradients of x and weight are one kernel."""
    x, t, w = kgen.tensor("x", (6, 3, 4, 5)), kgen.tensor("t", (6, 3, 4, 5)), kgen.tensor("w", (3,))
    y, mean, var = ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), w, training=True)
    graph = kgen.Graph([x, t, w], [y, mean, var] + kgen.grad(ops.sum(y * t), [x, w]))
    assert _kinds(graph) == ["reduction"]
    arrays = {"x": random_array(rng, (6, 3, 4, 5)), "t": random_array(rng, (6, 3, 4, 5)), "w": random_array(rng, (3,))}
    assert kgen.check(graph, arrays, strict=True).ok

# --- errors -------------------------------------------------------------------------------------
def test_bad_arguments_are_named():
    x = kgen.tensor("x", ("N", 3, 4))
    with pytest.raises(kgen.ShapeError, match=r"normalized_shape must be one or more trailing dims of x, got \[3\]"):
        ops.layer_norm(x, 3)
    with pytest.raises(kgen.ShapeError, match="normalized_shape"):
        ops.layer_norm(x, ())
    with pytest.raises(kgen.ShapeError, match=r"layer_norm: weight must be \[3, 4\], got f32\[4\]"):
        ops.layer_norm(x, (3, 4), np.ones(4, np.float32))
    with pytest.raises(kgen.OptionError, match="layer_norm: eps must be a number >= 0, got -1.0"):
        ops.layer_norm(x, 4, eps=-1.0)
    with pytest.raises(kgen.OptionError, match="batch_norm: eps must be a number >= 0, got 'small'"):
        ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), eps="small")
    with pytest.raises(kgen.OptionError, match="momentum must be a number or None, got '0.1'"):
        ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True, momentum="0.1")
    with pytest.raises(kgen.ShapeError, match=r"takes x \[N, C\], \[N, C, L\] or \[N, C, H, W\], got f16\[3\]"):
        ops.batch_norm(kgen.tensor("v", (3,), "float16"), None, None, training=True)
    with pytest.raises(kgen.ShapeError, match=r"batch_norm: running_mean must be \[3\], got f32\[4\]"):
        ops.batch_norm(x, np.zeros(4, np.float32), np.ones(3, np.float32))
    with pytest.raises(kgen.KgenError, match="evaluation .* normalises with running_mean and running_var"):
        ops.batch_norm(x, None, None)
    with pytest.raises(kgen.KgenError, match="both running_mean and running_var, or neither"):
        ops.batch_norm(x, np.zeros(3, np.float32), None, training=True)
    with pytest.raises(kgen.OptionError, match="momentum=None .* needs num_batches_tracked"):
        ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True, momentum=None)
    with pytest.raises(kgen.DTypeError, match="num_batches_tracked must be an integer scalar"):
        ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True, momentum=None,
                       num_batches_tracked=kgen.tensor("c", (), "float32"))
    with pytest.raises(kgen.ShapeError, match="more than one value per channel"):
        ops.batch_norm(kgen.tensor("one", (1, 3)), None, None, training=True)
    with pytest.raises(kgen.ArgumentError, match="batch_norm"):
        ops.batch_norm(x, None, None, affine=True)


# --- ahead of time --------------------------------------------------------------------------------
def test_a_step_with_both_norms_compiles_for_sm80_and_sm90():
    x, t = kgen.tensor("x", ("N", 2, 3, 3)), kgen.tensor("t", ("N", 2, 3, 3))
    w = kgen.tensor("w", (2,))
    y, _, _ = ops.batch_norm(x, None, None, w, training=True)
    loss = ops.mse(ops.layer_norm(y, (3, 3)), t)
    program = kgen.compile(kgen.Graph([x, t, w], [loss] + kgen.grad(loss, [x, w])))
    binaries = aot.compile_program(program, targets=("sm_80", "sm_90"))
    targets = ("sm_80", "sm_90")
    assert [(b.kernel, b.target) for b in binaries] == [(k.name, t) for k in program.kernels for t in targets]
    assert all(b.cubin[:4] == b"\x7fELF" for b in binaries)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_normalised_in_float32(dtype, rng):
    """As torch: the statistics and arithmetic in float32, y in x's dtype, a running
    statistic in its own (float32 here); the kernels agree with the reference."""
    x, t = kgen.tensor("x", ("N", 3, 11), dtype), kgen.tensor("t", ("N", 3, 11), dtype)
    y = ops.layer_norm(x, 11, np.ones(11, np.float32))
    yb, mean, var = ops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    assert (y.dtype, yb.dtype, mean.dtype, var.dtype) == (kgen.ir.dtypes.dtype(dtype),) * 2 + (kgen.float32,) * 2
    assert {n.dtype for n in kgen.Graph([x], [y, yb]).nodes if n.op == "mean"} == {kgen.float32}
    loss = ops.sum(y * t) + ops.sum(yb * t)
    graph = kgen.Graph([x, t], [y, yb, mean, var] + kgen.grad(loss, [x]))
    arrays = {"x": random_array(rng, (4, 3, 11), dtype), "t": random_array(rng, (4, 3, 11), dtype)}
    assert kgen.check(graph, arrays, strict=True).ok
