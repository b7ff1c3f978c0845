"""Loops before fusion: a scan of static length becomes its steps.

Each `scan` node family (kgen/ir/ops_loop.py) is replaced by the body applied once per step,
in the scan's order, its scanned inputs read a step at a time through views (`xs[t]`), so
the steps fuse like any other graph: the per-step kernels the persistent recurrence template
(issue 14) is to replace. The siblings of one family (the last carry, the stacked outputs,
the history its gradient reads) share one unrolled recurrence. A scan nested in a body is
unrolled in the next round. A symbolic length cannot be unrolled and is refused here.
"""
from __future__ import annotations

from kgen import ops
from kgen.errors import ShapeError
from kgen.ir.graph import Graph
from kgen.ir.node import Node
from kgen.ir.ops_loop import apply_body


def _steps(node: Node, inputs: tuple) -> dict:
    """{("carry" | "ys" | "history", i): value} of the scan `node` over `inputs`, unrolled."""
    attrs = node.attrs
    k, m, length = attrs["carries"], attrs["xs"], attrs["length"]
    if not isinstance(length, int):
        raise ShapeError(f"scan of symbolic length {length}: kgen unrolls a scan into its steps, which needs the "
                         f"length when the program is compiled (the persistent loop template that takes it at run "
                         f"time is not built yet)")
    carries, xs, closure = list(inputs[:k]), inputs[k:k + m], inputs[k + m:]
    body = attrs["body"]
    ys, history = [[None] * length for _ in range(len(body.outputs) - k)], [[None] * length for _ in range(k)]
    for t in (reversed(range(length)) if attrs["reverse"] else range(length)):
        for i in range(k):
            history[i][t] = carries[i]
        carries, outs = apply_body(body, carries, [ops.getitem(x, t) for x in xs], closure)
        for j, y in enumerate(outs):
            ys[j][t] = y
    results = {("carry", i): c for i, c in enumerate(carries)}
    for kind, seqs, likes in (("ys", ys, body.outputs[k:]), ("history", history, body.outputs[:k])):
        for i, (seq, like) in enumerate(zip(seqs, likes)):
            results[(kind, i)] = ops.stack(seq, 0) if length else \
                ops.broadcast_to(ops.constant(0, like.dtype), (0,) + tuple(like.shape))
    return results


def unroll(graph: Graph) -> Graph:
    """`graph` with every scan replaced by its steps (rounds until none is left)."""
    while any(n.op == "scan" for n in graph.nodes):
        rebuilt, families = {}, {}
        for node in graph.nodes:
            if node.op == "input":
                rebuilt[node] = node
                continue
            inputs = tuple(rebuilt[i] for i in node.inputs)
            if node.op == "scan":
                key = (id(node.attrs["body"]), tuple(i.id for i in inputs), node.attrs["reverse"])
                if key not in families:
                    families[key] = _steps(node, inputs)
                rebuilt[node] = families[key][tuple(node.attrs["result"])]
            else:
                rebuilt[node] = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.dtype,
                                                                        node.shape)
        graph = Graph(graph.inputs, [rebuilt[o] for o in graph.outputs])
    return graph
