"""Loops before fusion: each scan becomes one persistent kernel, or its steps (fusion rule S1).

  S1  a scan whose body fits the persistent scan template (kgen/lowering/scan_fit.py says
      what fits and why not) runs as one kernel (kgen/kernels/scan.py): its `scan` node
      family becomes the same family of that template's nodes, whose results one kernel
      writes (fusion rule E6), the carries in registers and the length a kernel argument, so
      a symbolic length compiles once. Any other scan of static length is replaced by its
      body applied once per step, in the scan's order, its scanned inputs read a step at a
      time through views (`xs[t]`), so the steps fuse like any other graph; the siblings of
      one family (the last carry, the stacked outputs, the history its gradient reads) share
      one unrolled recurrence, and a scan nested in a body is unrolled in the next round. A
      symbolic length with a body that does not fit is refused (a ShapeError with the reason).

Each decision is a fusion `Decision` (rule S1) about the scan node, whose reason names the
scan as the graph's text did; `kgen.lowering.explain.loop_decisions` lists them (`kgen stats
MODEL --why`).
"""
from __future__ import annotations

from kgen import ops
from kgen.errors import ShapeError
from kgen.ir.graph import Graph
from kgen.ir.node import Node
from kgen.ir.ops_loop import apply_body, persistent
from kgen.lowering.fusion import Decision
from kgen.lowering.scan_fit import refusal


def _steps(node: Node, inputs: tuple) -> dict:
    """{("carry" | "ys" | "history", i): value} of the scan `node` over `inputs`, unrolled."""
    attrs = node.attrs
    k, m, length = attrs["carries"], attrs["xs"], attrs["length"]
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


def _describe(node: Node, name: str) -> str:
    """`scan %3 (carries f32[4,8], 7 steps)`: a scan as the reasons name it."""
    body, k = node.attrs["body"], node.attrs["carries"]
    carries = ", ".join(c.type_str() for c in body.outputs[:k]) or "none"
    return f"scan {name} (carries {carries}, {node.attrs['length']} steps{', reversed' if node.attrs['reverse'] else ''})"


def _lower(node: Node, inputs: tuple, name: str, decisions: list) -> dict:
    """{result: value} of the scan `node` over `inputs`: the persistent template's family
    when its body fits, else its steps (S1)."""
    why = refusal(node)
    about = _describe(node, name)
    if not why:
        decisions.append(Decision("S1", node, "fused", f"{about}: one persistent kernel, the carries in registers "
                                  f"over the steps"))
        body, k = node.attrs["body"], node.attrs["carries"]
        kinds = [("carry", i) for i in range(k)] + [("ys", j) for j in range(len(body.outputs) - k)] + \
            [("history", i) for i in range(k)]
        return {r: persistent(Node("scan", inputs, {**node.attrs, "result": r})) for r in kinds}
    if not isinstance(node.attrs["length"], int):
        raise ShapeError(f"{about}: a symbolic length needs the persistent scan kernel, and the body does not fit "
                         f"it: {why}")
    decisions.append(Decision("S1", node, "refused", f"{about}: per-step kernels because {why}"))
    return _steps(node, inputs)


def unroll(graph: Graph, decisions: list = None) -> Graph:
    """`graph` with every scan replaced by one persistent kernel's results or by its steps
    (rounds until none is left); each choice is appended to `decisions` (S1)."""
    decisions = [] if decisions is None else decisions
    while any(n.op == "scan" for n in graph.nodes):
        rebuilt, families = {}, {}
        names = graph.names()
        for node in graph.nodes:
            if node.op == "input":
                rebuilt[node] = node
                continue
            inputs = tuple(rebuilt[i] for i in node.inputs)
            if node.op == "scan":
                key = (id(node.attrs["body"]), tuple(i.id for i in inputs), node.attrs["reverse"])
                if key not in families:
                    families[key] = _lower(node, inputs, names[node], decisions)
                rebuilt[node] = families[key][tuple(node.attrs["result"])]
            else:
                rebuilt[node] = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.dtype,
                                                                        node.shape)
        graph = Graph(graph.inputs, [rebuilt[o] for o in graph.outputs])
    return graph
