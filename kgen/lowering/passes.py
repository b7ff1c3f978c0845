"""Graph-to-graph passes run before fusion. Each returns a new Graph.

- unroll (kgen/lowering/loops.py): each scan becomes one persistent kernel's results, or
  its steps (fusion rule S1);
- simplify (kgen/lowering/simplify.py): algebraic rewrite rules and constant folding;
- cse: equal nodes (same op, same inputs, same attributes) become one. Unreachable nodes
  drop out as a side effect of rebuilding from the outputs (dead-code elimination).
"""
from __future__ import annotations

import numpy as np

from kgen.ir.graph import Graph
from kgen.ir.node import Node
from kgen.lowering.loops import unroll
from kgen.lowering.simplify import simplify


def _attr_key(value):
    if isinstance(value, np.ndarray):
        return ("array", id(value))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _attr_key(v)) for k, v in value.items()))
    if isinstance(value, float):
        return ("float", repr(value))  # 0.0 and -0.0 are different constants
    return (type(value).__name__, value)


def cse(graph: Graph) -> Graph:
    canonical, rebuilt = {}, {}
    for node in graph.nodes:
        if node.op == "input":
            rebuilt[node] = node
            continue
        inputs = tuple(rebuilt[i] for i in node.inputs)
        key = (node.op, tuple(i.id for i in inputs), node.dtype.name, _attr_key(node.attrs))
        if key not in canonical:
            same = inputs == node.inputs
            canonical[key] = node if same else Node(node.op, inputs, node.attrs, node.dtype, node.shape)
        rebuilt[node] = canonical[key]
    return Graph(graph.inputs, [rebuilt[o] for o in graph.outputs])


def optimize(graph: Graph, decisions: list = None) -> Graph:
    """The pass pipeline run by kgen.compile: lower loops (their S1 decisions appended to
    `decisions`), simplify (kgen.lowering.simplify), then CSE."""
    return cse(simplify(unroll(graph, decisions)))
