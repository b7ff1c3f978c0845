"""Fusion rule E1: elementwise consumers computed in the epilogue of the matmul or
reduction kernel that produces their input, checked against the reference."""
import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.ir import ops_conv
from kgen.kernels.combo import flatten
from conftest import assert_matches_reference, random_array


def plan_of(inputs, outputs):
    graph = kgen.Graph(inputs, outputs)
    return graph, kgen.compile(graph)


def kinds(program):
    return [k.kind for k in flatten(program.kernels)]


@pytest.mark.parametrize("n", [1, 7, 13])
def test_linear_layer_with_bias_and_relu_is_one_kernel(n, rng):
    x, w, b = kgen.tensor("x", ("N", 5)), kgen.tensor("w", (5, 3)), kgen.tensor("b", (3,))
    product = x @ w
    graph, p = plan_of([x, w, b], [ops.relu(product + b)])
    assert kinds(p) == ["matmul"] and product not in p.plan.written
    assert_matches_reference(graph, {"x": random_array(rng, (n, 5)), "w": random_array(rng, (5, 3)),
                                     "b": random_array(rng, (3,))})


def test_weight_update_in_the_gradient_matmul(rng):
    """w - lr * x^T g: the gradient never reaches memory."""
    x, g, w = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 3)), kgen.tensor("w", (4, 3))
    grad = ops.swap_last(x) @ g
    graph, p = plan_of([x, g, w], [w - 0.1 * grad])
    assert kinds(p) == ["matmul"] and grad not in p.plan.written
    assert_matches_reference(graph, {"x": random_array(rng, (9, 4)), "g": random_array(rng, (9, 3)),
                                     "w": random_array(rng, (4, 3))})


def test_bias_update_through_sum_to_reshape_in_the_reduction(rng):
    g, b = kgen.tensor("g", ("N", 3)), kgen.tensor("b", (3,))
    grad = ops.sum_to(g, (3,))  # sum over N with keepdims, then a reshape to [3]
    graph, p = plan_of([g, b], [b - 0.5 * grad])
    assert kinds(p) == ["reduction"]
    assert_matches_reference(graph, {"g": random_array(rng, (11, 3)), "b": random_array(rng, (3,))})


def test_scalar_reduction_epilogue(rng):
    x = kgen.tensor("x", ("N",))
    graph, p = plan_of([x], [-ops.mean(x) * 2.0 + 1.0])
    assert kinds(p) == ["reduction"]
    assert_matches_reference(graph, {"x": random_array(rng, (13,))})


def test_several_epilogue_outputs_like_an_adam_step(rng):
    x, g = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 2))
    w, m, v = (kgen.tensor(n, (4, 2)) for n in "wmv")
    grad = ops.swap_last(x) @ g
    m_new = 0.9 * m + 0.1 * grad
    v_new = 0.999 * v + 0.001 * grad * grad
    w_new = w - 0.01 * m_new / (ops.sqrt(v_new) + 1e-8)
    graph, p = plan_of([x, g, w, m, v], [w_new, m_new, v_new])
    assert kinds(p) == ["matmul"] and set(p.kernels[0].roots) == {w_new, m_new, v_new}
    values = {"x": random_array(rng, (7, 4)), "g": random_array(rng, (7, 2)), "w": random_array(rng, (4, 2)),
              "m": random_array(rng, (4, 2)), "v": random_array(rng, (4, 2), positive=True)}
    assert_matches_reference(graph, values)


def test_an_anchor_read_elsewhere_is_still_written(rng):
    x, w = kgen.tensor("x", ("N", 3)), kgen.tensor("w", (3, 3))
    h = x @ w
    graph, p = plan_of([x, w], [ops.relu(h), h.T @ x])
    assert h in p.plan.written and kinds(p) == ["matmul", "matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (5, 3)), "w": random_array(rng, (3, 3))})


def test_no_epilogue_when_it_would_need_a_later_kernel(rng):
    """h - rowsum(h) reads a reduction of h itself: as an epilogue of h's kernel (E1) it
    would be a cycle. It runs in the row kernel of the sum (R6), which itself runs in the
    matmul's epilogue (E5) since a tile holds h's whole rows; with rows too long for that,
    it stays a row kernel of its own."""
    x, w = kgen.tensor("x", ("N", 3)), kgen.tensor("w", (3, 4))
    h = x @ w
    graph, p = plan_of([x, w], [h - ops.sum(h, axis=1, keepdims=True)])
    assert kinds(p) == ["matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (6, 3)), "w": random_array(rng, (3, 4))})


def test_no_epilogue_when_the_anchor_is_broadcast_over_long_rows(rng):
    """Rows of symbolic length do not fit a row kernel: the broadcast consumer is a kernel."""
    x = kgen.tensor("x", ("N", "M"))
    row_max = ops.max(x, axis=1, keepdims=True)
    graph, p = plan_of([x], [x - row_max])
    assert kinds(p) == ["reduction", "pointwise"]
    assert_matches_reference(graph, {"x": random_array(rng, (4, 5))})


def test_broadcast_consumer_of_a_short_row_joins_the_row_kernel(rng):
    x = kgen.tensor("x", ("N", 5))
    row_max = ops.max(x, axis=1, keepdims=True)
    graph, p = plan_of([x], [x - row_max])
    assert kinds(p) == ["reduction"] and row_max not in p.plan.written
    assert_matches_reference(graph, {"x": random_array(rng, (4, 5))})


def test_matmul_with_unit_dims_and_an_epilogue(rng):
    x, w = kgen.tensor("x", (1, 4)), kgen.tensor("w", (4, 1))
    graph, p = plan_of([x, w], [ops.sigmoid(ops.squeeze(x @ w))])
    assert kinds(p) == ["matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (1, 4)), "w": random_array(rng, (4, 1))})


def test_epilogue_kernels_compile_for_gpus(rng):
    from kgen.kernels.aot import compile_program
    x, w, b = kgen.tensor("x", ("N", 5)), kgen.tensor("w", (5, 3)), kgen.tensor("b", (3,))
    g = kgen.tensor("g", ("N",))
    _, p = plan_of([x, w, b, g], [ops.relu(x @ w + b), 1.0 - ops.mean(g)])
    binaries = compile_program(p, ("sm_80", "sm_90"))
    assert len(binaries) == 2 * len(p.kernels) and all(b.cubin for b in binaries)


def test_momentum_then_parameter_update_is_one_pointwise_kernel(rng):
    """Rule E3: v' = 0.9 v + g and w' = w - lr v' over the same elements: one kernel, and
    v' is reused from registers rather than read back."""
    w, v, g = (kgen.tensor(n, (5, 3)) for n in "wvg")
    v_new = 0.9 * v + ops.exp(g)
    w_new = w - 0.01 * v_new
    graph, p = plan_of([w, v, g], [v_new, w_new])
    assert kinds(p) == ["pointwise"] and v_new not in p.kernels[0].reads
    assert_matches_reference(graph, {n: random_array(rng, (5, 3)) for n in "wvg"})


def test_an_intermediate_read_only_in_its_kernel_is_not_written(rng):
    x = kgen.tensor("x", ("N", 4))
    h = ops.exp(x) * 2.0
    graph, p = plan_of([x], [h.sum(axis=1), ops.tanh(h) + h])
    assert all(h not in k.roots for k in p.kernels)
    assert_matches_reference(graph, {"x": random_array(rng, (7, 4))})


def test_transposed_weight_gradient_feeds_its_update(rng):
    """transpose(x^T g) is rewritten to g^T x, so a torch-layout weight update fuses."""
    x, g, w = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 3)), kgen.tensor("w", (3, 4))
    graph, p = plan_of([x, g, w], [w - 0.1 * ops.transpose(ops.swap_last(x) @ g)])
    assert kinds(p) == ["matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (6, 4)), "g": random_array(rng, (6, 3)),
                                     "w": random_array(rng, (3, 4))})


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_conv_bias_and_relu_are_one_kernel(stride, padding, rng):
    x, w, b = kgen.tensor("x", ("N", 2, 7, 7)), kgen.tensor("w", (3, 2, 3, 3)), kgen.tensor("b", (3,))
    conv = ops.conv2d(x, w, stride=stride, padding=padding)
    graph, p = plan_of([x, w, b], [ops.relu(conv + ops.reshape(b, (1, 3, 1, 1)))])
    assert kinds(p) == ["conv"] and conv not in p.plan.written
    assert_matches_reference(graph, {"x": random_array(rng, (2, 2, 7, 7)), "w": random_array(rng, (3, 2, 3, 3)),
                                     "b": random_array(rng, (3,))})


def test_pool_gradient_with_the_relu_mask_is_one_kernel(rng):
    """max_pool2d_grad then the relu mask of the conv output it routes to: one pool kernel."""
    g, c = kgen.tensor("g", ("N", 3, 3, 3)), kgen.tensor("c", ("N", 3, 7, 7))
    dx = ops_conv.max_pool2d_grad(g, c, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    graph, p = plan_of([g, c], [ops.where(c > 0.0, dx, 0.0)])
    assert kinds(p) == ["pool"] and dx not in p.plan.written
    assert_matches_reference(graph, {"g": random_array(rng, (2, 3, 3, 3)), "c": random_array(rng, (2, 3, 7, 7))})


def test_adam_update_in_the_conv_weight_gradient(rng):
    """A conv weight gradient's consumers (an Adam-like update) run in its epilogue."""
    x, g = kgen.tensor("x", ("N", 2, 6, 6)), kgen.tensor("g", ("N", 3, 4, 4))
    w, m = kgen.tensor("w", (3, 2, 3, 3)), kgen.tensor("m", (3, 2, 3, 3))
    grad = ops_conv.conv2d_weight_grad(x, g, (3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
    m_new = 0.9 * m + 0.1 * grad
    graph, p = plan_of([x, g, w, m], [m_new, w - 0.01 * m_new / (ops.sqrt(grad * grad) + 1e-8)])
    assert kinds(p) == ["conv"] and grad not in p.plan.written
    assert_matches_reference(graph, {"x": random_array(rng, (2, 2, 6, 6)), "g": random_array(rng, (2, 3, 4, 4)),
                                     "w": random_array(rng, (3, 2, 3, 3)), "m": random_array(rng, (3, 2, 3, 3))})


# --- E4: side reductions -----------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 9, 70])
def test_bias_gradient_and_its_update_run_in_the_weight_gradient_matmul(n, rng):
    x, g = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 3))
    w, b = kgen.tensor("w", (3, 4)), kgen.tensor("b", (3,))
    grad_w, grad_b = ops.swap_last(g) @ x, ops.sum(g, 0)
    graph, p = plan_of([x, g, w, b], [w - 0.1 * grad_w, b - 0.1 * grad_b])
    assert kinds(p) == ["matmul"] and grad_b not in p.plan.written
    (kernel,) = p.kernels
    assert kernel.reads.count(g) == 1 and kernel.text.count("tl.load(in") == 4  # g's tile is loaded once
    assert_matches_reference(graph, {"x": random_array(rng, (n, 4)), "g": random_array(rng, (n, 3)),
                                     "w": random_array(rng, (3, 4)), "b": random_array(rng, (3,))})


def test_column_sums_of_the_b_operand_ride_along(rng):
    """x^T g with the bias gradient over g's columns (the B operand)."""
    x, g = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 3))
    graph, p = plan_of([x, g], [ops.swap_last(x) @ g, ops.sum(g, 0)])
    assert kinds(p) == ["matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (11, 4)), "g": random_array(rng, (11, 3))})


def test_conv_bias_gradient_runs_in_the_weight_gradient(rng):
    x, g = kgen.tensor("x", ("N", 2, 6, 6)), kgen.tensor("g", ("N", 3, 4, 4))
    grad_w = ops_conv.conv2d_weight_grad(x, g, (3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
    grad_b = ops.sum(g, (0, 2, 3))
    graph, p = plan_of([x, g], [grad_w, grad_b])
    assert kinds(p) == ["conv"]
    assert_matches_reference(graph, {"x": random_array(rng, (2, 2, 6, 6)), "g": random_array(rng, (2, 3, 4, 4))})


def test_a_sum_over_other_axes_is_not_a_side_reduction(rng):
    x, g = kgen.tensor("x", ("N", 4)), kgen.tensor("g", ("N", 3))
    graph, p = plan_of([x, g], [ops.swap_last(g) @ x, ops.sum(g, 1)])
    assert sorted(kinds(p)) == ["matmul", "reduction"]


# --- E5: a row kernel in a matmul's epilogue ------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 40])
def test_cross_entropy_and_its_gradient_in_the_logits_matmul(n, rng):
    """logits = h @ w + b; the loss rows and d(loss)/d(logits) in the matmul's epilogue:
    the logits never reach memory."""
    h, w, b = kgen.tensor("h", ("N", 6)), kgen.tensor("w", (6, 5)), kgen.tensor("b", (5,))
    y = kgen.tensor("y", ("N",), "int32")
    logits = h @ w + b
    loss = ops.cross_entropy(logits, y)
    (grad,) = kgen.grad(loss, [logits])
    graph, p = plan_of([h, w, b, y], [loss, grad])
    assert kinds(p)[0] == "matmul" and flatten(p.kernels)[0].config_rule == "matmul_rows"
    over_logits = [n for n in p.plan.written if n.shape == logits.shape and n.op != "input"]
    assert over_logits == [p.graph.outputs[1]]  # only the gradient is written
    assert_matches_reference(graph, {"h": random_array(rng, (n, 6)), "w": random_array(rng, (6, 5)),
                                     "b": random_array(rng, (5,)), "y": rng.integers(0, 5, n).astype(np.int32)})


def test_softmax_of_a_matmul_is_one_kernel(rng):
    x, w = kgen.tensor("x", ("N", 4)), kgen.tensor("w", (4, 7))
    graph, p = plan_of([x, w], [ops.softmax(x @ w)])
    assert kinds(p) == ["matmul"]
    assert_matches_reference(graph, {"x": random_array(rng, (9, 4)), "w": random_array(rng, (4, 7))})


def test_rows_longer_than_a_row_kernel_stay_out_of_the_matmul(rng):
    from kgen.lowering.fusion import ROW_MAX
    x, w = kgen.tensor("x", ("N", 4)), kgen.tensor("w", (4, ROW_MAX + 3))
    graph, p = plan_of([x, w], [ops.softmax(x @ w)])
    assert kinds(p)[0] == "matmul" and len(kinds(p)) > 1
