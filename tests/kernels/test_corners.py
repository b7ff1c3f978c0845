"""Sizes 0 and 1, rank corners and fused views of templates: the programs issue 10 found
refused, crashing or killing the process, each beside its siblings (the same corner in
the other positions a kernel can meet it), run against the reference interpreter.

Each case is one program: a builder over inputs of the given shapes (a str dim is the
symbolic N, run at N = 3). It must compile, run, and match the reference.
"""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import ops
from conftest import random_array

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # empty and masked-off lanes

N = 3


def _case(build, *shapes):
    return build, shapes


CASES = {
    # a reshape or squeeze of a reduction's or a matmul's result, computed in its epilogue
    "squeeze_of_keepdims_sum_symbolic": _case(lambda x: ops.squeeze(ops.sum(x, 1, keepdims=True), 1), ("N", 7, 3)),
    "squeeze_of_keepdims_max_symbolic": _case(lambda x: ops.exp(ops.squeeze(ops.max(x, 2, keepdims=True), 2)), ("N", 2, 5)),
    "squeeze_of_softmax_over_a_unit_axis_symbolic": _case(lambda x: ops.squeeze(ops.softmax(x, axis=0), 0), (1, 3, "N")),
    "reshape_of_unit_axis_sum_symbolic": _case(
        lambda x: ops.reshape(ops.sum(x, 0, keepdims=True) * x, (-1,)), (2, "N", 3)),
    # a cast of a literal coordinate (an iota along a unit axis is the literal 0)
    "compare_float_with_iota_on_an_empty_view": _case(
        lambda x: ops.cast(x[::2, ::3] >= ops.iota((2, 0), 0, "int64"), "float32"), (1, 0)),
    "cast_of_unit_iota": _case(lambda x: x + ops.cast(ops.iota((1, 4), 0, "int32"), "float32"), (3, 1, 4)),
    "reshape_of_sum": _case(lambda x: ops.reshape(ops.sum(ops.exp(x), 1), (12, 5)), (4, 3, 15)),
    "reshape_of_batched_matmul": _case(lambda a, b: ops.reshape(a @ b, (4, 2, 16)) * 2.0, (4, 8, 3), (4, 3, 4)),
    "matmul_4d_by_1d": _case(lambda a, b: ops.matmul(a, b), (2, 2, 3, 4), (4,)),
    "matmul_1d_by_4d": _case(lambda a, b: ops.matmul(b, a), (2, 2, 3, 4), (3,)),
    "matmul_4d_by_1d_symbolic": _case(lambda a, b: ops.relu(ops.matmul(a, b)), ("N", 2, 3, 4), (4,)),
    "grad_of_broadcast_to_symbolic": _case(
        lambda x: kgen.grad(ops.sum(ops.broadcast_to(x, (3, "N", 6)) ** 2), [x])[0], ("N", 6)),
    # one element, for the counter-based generator
    "rand_of_one_element": _case(lambda x: x + ops.rand((1,), 1), (1,)),
    "rand_of_a_scalar": _case(lambda x: x + ops.rand((), 5), ()),
    "dropout_of_one_element": _case(lambda x: ops.dropout(x, 0.5, 3), (1, 1)),
    # rows of length 1: a row kernel's outputs over the rows look like ones over its results
    "softmax_of_matmul_with_one_column": _case(lambda a, b: ops.softmax(a @ b, -1), (4, 3), (3, 1)),
    "log_softmax_of_one_column": _case(lambda a: ops.log_softmax(ops.exp(a), 1), (4, 1)),
    "softmax_of_conv_with_w_1": _case(lambda x, w: ops.softmax(ops.conv2d(x, w), -1), (2, 3, 4, 1), (5, 3, 1, 1)),
    "softmax_of_conv_with_h_1": _case(lambda x, w: ops.softmax(ops.conv2d(x, w), 2), (2, 3, 1, 4), (5, 3, 1, 1)),
    # empty tensors
    "concatenate_empty_first_axis_0": _case(lambda a, b: ops.concatenate([a, b], 0), (0, 5), (5, 5)),
    "concatenate_empty_first_axis_1": _case(lambda a, b: ops.concatenate([a, b], 1), (5, 0), (5, 5)),
    "concatenate_empty_1d": _case(lambda a, b: ops.concatenate([a, b], 0), (0,), (3,)),
    "concatenate_empty_last": _case(lambda a, b: ops.exp(ops.concatenate([b, a], 0)), (0, 2), (3, 2)),
    "pad_of_empty": _case(lambda a: ops.pad(a, [(1, 1), (0, 0)]), (0, 4)),
    "softmax_of_empty_rows": _case(lambda a: ops.softmax(a, -1), (5, 0, 0)),
    "softmax_of_no_rows": _case(lambda a: ops.softmax(a, -1), (0, 4)),
    "max_over_empty_result": _case(lambda a: ops.max(a, 1), (0, 5)),
    "sums_over_empty_axes": _case(lambda a: ops.sum(a, 0) + ops.mean(a, 1, keepdims=True).sum(), (0, 5)),
    "matmul_with_no_rows": _case(lambda a, b: a @ b, (0, 5), (5, 3)),
    "matmul_with_empty_k": _case(lambda a, b: ops.relu(a @ b) + 1.0, (4, 0), (0, 3)),
    "conv_of_no_images": _case(lambda x, w: ops.conv2d(x, w), (0, 3, 5, 5), (2, 3, 3, 3)),
    "pool_of_no_images": _case(lambda x: ops.max_pool2d(x, 2), (0, 3, 4, 4)),
    "gradients_through_empty_matmul": _case(lambda a, b: ops.add(*[ops.sum(g) for g in kgen.grad(ops.sum(a @ b), [a, b])]),
                                            (0, 5), (5, 3)),
    # found by the fuzzer: the bias gradient rode in the weight gradient's GEMM, which had
    # no columns (no input channels) and so no program to compute it
    "bias_grad_of_conv_with_no_input_channels": _case(
        lambda x, w, b, g: kgen.grad(ops.sum(ops.conv2d(x, w, b) * g), [w, b]),
        (4, 0, 1, 4), (3, 0, 1, 3), (3,), (4, 3, 1, 2)),
    "bias_grad_of_linear_with_no_inputs": _case(
        lambda x, w, b, g: kgen.grad(ops.sum((x @ w + b) * g), [w, b]),
        (5, 0), (0, 3), (3,), (5, 3)),
    # an empty slice's gradient: the pad of an empty value, whose reshape divides by 0
    "grad_of_empty_slices": _case(lambda x: kgen.grad(ops.sum(x[2:-2:3, None, 3::1] * 2.0) + ops.sum(x), [x])[0], (1, 1)),
    "grad_of_empty_reshaped_slice": _case(
        lambda x: kgen.grad(ops.sum(ops.reshape(x[:, 4:], (0, 3)) * 2.0) + ops.sum(x), [x])[0], (3, 4)),
    # found by the fuzzer: a per-row value loaded under the row-and-element mask, then
    # stored per row (a block where one value per row was due)
    "row_value_read_per_element_then_per_row": _case(
        lambda a, b, c: kgen.grad(ops.sum(ops.maximum(ops.mean(a, 1, keepdims=True), b) * c), [a, b]),
        (7, 2), (7, 1), (7, 1)),
    "row_value_in_both_epilogues": _case(
        lambda a, b: [ops.exp(a - ops.max(a, 1, keepdims=True)) * b, b * 2.0 + ops.max(a, 1, keepdims=True)],
        (5, 3), (5, 1)),
    # a pad's guard that is the same for a whole program (a batch index): one-element blocks
    "strided_slice_of_batched_matmul_gradients": _case(
        lambda a, b, c: kgen.grad(ops.sum(ops.matmul(a, b)[:, ::2, :, 0:1:1] * c), [a, b]),
        (1, 2, 2, 1), (1, 1, 1), (1, 1, 2, 1)),
    "batch_slice_of_matmul": _case(lambda a, b: ops.relu(ops.matmul(a, b)[1::2] + 1.0), (4, 3, 2), (2, 5)),
    # reduced values reshaped to another keepdims-like shape and broadcast over the rows:
    # each row needs other rows' results, so it is not a row kernel's epilogue
    "reduced_values_broadcast_transposed": _case(
        lambda x: x * ops.reshape(ops.sum(x, 1, keepdims=True), (3, 4, 1)), (3, 4, 4)),
    "max_over_last_axis_broadcast_over_middle": _case(
        lambda x, g: kgen.grad(ops.sum(ops.broadcast_to(ops.max(x, 2), (1, 4, 4)) * g), [x])[0], (1, 4, 4), (1, 4, 4)),
    # pow of two tensors takes a negative base (an integer exponent: a sign; else NaN), and a
    # 0-d exponent is one value for every lane; tanh keeps a small x's digits
    "pow_of_tensors_and_tanh": _case(lambda a, b: a ** ops.cast(ops.cast(b * 3.0, "int32"), "float32") + ops.tanh(a * 1e-3),
                                     (4, 3), (3,)),
    "pow_with_a_scalar_tensor_exponent": _case(lambda a, b: ops.pow(a, b) * 2.0, (4, 3), ()),
    # rows of length 1, and an output of the row kernel reshaped: over the rows or over the
    # reduced values is ambiguous, so it takes a kernel of its own
    "log_softmax_of_one_column_matmul_reshaped": _case(
        lambda a, b: ops.expand_dims(ops.log_softmax(a @ b, axis=1), 0), (1, 2), (2, 1)),
    "softmax_over_unit_rows_reshaped": _case(lambda x: ops.reshape(ops.softmax(x, 1), (1, 3, 1)) + 1.0, (3, 1)),
    "log_softmax_of_unit_rows_symbolic_expanded": _case(
        lambda x: ops.expand_dims(ops.log_softmax(x * 2.0, axis=1), 2), ("N", 1)),
    "stack_of_empty": _case(lambda a, b: ops.stack([a, b], 1), (0, 3), (0, 3)),
    "empty_slice": _case(lambda a: a[2:2] * 2.0, (4, 3)),
}


def _concrete(shape):
    return tuple(N if isinstance(d, str) else d for d in shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corner_matches_the_reference(name, rng):
    build, in_shapes = CASES[name]
    inputs = [kgen.tensor(f"a{i}", s) for i, s in enumerate(in_shapes)]
    outputs = build(*inputs)
    f = kgen.function(inputs, list(outputs) if isinstance(outputs, (list, tuple)) else [outputs])
    arrays = [random_array(rng, _concrete(s)) for s in in_shapes]
    for got, want in zip(f(*arrays), kgen.reference.run(f.graph, arrays), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=1e-4, atol=1e-5)
    # again with every buffer poisoned (NaN) first: an element no kernel writes shows
    kgen.check(f.graph, {i.name: a for i, a in zip(inputs, arrays)}, strict=True)


@pytest.mark.parametrize("name", ["rand_of_one_element", "concatenate_empty_first_axis_0", "pad_of_empty",
                                  "matmul_4d_by_1d", "softmax_of_matmul_with_one_column",
                                  "squeeze_of_keepdims_sum_symbolic", "strided_slice_of_batched_matmul_gradients",
                                  "row_value_read_per_element_then_per_row", "pow_of_tensors_and_tanh",
                                  "pow_with_a_scalar_tensor_exponent", "log_softmax_of_one_column_matmul_reshaped"])
def test_corner_kernels_compile_for_a_gpu(name):
    """The code these corners take (a uniform generator offset, loads masked by a pad's
    guard, reshaped template results, rows of one) builds for sm_90, not only interpreted."""
    from kgen.kernels.aot import compile_program
    build, in_shapes = CASES[name]
    inputs = [kgen.tensor(f"a{i}", s) for i, s in enumerate(in_shapes)]
    outputs = build(*inputs)
    f = kgen.function(inputs, list(outputs) if isinstance(outputs, (list, tuple)) else [outputs])
    assert len(compile_program(f.program, targets=("sm_90",))) == len(f.program.kernels)
