"""Fusion: decide which values are written to memory, and group the rest into kernels.

Every value not written to memory is computed inside the kernel that reads it (views become
index expressions there, elementwise ops become expressions). A value is written to memory
only for one of these reasons, each applied below by the function named with it:

  R1  it is a graph output                                     (`_must_write`)
  R2  it is a reduction or a template result (matmul, conv,    (`_must_write`)
      pooling): those kernels end in a store
  R3  it is a template's operand (under any views): template    (`_must_write`)
      kernels read their operands from memory
  R4  inputs and array constants already live in memory;       (`_must_write`)
      scalar constants, sizes and iota are computed in place
  R5  an elementwise value read by several kernels is written   (`_shared_values`)
      once, unless recomputing it costs at most RECOMPUTE_LOADS
      buffer loads and RECOMPUTE_OPS ops

Each written value that is computed (not an input) roots one kernel: a reduction kernel, a
template kernel (matmul, ...), or a pointwise kernel. Pointwise kernels over the same shape that do not
depend on each other merge into one kernel with several outputs (`_merge_pointwise`).
"""
from __future__ import annotations

from dataclasses import dataclass

from kgen.ir import shapes
from kgen.ir.graph import Graph
from kgen.ir.node import Node

RECOMPUTE_LOADS = 2
RECOMPUTE_OPS = 8


@dataclass
class KernelGroup:
    kind: str  # pointwise | reduction | template
    roots: list  # the values this kernel writes


@dataclass
class FusionPlan:
    graph: Graph
    written: set  # every node that lives in memory (inputs included)
    groups: list  # KernelGroup, in launch order


def is_in_memory_source(node: Node) -> bool:
    return node.op == "input" or (node.op == "constant" and node.shape != ())


def _must_write(graph: Graph) -> set:
    written = {n for n in graph.nodes if is_in_memory_source(n)}  # R4
    written |= {o for o in graph.outputs}  # R1
    for node in graph.nodes:
        if node.opdef.kind in ("reduction", "template"):  # R2
            written.add(node)
        if node.opdef.kind == "template":  # R3
            for operand in node.inputs:
                while operand.opdef.kind == "view" and operand not in written:
                    operand = operand.inputs[0]
                if operand.opdef.kind != "source":  # constants and iota are computed in place
                    written.add(operand)
    return written


def fused_nodes(root: Node, written: set) -> list:
    """The nodes a kernel rooted at `root` computes: everything above it down to buffers."""
    out, stack, seen = [], [root], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        out.append(node)
        stack.extend(i for i in node.inputs if i not in written and i.opdef.kind != "source")
    return out


def _cost(node: Node, written: set) -> tuple:
    nodes = fused_nodes(node, written)
    loads = {i for n in nodes for i in n.inputs if i in written}
    return len(loads), len(nodes)


def _shared_values(graph: Graph, written: set) -> set:
    """R5: elementwise values computed by several kernels and too costly to recompute."""
    while True:
        kernels_of = {}
        for root in (n for n in graph.nodes if n in written and not is_in_memory_source(n)):
            for node in fused_nodes(root, written):
                if node is not root and node.opdef.kind == "elementwise":
                    kernels_of.setdefault(node, set()).add(root)
        costly = {n for n, roots in kernels_of.items() if len(roots) > 1
                  and (lambda c: c[0] > RECOMPUTE_LOADS or c[1] > RECOMPUTE_OPS)(_cost(n, written))}
        if not costly:
            return written
        # Write the earliest ones first: writing a value changes what later ones cost.
        first = min(costly, key=lambda n: n.id)
        written = written | {first}


def _kind(node: Node) -> str:
    kind = node.opdef.kind
    return kind if kind in ("reduction", "template") else "pointwise"


def _dependencies(groups: list, written: set) -> list:
    """For each group, the indices of the groups whose outputs it reads."""
    producer = {root: gi for gi, g in enumerate(groups) for root in g.roots}
    deps = []
    for g in groups:
        reads = {i for r in g.roots for n in fused_nodes(r, written) for i in n.inputs if i in written}
        deps.append({producer[r] for r in reads if r in producer} - {groups.index(g)})
    return deps


def _reaches(deps: list, start: int, goal: int) -> bool:
    stack, seen = [start], set()
    while stack:
        g = stack.pop()
        if g == goal:
            return True
        if g not in seen:
            seen.add(g)
            stack.extend(deps[g])
    return False


def _same_shape(a: Node, b: Node) -> bool:
    return a.ndim == b.ndim and all(shapes.dims_equal(x, y) for x, y in zip(a.shape, b.shape))


def _merge_pointwise(groups: list, written: set) -> list:
    """Merge independent pointwise groups over one shape (horizontal fusion)."""
    merged = True
    while merged:
        merged = False
        deps = _dependencies(groups, written)
        for i, a in enumerate(groups):
            for j in range(i + 1, len(groups)):
                b = groups[j]
                if a.kind == b.kind == "pointwise" and _same_shape(a.roots[0], b.roots[0]) \
                        and not _reaches(deps, i, j) and not _reaches(deps, j, i):
                    groups = groups[:j] + groups[j + 1:]
                    a.roots.extend(b.roots)
                    merged = True
                    break
            if merged:
                break
    return groups


def _launch_order(groups: list, written: set) -> list:
    """Groups in dependency order, keeping the graph's order where it is free."""
    deps = _dependencies(groups, written)
    order, placed = [], set()
    while len(order) < len(groups):
        for gi, g in enumerate(groups):
            if gi not in placed and deps[gi] <= placed:
                order.append(g)
                placed.add(gi)
                break
    return order


def fuse(graph: Graph) -> FusionPlan:
    written = _shared_values(graph, _must_write(graph))
    roots = [n for n in graph.nodes if n in written and not is_in_memory_source(n)]
    groups = [KernelGroup(_kind(r), [r]) for r in roots]
    groups = _merge_pointwise(groups, written)
    return FusionPlan(graph, written, _launch_order(groups, written))
