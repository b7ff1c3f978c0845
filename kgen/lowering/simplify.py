"""Algebraic simplification and constant folding: rewrite rules as data, one driver.

Each rule is a function of a node (and of `uses`, how many nodes read a node) returning a
replacement node, or None where it does not apply; its docstring states its algebra. `simplify(graph)` applies the rules bottom-up
until none applies. Rules only produce equal values (bit-for-bit, except where a docstring
says so), and never change a graph's inputs or the dtypes and shapes of its outputs.
"""
from __future__ import annotations

import numpy as np

from kgen import ops
from kgen.ir import shapes
from kgen.ir.graph import Graph
from kgen.ir.node import Node


def _scalar_constant(node: Node):
    """The value of a scalar constant node (not a size expression), else None."""
    if node.op == "constant" and node.shape == () and not hasattr(node.attrs["value"], "free_symbols"):
        return node.attrs["value"]
    return None


def _same_shape(a: Node, b: Node) -> bool:
    return a.ndim == b.ndim and all(shapes.dims_equal(x, y) for x, y in zip(a.shape, b.shape))


def transpose_of_transpose(node, uses):
    """transpose(transpose(x, p), q) -> transpose(x, p[q])"""
    if node.op == "transpose" and node.inputs[0].op == "transpose":
        inner = node.inputs[0]
        perm = tuple(inner.attrs["perm"][q] for q in node.attrs["perm"])
        return ops.transpose(inner.inputs[0], perm)
    return None


def transpose_of_matmul(node, uses):
    """swap_last(a @ b) -> swap_last(b) @ swap_last(a)   (the transposes are free views, and
    the product then comes out in the layout its consumers read, so they can fuse into it);
    only where the transpose is the product's one reader, or the product would be computed twice"""
    if node.op != "transpose" or node.inputs[0].op != "matmul" or uses.get(node.inputs[0], 0) > 1:
        return None
    perm = list(range(node.ndim))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    if list(node.attrs["perm"]) != perm:
        return None
    a, b = node.inputs[0].inputs
    if a.ndim != b.ndim:
        return None  # a broadcast batch would change the shapes of the swapped product
    return ops.matmul(ops.swap_last(b), ops.swap_last(a))


def reshape_of_reshape(node, uses):
    """reshape(reshape(x, s), t) -> reshape(x, t)"""
    if node.op == "reshape" and node.inputs[0].op == "reshape":
        return ops.reshape(node.inputs[0].inputs[0], node.shape)
    return None


def identity_view(node, uses):
    """reshape/broadcast_to/transpose that changes nothing -> its input"""
    if node.opdef.kind == "view" and _same_shape(node, node.inputs[0]):
        if node.op != "transpose" or list(node.attrs["perm"]) == list(range(node.ndim)):
            return node.inputs[0]
    return None


def neutral_operand(node, uses):
    """x + 0 -> x, x - 0 -> x, x * 1 -> x, x / 1 -> x (when x already has the result's shape)"""
    neutral = {"add": (0, 0), "sub": (None, 0), "mul": (1, 1), "div": (None, 1)}.get(node.op)
    if neutral is None:
        return None
    for side, value in ((0, neutral[0]), (1, neutral[1])):
        other = node.inputs[1 - side]
        if value is not None and _scalar_constant(node.inputs[side]) == value and _same_shape(other, node):
            return other
    return None


def double_negation(node, uses):
    """-(-x) -> x"""
    if node.op == "neg" and node.inputs[0].op == "neg":
        return node.inputs[0].inputs[0]
    return None


def fold_scalar_constants(node, uses):
    """op(c1, c2, ...) on scalar constants -> constant (computed in the node's dtype)"""
    if node.opdef.kind != "elementwise" or not node.inputs:
        return None
    values = [_scalar_constant(i) for i in node.inputs]
    if any(v is None for v in values) or node.shape != ():
        return None
    arrays = [np.asarray(v, dtype=i.dtype.numpy) for v, i in zip(values, node.inputs)]
    with np.errstate(all="ignore"):
        result = node.opdef.reference(node, arrays, ())
    return ops.constant(np.asarray(result).astype(node.dtype.numpy).item(), node.dtype)


RULES = [transpose_of_transpose, transpose_of_matmul, reshape_of_reshape, identity_view,
         neutral_operand, double_negation, fold_scalar_constants]


def _rewrite(node: Node, uses: dict) -> Node:
    """`node` after applying rules at it until none applies."""
    for _ in range(32):  # each rule shrinks or reorders views; this bound is never reached
        for rule in RULES:
            replacement = rule(node, uses)
            if replacement is not None and replacement is not node:
                node = replacement
                break
        else:
            return node
    return node


def simplify(graph: Graph) -> Graph:
    readers = {}
    for node in graph.nodes:
        for i in set(node.inputs):
            readers[i] = readers.get(i, 0) + 1
    for o in graph.outputs:
        readers[o] = readers.get(o, 0) + 1
    rebuilt, uses = {}, {}
    for node in graph.nodes:
        if node.op == "input":
            rebuilt[node] = node
        else:
            inputs = tuple(rebuilt[i] for i in node.inputs)
            fresh = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.dtype, node.shape)
            rebuilt[node] = _rewrite(fresh, uses)
        uses[rebuilt[node]] = uses.get(rebuilt[node], 0) + readers.get(node, 0)
    return Graph(graph.inputs, [rebuilt[o] for o in graph.outputs])
