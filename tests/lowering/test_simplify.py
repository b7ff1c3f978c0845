"""The algebraic rewrite rules: each fires where its docstring says, keeps the graph's
values (checked against the reference on the unsimplified graph), and no more."""
import numpy as np

import kgen
from kgen import ops
from kgen.lowering.simplify import simplify
from conftest import random_array


def simplified(inputs, outputs):
    graph = kgen.Graph(inputs, outputs)
    return graph, simplify(graph)


def node_ops(graph):
    return [n.op for n in graph.nodes if n.op != "input"]


def same_values(before, after, values):
    for a, b in zip(kgen.reference.run(before, values), kgen.reference.run(after, values)):
        np.testing.assert_array_equal(a, b)


def test_rules_keep_values(rng):
    x, w = kgen.tensor("x", (3, 4)), kgen.tensor("w", (4, 5))
    outs = [ops.transpose(ops.transpose(x)) * 1.0 + 0.0, -(-x), ops.reshape(ops.reshape(x, (12,)), (2, 6)),
            ops.transpose(x @ w), (2.0 * 3.0) * x]
    before, after = simplified([x, w], outs)
    same_values(before, after, {"x": random_array(rng, (3, 4)), "w": random_array(rng, (4, 5))})
    assert "neg" not in node_ops(after)


def test_transpose_of_transpose_composes():
    x = kgen.tensor("x", (2, 3, 4))
    _, after = simplified([x], [ops.transpose(ops.transpose(x, (1, 2, 0)), (2, 0, 1))])
    assert after.outputs[0] is x


def test_transpose_of_matmul_swaps_operands():
    x, g = kgen.tensor("x", (6, 4)), kgen.tensor("g", (6, 3))
    _, after = simplified([x, g], [ops.transpose(ops.swap_last(x) @ g)])
    out = after.outputs[0]
    assert out.op == "matmul" and out.shape == (3, 4)


def test_transpose_of_a_shared_matmul_is_left_alone():
    x, w = kgen.tensor("x", (3, 4)), kgen.tensor("w", (4, 4))
    h = x @ w
    _, after = simplified([x, w], [h, ops.transpose(h)])
    assert sum(op == "matmul" for op in node_ops(after)) == 1


def test_scalar_constants_fold_in_their_dtype():
    x = kgen.tensor("x", (3,))
    _, after = simplified([x], [x * (ops.constant(0.1) + ops.constant(0.2))])
    constants = [n for n in after.nodes if n.op == "constant"]
    assert len(constants) == 1 and constants[0].attrs["value"] == float(np.float32(0.1) + np.float32(0.2))


def test_neutral_operands_drop():
    x = kgen.tensor("x", (3,))
    _, after = simplified([x], [x + 0.0, 1.0 * x, x / 1.0, x - 0.0, 0.0 - x])
    assert all(o is x for o in after.outputs[:4])
    assert after.outputs[4].op == "sub"  # 0 - x is not x
