"""Slicing, padding and joining: x[...], ops.pad, ops.concatenate, ops.stack, ops.split.

Slices and pads are views: the kernel that reads one loads straight from the viewed buffer
(a pad under a guard), so none of them is ever a copy kernel of its own."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.errors import DTypeError, ShapeError
from conftest import assert_matches_reference, random_array


def _graph(inputs: dict, outputs):
    return kgen.Graph(list(inputs.values()), outputs)


# --- the reference: NumPy's indexing ---------------------------------------------------------
INDICES = [1, -1, slice(2, 5), slice(None, None, 2), slice(1, None, 3), slice(5, 2), (Ellipsis, 3),
           (slice(None), None, slice(1, 6, 4)), (None, 2, Ellipsis), (0, -2), (slice(-3, None), slice(None, -1, 2))]


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_indexing_means_numpys(rng, index):
    x = kgen.tensor("x", (6, 7))
    a = random_array(rng, (6, 7))
    got = kgen.reference.run(kgen.Graph([x], [x[index]]), {"x": a})[0]
    np.testing.assert_array_equal(got, a[index])


def test_pad_concatenate_stack_split_mean_numpys(rng):
    x, y = kgen.tensor("x", (3, 4)), kgen.tensor("y", (3, 2))
    a, b = random_array(rng, (3, 4)), random_array(rng, (3, 2))
    outs = [ops.pad(x, ((1, 0), (2, 3))), ops.pad(x, 1), ops.concatenate([x, y, x], axis=-1),
            ops.stack([y, y * 2.0], axis=1)] + ops.split(x, 2, axis=1)
    want = [np.pad(a, ((1, 0), (2, 3))), np.pad(a, 1), np.concatenate([a, b, a], -1),
            np.stack([b, b * 2], 1)] + np.split(a, 2, axis=1)
    for got, w in zip(kgen.reference.run(kgen.Graph([x, y], outs), {"x": a, "y": b}), want):
        np.testing.assert_array_equal(got, w)


# --- kernels against the reference ------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 13])
def test_slices_and_joins_in_pointwise_kernels(rng, n):
    x, y = kgen.tensor("x", ("N", 7)), kgen.tensor("y", ("N", 3))
    joined = ops.concatenate([ops.exp(x[:, 1::2]), y * 2.0, x[:, :2]], axis=1)
    outs = [joined, ops.pad(ops.relu(x), ((0, 0), (2, 1))), x[:, 2], ops.stack([y[:, 0], x[:, -1]], axis=1),
            ops.pad_strided(y, (0, 1), (1, 3), ("N", 9)) + 1.0]
    assert_matches_reference(kgen.Graph([x, y], outs),
                             {"x": random_array(rng, (n, 7)), "y": random_array(rng, (n, 3))})


def test_nested_pads_combine_their_guards(rng):
    x = kgen.tensor("x", (5, 3))
    inner = ops.pad(ops.sqrt(ops.abs(x)), ((1, 1), (0, 2)))
    outer = ops.concatenate([ops.pad(inner[1:, ::2], ((2, 0), (1, 1))), ops.pad(x, ((3, 0), (0, 1)))], axis=1)
    assert_matches_reference(kgen.Graph([x], [outer]), {"x": random_array(rng, (5, 3))})


def test_slices_and_pads_read_by_reductions(rng):
    x = kgen.tensor("x", (7, 9))
    outs = [ops.sum(x[:, 1:8:3], axis=1), ops.max(ops.pad(x * -1.0, ((0, 0), (2, 2))), axis=1),
            ops.softmax(ops.concatenate([x[:, :4], x[:, 6:]], axis=1)), ops.mean(x[::2, :], axis=0)]
    assert_matches_reference(kgen.Graph([x], outs), {"x": random_array(rng, (7, 9))})


def test_slices_and_joins_as_matmul_operands(rng):
    x, y, w = kgen.tensor("x", ("N", 7)), kgen.tensor("y", ("N", 3)), kgen.tensor("w", (12, 5))
    joined = ops.concatenate([x[:, ::3], y, y[:, 1:] * 3.0, x[:, 4:]], axis=1)  # [N, 3 + 3 + 2 + 3 = 11]
    outs = [ops.matmul(joined, w[1:, :]), ops.matmul(x[:, 2:], w[:10:2, 1:4]) + 1.0, ops.relu(joined @ w[:11])[:, 1:3]]
    assert_matches_reference(kgen.Graph([x, y, w], outs),
                             {"x": random_array(rng, (13, 7)), "y": random_array(rng, (13, 3)),
                              "w": random_array(rng, (12, 5))})


def test_integer_and_bool_joins(rng):
    i, b = kgen.tensor("i", (4, 3), "int32"), kgen.tensor("b", (4, 2), "bool")
    outs = [ops.concatenate([i, i[:, :1] * 2], axis=1), ops.pad(b, ((1, 0), (0, 1))), ops.stack([i[:, 0], i[:, 2]])]
    assert_matches_reference(kgen.Graph([i, b], outs),
                             {"i": random_array(rng, (4, 3), "int32"), "b": random_array(rng, (4, 2), "bool")})


def test_gradients_through_slices_and_joins(rng):
    """A gate-style graph: one matmul's columns split four ways and joined back, and the
    gradient (pads of the parts' gradients) through the compiled kernels."""
    x, w = kgen.tensor("x", ("N", 5)), kgen.tensor("w", (5, 8))
    z = x @ w
    i, f, g, o = ops.split(z, 4, axis=1)
    h = ops.sigmoid(i) * ops.tanh(g) + ops.sigmoid(f) * ops.sigmoid(o)
    loss = ops.sum(ops.concatenate([h, h[:, ::2] * 2.0], axis=1) ** 2)
    gx, gw = kgen.grad(loss, [x, w])
    graph = kgen.Graph([x, w], [loss, gx, gw])
    assert "pad" in {n.op for n in graph.nodes}
    assert_matches_reference(graph, {"x": random_array(rng, (6, 5)), "w": random_array(rng, (5, 8))})


def test_views_are_never_copy_kernels():
    """A slice feeding a matmul and a concatenate feeding a reduction add no kernels."""
    x, w = kgen.tensor("x", ("N", 8)), kgen.tensor("w", (6, 4))
    program = kgen.compile(kgen.Graph([x, w], [x[:, 2:] @ w]))
    assert len(program.kernels) == 1
    program = kgen.compile(kgen.Graph([x], [ops.sum(ops.concatenate([x[:, :3], x[:, 5:] * 2.0], axis=1), axis=1)]))
    assert len(program.kernels) == 1


def test_indexing_a_slice_of_a_slice_reads_once(rng):
    x = kgen.tensor("x", (9, 11))
    y = x[1:, 2::2][::3, 1:4]
    program = kgen.compile(kgen.Graph([x], [y]))
    assert len(program.kernels) == 1 and program.source.count("tl.load(") == 1
    assert_matches_reference(kgen.Graph([x], [y]), {"x": random_array(rng, (9, 11))})


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda x: x[7], "index 7 is out of range for axis 0 of size 6"),
    (lambda x: x[:, ::-1], "needs a positive step"),
    (lambda x: x[1, 2, 3], "3 indices for 2 axes"),
    (lambda x: x[..., ...], "at most one '...'"),
    (lambda x: x["a"], "expected ints, slices, None or '...'"),
    (lambda x: ops.pad(x, -1), "widths must be ints >= 0"),
    (lambda x: ops.split(x, 4, axis=1), "does not divide into 4 equal parts"),
    (lambda x: ops.concatenate([x, x.T], axis=0), "tensor 1 is f32[7,6]"),
    (lambda x: ops.concatenate([], axis=0), "at least one tensor"),
    (lambda x: ops.slice_strided(x, (0, 5), (1, 1), (6, 3)), "cannot give 3 elements from 5"),
    (lambda x: ops.pad_strided(x, (0, 0), (1, 2), (6, 7)), "cannot place 7 elements"),
])
def test_bad_slicing_is_a_clear_error(build, message):
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(kgen.tensor("x", (6, 7)))


def test_symbolic_axes_are_taken_whole():
    x = kgen.tensor("x", ("N", 7))
    assert x[:, 1].shape == (x.shape[0],)
    with pytest.raises(ShapeError, match="axis 0 of f32\\[N,7\\] has the symbolic size N"):
        x[1:3]
    with pytest.raises(ShapeError, match="concatenate: axis 0"):
        ops.concatenate([x, x], axis=0)


def test_tensors_are_not_iterable():
    with pytest.raises(DTypeError, match="cannot be iterated"):
        list(kgen.tensor("x", (3,)))


def test_stats_count_the_window_a_slice_reads():
    """kgen stats counts a buffer read through slices (after elementwise ops too) as the
    slices' windows, at most the whole buffer; a matmul's operands count in full."""
    from kgen.lowering.stats import program_stats
    x, w = kgen.tensor("x", ("N", 7)), kgen.tensor("w", (3, 2))

    def bytes_read(*outputs):
        (kernel,) = program_stats(kgen.compile(kgen.Graph([x, w], list(outputs))), {"N": 10})["kernels"]
        return kernel["bytes_read"]

    assert bytes_read((x * 2.0 + 1.0)[:, 2] + x[:, 5]) == 2 * 10 * 4  # two columns of x
    assert bytes_read(x[:, 1:4] @ w) == (10 * 3 + 3 * 2) * 4
    assert bytes_read((x * 2.0)[:, 2:4] + x[:, 4:6]) == 4 * 10 * 4
    assert bytes_read(x[:, :4] + x[:, 3:7] * x[:, 0:4]) == 7 * 10 * 4  # 12 columns' worth: at most x
