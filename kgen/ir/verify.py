"""The verifier: checks a Graph's invariants and names the first node that breaks one."""
from __future__ import annotations

from kgen.errors import KgenError, VerifyError
from kgen.ir import shapes
from kgen.ir.graph import Graph
from kgen.ir.optable import TABLE


def verify(graph: Graph) -> Graph:
    """Raise VerifyError unless every node is known, typed by its op's rule, and fed only by
    nodes of the graph; every input used is declared once. Returns the graph."""
    declared = set(graph.inputs)
    names = [i.name for i in graph.inputs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise VerifyError(f"graph inputs share the names {sorted(dupes)}")
    seen = set()
    for node in graph.nodes:
        where = graph.line(node)
        if node.op not in TABLE:
            raise VerifyError(f"unknown op in `{where}`")
        if node.op == "input" and node not in declared:
            raise VerifyError(f"`{where}` is used but is not one of the graph's inputs")
        for i in node.inputs:
            if i not in seen:
                raise VerifyError(f"`{where}` reads a value computed after it")
        if node.opdef.kind != "source":
            try:
                dtype, shape = node.opdef.infer(node.inputs, node.attrs)
            except KgenError as e:
                raise VerifyError(f"`{where}`: {e}") from None
            if dtype != node.dtype or len(shape) != len(node.shape) or not all(
                    shapes.dims_equal(a, b) for a, b in zip(shape, node.shape)):
                raise VerifyError(f"`{where}`: its op gives {dtype.short}{shapes.format_shape(shape)}")
        seen.add(node)
    return graph
