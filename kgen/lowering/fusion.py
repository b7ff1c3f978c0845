"""Fusion: decide which values are written to memory, and group the rest into kernels.

Every value not written to memory is computed inside the kernel that reads it (views become
index expressions there, elementwise ops become expressions). A value is written to memory
only for one of these reasons, each applied below by the function named with it:

  R1  it is a graph output                                     (`_must_write`)
  R2  it is a reduction or a template result (matmul, conv,    (`_must_write`,
      pooling): those kernels end in a store, unless its only   `_fuse_epilogues`)
      reader is its own kernel's epilogue (E1)
  R3  it is a template's operand (under any views): template    (`_must_write`)
      kernels read their operands from memory; a GEMM
      template's operand cast to a 16-bit float is not: the
      GEMM casts its tiles as it loads them (mixed precision)
  R4  inputs and array constants already live in memory;       (`_must_write`)
      scalar constants, sizes and iota are computed in place
  R5  an elementwise value read by several kernels is written   (`_shared_values`)
      once, unless recomputing it costs at most RECOMPUTE_LOADS
      buffer loads and RECOMPUTE_OPS ops (a row kernel, R6,
      counts as one kernel)
  R6  reductions over the same rows (one input shape, one set  (`_row_classes`,
      of axes, at most ROW_MAX elements per row) run in one      `_row_groups`)
      row kernel that holds each row in registers: softmax,
      log_softmax and cross-entropy with its gradient are one
      kernel; a reduction read only inside it is not written

Each written value roots a kernel, and kernels then merge:

  E1  an elementwise consumer of a reduction or of a template   (`_fuse_epilogues`)
      that allows it (OpDef.epilogue: matmul), or of an earlier
      epilogue output, is computed in that kernel's epilogue
      (bias, activation, residual, gradient scaling, optimizer
      updates), when every value between them keeps the
      producer's elements in place (same-shape elementwise ops
      and reshapes) and no cycle results
  E2  pointwise kernels over one shape that do not depend on    (`_merge_pointwise`)
      each other merge into one kernel with several outputs
  E3  a pointwise kernel that reads another's outputs at the    (`_fuse_epilogues`)
      same elements joins it (a momentum update, then the
      parameter update that reads it)
  E5  a row kernel (R6) over the rows of a matmul's result,     (`_rows_into_matmul`)
      or of its epilogue values, runs in that matmul's epilogue:
      its tile then spans whole rows (BLOCK_N >= N), so the
      logits, softmax and loss gradient never reach memory
  E4  a reduction over a GEMM's K axis (a matmul's or a         (`_side_reductions`)
      convolution's), kept over its rows or columns, of the
      buffer that GEMM reads as that operand, runs in the GEMM's
      loop with its epilogue: the bias gradient (and its
      update) with the weight gradient, reading g once; not
      when the GEMM's other extent may be 0 (no program would
      run the reduction)

  E6  the results of one multi-result template (the op table's  (`_join_results`)
      `results`: a persistent scan's last carries, stacked step
      outputs and history) are written by one kernel

and kernels then share launches:

  L1  kernels that do not depend on each other, directly or     (`_launches`)
      not, run in one launch (a combo kernel, kgen.kernels.combo),
      each at the earliest launch its inputs allow; a step then
      takes as many launches as its longest chain of kernels

Before fusion, loops are lowered (S1, kgen/lowering/loops.py): a scan runs as one persistent
kernel, or as its steps; `fuse` takes those decisions too.

Every rule that writes a value, fuses it or merges kernels, and every merge a rule
considered and refused, leaves a `Decision` in `FusionPlan.decisions` naming the rule and
the reason (`kgen.lowering.explain` prints them per kernel: `kgen stats MODEL --why`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kgen.errors import KgenError
from kgen.ir import shapes
from kgen.ir.graph import Graph
from kgen.ir.node import Node

RECOMPUTE_LOADS = 2
RECOMPUTE_OPS = 8
ROW_MAX = 1024  # R6: the longest row a row kernel holds in registers


@dataclass(frozen=True)
class Decision:
    """One fusion decision about one value: the rule, what it did, and why."""
    rule: str  # R1-R6, E1-E6 (kgen.lowering.fusion), S1 (kgen.lowering.loops), B3 (kgen.lowering.buffers)
    node: Node  # the value it is about
    outcome: str  # OUTCOMES
    reason: str  # one line, naming values as the graph text does (%3 relu)


OUTCOMES = ("written", "fused", "refused", "moved")


class Reasons:
    """The decisions of one fusion pass, and the graph's names to word them with."""

    def __init__(self, graph: Graph):
        self.names = graph.names()
        self.decisions = []

    def __call__(self, rule: str, node: Node, outcome: str, reason: str) -> None:
        assert outcome in OUTCOMES, outcome
        self.decisions.append(Decision(rule, node, outcome, reason))

    def name(self, node: Node) -> str:
        """`%3 relu`, or an input's name."""
        return self.names[node] if node.op == "input" else f"{self.names[node]} {node.op}"


@dataclass(eq=False)  # groups are compared (and hashed) by identity
class KernelGroup:
    kind: str  # pointwise | reduction | template
    roots: list  # the values this kernel writes
    anchor: Optional[Node] = None  # the reduction/template node a non-pointwise kernel computes
    epilogue: list = field(default_factory=list)  # pointwise roots computed after the anchor (E1)
    rows: list = field(default_factory=list)  # a row kernel's reductions after the anchor (R6)
    side: tuple = ()  # (reduction, its epilogue, kept over rows?) run in a GEMM's loop (E4)
    row_part: tuple = ()  # (reductions, their epilogue): a row kernel in a matmul's epilogue (E5)


@dataclass
class FusionPlan:
    graph: Graph
    written: set  # every node that lives in memory (inputs included)
    groups: list  # KernelGroup, in dependency order
    launches: list = field(default_factory=list)  # per launch, the indices of the groups it runs (L1)
    decisions: list = field(default_factory=list)  # Decision, in the order the rules made them


def is_in_memory_source(node: Node) -> bool:
    return node.op == "input" or (node.op == "constant" and node.shape != ())


def _must_write(graph: Graph, why: Reasons) -> set:
    written = {n for n in graph.nodes if is_in_memory_source(n)}  # R4
    for output in graph.outputs:  # R1
        if output not in written:
            why("R1", output, "written", "a graph output")
        written.add(output)
    for node in graph.nodes:
        if node.opdef.kind in ("reduction", "template"):  # R2
            why("R2", node, "written", f"a {node.opdef.kind}'s result: its kernel ends in a store")
            written.add(node)
    for node in graph.nodes:
        if node.opdef.kind == "template":  # R3
            for operand in node.inputs:
                while operand not in written and (operand.opdef.kind == "view"
                                                  or (node.opdef.gemm and _narrowing(operand))):
                    if operand.opdef.kind != "view":
                        why("R3", operand, "fused", f"cast as {why.name(node)} loads its operand tiles "
                            f"(its dot takes them narrow): {why.name(operand.inputs[0])} is read instead")
                    operand = operand.inputs[0]
                if operand.opdef.kind != "source":  # constants and iota are computed in place
                    why("R3", operand, "written", f"an operand of {why.name(node)}, a template that reads "
                        f"its operands from memory")
                    written.add(operand)
    return written


def _narrowing(node: Node) -> bool:
    """A cast of a float to a 16-bit float (mixed precision's GEMM operands: kgen.nn.precision)."""
    return node.op == "cast" and node.dtype.is_float and node.dtype.bits == 16 and node.inputs[0].dtype.is_float


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


def row_signature(node: Node):
    """R6: what a reduction's rows are (its input shape and axes), or None when it cannot
    run in a row kernel (its rows are longer than ROW_MAX, or of symbolic length)."""
    if node.opdef.kind != "reduction":
        return None
    (source,) = node.inputs
    axes = tuple(sorted(node.attrs["axes"]))
    length = shapes.numel([source.shape[a] for a in axes])
    if not isinstance(length, int) or length > ROW_MAX:
        return None
    return tuple(source.shape), axes


def _row_classes(graph: Graph, written: set) -> dict:
    """R6, as R5 counts kernels: each root that would run in a row kernel -> that kernel's
    key (its rows). A reduction goes by its rows; an elementwise root that reads one and is
    over its rows or over its result would be that kernel's epilogue (E1)."""
    key = {n: row_signature(n) for n in graph.nodes if row_signature(n) is not None}
    for root in (n for n in graph.nodes if n in written and n.opdef.kind == "elementwise"):
        for node in fused_nodes(root, written - {root}):
            for i in node.inputs:
                if i in key and (_same_shape(root, i.inputs[0]) or shapes.dims_equal(
                        shapes.numel(root.shape), shapes.numel(i.shape))):
                    key[root] = key[i]
    return key


def _shared_values(graph: Graph, written: set, why: Reasons) -> set:
    """R5: elementwise values computed by several kernels and too costly to recompute.

    One pass in creation (topological) order. Writing a value changes what later values
    cost and which kernels compute them, but never an earlier one's: its cost is above it,
    and the kernels that computed it through the written value become that one kernel."""
    readers = {}
    for node in graph.nodes:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)
    written, rows = set(written), _row_classes(graph, written)
    for node in sorted(graph.nodes, key=lambda n: n.id):
        if node in written or node.opdef.kind != "elementwise":
            continue
        kernels = len(_kernels_computing(node, readers, written, rows))
        if kernels < 2:
            continue
        loads, ops = _cost(node, written)
        cost = f"read by {kernels} kernels; recomputing it takes {loads} loads and {ops} ops"
        if loads > RECOMPUTE_LOADS or ops > RECOMPUTE_OPS:
            why("R5", node, "written", f"{cost}, more than {RECOMPUTE_LOADS} and {RECOMPUTE_OPS}")
            written.add(node)
            rows = _row_classes(graph, written)
        else:
            why("R5", node, "fused", f"{cost}, within {RECOMPUTE_LOADS} and {RECOMPUTE_OPS}: each computes it")
    return written


def _kernels_computing(node: Node, readers: dict, written: set, rows: dict) -> set:
    """The kernels that compute `node` (not written): the written values that read it
    through values that are not (a row kernel's roots count as one kernel)."""
    kernels, stack, seen = set(), list(readers.get(node, ())), set()
    while stack:
        reader = stack.pop()
        if reader in seen:
            continue
        seen.add(reader)
        if reader in written:
            kernels.add(rows.get(reader, reader))
        else:
            stack.extend(readers.get(reader, ()))
    return kernels


def _depends_through_others(node: Node, members: list, written: set, row_of: dict) -> bool:
    """Whether `node` reads one of `members` through a value another kernel writes. A value
    of another row kernel stands for all of that kernel's reductions (`row_of`), which run
    together: its other reductions' reads are its reads too."""
    def reads(value):
        return [i for v in row_of.get(value, [value]) for n in fused_nodes(v, written - {v})
                for i in n.inputs if i in written]
    stack, seen = [i for n in fused_nodes(node, written - {node}) for i in n.inputs if i in written], set()
    while stack:
        value = stack.pop()
        if value in seen or value in members or is_in_memory_source(value):
            continue
        seen.add(value)
        found = reads(value)
        if any(r in members for r in found):
            return True
        stack.extend(found)
    return False


def _row_groups(graph: Graph, written: set, why: Reasons) -> list:
    """R6: the reductions of each row kernel, in graph order. A reduction joins the first
    row kernel over its rows that it does not reach through another kernel (which would
    make a cycle), other row kernels counted whole."""
    groups, row_of = [], {}
    for node in graph.nodes:
        if node.opdef.kind != "reduction":
            continue
        signature = row_signature(node)
        if signature is None:
            (source,) = node.inputs
            length = shapes.numel([source.shape[a] for a in node.attrs["axes"]])
            why("R6", node, "refused", f"rows of {length} elements: a row kernel holds rows of a known length, "
                f"at most {ROW_MAX}")
            continue
        for members in groups:
            if row_signature(members[0]) != signature:
                continue
            if _depends_through_others(node, members, written, row_of):
                why("R6", node, "refused", f"not in the row kernel of {why.name(members[0])}: it reads that "
                    "kernel's values through another kernel (a cycle)")
                continue
            why("R6", node, "fused", f"in the row kernel of {why.name(members[0])}, over the same rows")
            members.append(node)
            break
        else:
            members = [node]
            groups.append(members)
        row_of[node] = members
    return groups


def group_nodes(group: KernelGroup, written: set) -> list:
    """Every node a kernel group computes (its roots, anchor, row and side reductions, and
    what they fuse, down to buffers)."""
    tops = group.roots + ([group.anchor] if group.anchor is not None else []) + group.rows \
        + ([group.side[0]] if group.side else []) + (list(group.row_part[0]) if group.row_part else [])
    return [n for t in tops for n in fused_nodes(t, written - {t})]


def group_reads(group: KernelGroup, written: set) -> set:
    """The buffers a kernel group reads."""
    return {i for n in group_nodes(group, written) for i in n.inputs if i in written}


def _dependencies(groups: list, written: set) -> list:
    """For each group, the indices of the groups whose outputs it reads."""
    producer = {root: gi for gi, g in enumerate(groups) for root in g.roots}
    deps = []
    for gi, g in enumerate(groups):
        reads = group_reads(g, written)
        deps.append({producer[r] for r in reads if r in producer} - {gi})
    return deps


def _reaches(deps, start, goal) -> bool:
    """Whether group `start` depends, directly or not, on group `goal` (`deps`: a list by
    group index, or a `_Dependencies` by group)."""
    stack, seen = [start], set()
    while stack:
        g = stack.pop()
        if g == goal:
            return True
        if g not in seen:
            seen.add(g)
            stack.extend(deps[g])
    return False


class _Dependencies:
    """Which groups read which others' outputs, computed once per pass and kept true as the
    pass merges groups (`absorb`). A merged group reads what its parts read and writes what
    they wrote, so its dependencies are its parts', and its parts' readers read it."""

    def __init__(self, groups: list, written: set):
        by_index = _dependencies(groups, written)
        self._deps = {g: {groups[d] for d in ds} for g, ds in zip(groups, by_index)}

    def __getitem__(self, group: KernelGroup) -> set:
        return self._deps[group]

    def absorb(self, host: KernelGroup, part: KernelGroup) -> None:
        """`host` now computes `part` too."""
        self._deps[host] = (self._deps[host] | self._deps.pop(part)) - {host, part}
        for group, deps in self._deps.items():
            if part in deps:
                deps.discard(part)
                if group is not host:
                    deps.add(host)

    def waits_on_other_path(self, group: KernelGroup, host: KernelGroup) -> bool:
        """Whether `group` reads something that needs `host` first through another group (so
        `host` cannot compute `group`: a cycle)."""
        return any(_reaches(self, d, host) for d in self[group] if d is not host)


def _same_shape(a: Node, b: Node) -> bool:
    return a.ndim == b.ndim and all(shapes.dims_equal(x, y) for x, y in zip(a.shape, b.shape))


def _keeps_elements_in_place(resident: list, root: Node, nodes: list) -> bool:
    """E1's shape condition: between the values a kernel holds (`resident`: its anchor and
    epilogue outputs, all over the anchor's elements) and `root` only same-shape
    elementwise ops and reshapes, so the epilogue reads them where the kernel holds them."""
    if not shapes.dims_equal(shapes.numel(root.shape), shapes.numel(resident[0].shape)):
        return False
    derived = set(resident)
    for node in sorted(nodes, key=lambda n: n.id):  # ids grow in creation (topological) order
        if node in derived or not any(i in derived for i in node.inputs):
            continue
        if node.op != "reshape" and (node.opdef.kind != "elementwise" or any(
                i in derived and not _same_shape(i, node) for i in node.inputs)):
            return False
        derived.add(node)
    return True


def _takes_epilogue(node: Optional[Node]) -> bool:
    return node is not None and (node.opdef.kind == "reduction" or node.opdef.epilogue)


def _resident(group: KernelGroup) -> list:
    """The values a kernel holds over its elements: its anchor (and a row kernel's other
    reductions) and epilogue outputs, or a pointwise kernel's outputs."""
    if group.anchor is None:
        return list(group.roots)
    return [group.anchor] + group.rows + group.epilogue


def _fits_rows(group: KernelGroup, root: Node, nodes: list) -> bool:
    """E1's shape condition in a row kernel: `root` is over the rows or over the reduced
    values, and reaches the kernel's values only through elementwise ops over either,
    reshapes between the reduced shapes, and broadcasts of a reduced value over the rows."""
    source = group.anchor.inputs[0]
    reduced = shapes.numel(group.anchor.shape)

    def over_reduced(n):
        return shapes.dims_equal(shapes.numel(n.shape), reduced)

    axes = set(group.anchor.attrs["axes"])

    def kept(n):  # the keepdims shape of the reduction: broadcast over the rows as is (a
        # reshape of the reduced values to [1,4,1] is not [1,1,4] kept, though both broadcast)
        return n.ndim == source.ndim and all(d == 1 if a in axes else shapes.dims_equal(d, e)
                                             for a, (d, e) in enumerate(zip(n.shape, source.shape)))

    if not (_same_shape(root, source) or over_reduced(root)):
        return False
    if not _same_shape(root, source) and shapes.dims_equal(shapes.numel(source.shape), reduced):
        return False  # rows of length 1: over the rows or over the reduced values? A kernel of its own.
    derived = set(_resident(group))
    for node in sorted(nodes, key=lambda n: n.id):
        if node in derived or not any(i in derived for i in node.inputs):
            continue
        ins = [i for i in node.inputs if i in derived]
        if node.opdef.kind == "elementwise" and _same_shape(node, source):
            ok = all(_same_shape(i, source) or (over_reduced(i) and kept(i)) for i in ins)
        elif node.opdef.kind == "elementwise" or node.op == "reshape":
            ok = over_reduced(node) and all(_same_shape(i, node) or node.op == "reshape" for i in ins)
        else:
            ok = node.op == "broadcast_to" and _same_shape(node, source) and kept(ins[0])
        if not ok:
            return False
        derived.add(node)
    return True


def _fits(group: KernelGroup, root: Node, nodes: list) -> bool:
    if group.rows or (group.anchor is not None and group.anchor.opdef.kind == "reduction"
                      and _same_shape(root, group.anchor.inputs[0]) and row_signature(group.anchor)):
        return _fits_rows(group, root, nodes)
    return _keeps_elements_in_place(_resident(group), root, nodes)


def _epilogue_refusal(group: KernelGroup, root: Node, nodes: list) -> str:
    """Why `group`, which writes a value `root` reads, cannot compute `root` (E1/E3), or ""."""
    if group.kind == "pointwise" and not _same_shape(group.roots[0], root):
        return f"its kernel runs over {list(group.roots[0].shape)}, this value over {list(root.shape)}"
    if group.kind != "pointwise" and not _takes_epilogue(group.anchor):
        return f"its kernel ({group.anchor.op}) takes no epilogue"
    if not _fits(group, root, nodes):
        return "its kernel holds its values at other elements than this value's (a reshape, broadcast or " \
               "reduction between them)"
    return ""


def _fuse_epilogues(groups: list, written: set, graph: Graph, why: Reasons) -> tuple:
    """E1 and E3, then R2's exception: a value read by nothing outside its own kernel (and
    not an output) stays unwritten."""
    deps = _Dependencies(groups, written)
    for group in [g for g in groups if g.kind == "pointwise"]:
        (root,) = group.roots
        nodes = fused_nodes(root, written - {root})
        reads = {i for n in nodes for i in n.inputs if i in written}
        hosts = []
        for producer in (g for g in groups if g is not group and any(r in reads for r in _resident(g))):
            refusal = _epilogue_refusal(producer, root, nodes)
            if refusal:
                why(_epilogue_rule(producer), root, "refused", f"not with {why.name(producer.roots[0])}: {refusal}")
            else:
                hosts.append(producer)
        if not hosts:
            continue
        host = max(hosts, key=lambda g: max(n.id for n in _resident(g)))  # the latest producer
        if deps.waits_on_other_path(group, host):
            why(_epilogue_rule(host), root, "refused", f"not with {why.name(host.roots[0])}: another of its "
                "inputs needs that kernel first (a cycle)")
            continue
        why(_epilogue_rule(host), root, "fused", f"in the epilogue of {why.name(host.anchor)}, at its elements"
            if host.anchor is not None else f"with {why.name(host.roots[0])}, reading its values at the same elements")
        host.roots.append(root)
        if host.anchor is not None:
            host.epilogue.append(root)
        groups.remove(group)
        deps.absorb(host, group)

    private = _private_values(groups, written, graph)
    for host in groups:
        held = ([host.anchor] if host.epilogue else []) + host.rows if host.anchor is not None \
            else (host.roots[:-1] if host.kind == "pointwise" else [])
        for value in private(host, held):
            why("R2", value, "fused", "not written: only its own kernel reads it")
            written = written - {value}
            host.roots.remove(value)
    return groups, written


def _epilogue_rule(host: KernelGroup) -> str:
    return "E1" if host.anchor is not None else "E3"


def _private_values(groups: list, written: set, graph: Graph):
    """R2's exception, for the groups as they are now: `private(host, values)` lists those of
    `values` that no other group reads and that are not graph outputs."""
    readers, outputs = {}, set(graph.outputs)
    for group in groups:
        for node in group_nodes(group, written):
            for i in node.inputs:
                readers.setdefault(i, set()).add(group)
    return lambda host, values: [v for v in values if v not in outputs and readers.get(v, set()) <= {host}]


def _merge_pointwise(groups: list, written: set, why: Reasons) -> list:
    """E2: merge independent pointwise groups over one shape (horizontal fusion)."""
    deps = _Dependencies(groups, written)
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(groups):
            for j in range(i + 1, len(groups)):
                b = groups[j]
                if a.kind == b.kind == "pointwise" and _same_shape(a.roots[0], b.roots[0]) \
                        and not _reaches(deps, a, b) and not _reaches(deps, b, a):
                    why("E2", b.roots[0], "fused", f"with {why.name(a.roots[0])}: pointwise over the same shape, "
                        "neither reading the other")
                    groups = groups[:j] + groups[j + 1:]
                    a.roots.extend(b.roots)
                    deps.absorb(a, b)
                    merged = True
                    break
            if merged:
                break
    return groups


def _base(node: Node) -> Node:
    """The value a GEMM operand reads under its views and a cast to half precision (E4: a
    reduction of a float32 gradient rides along the GEMM reading its float16 copy)."""
    while node.opdef.kind == "view" or _narrowing(node):
        node = node.inputs[0]
    return node


def gemm_extents(node: Node):
    """(M, N, K, the A operand, the B operand) of a template that is one GEMM, else None
    (the op table's `gemm`)."""
    gemm = node.opdef.gemm
    return gemm(node) if gemm else None


def _side_reductions(groups: list, written: set, why: Reasons) -> list:
    """E4: a reduction kernel joins the GEMM kernel whose K loop reads its input buffer, if
    that kernel surely runs a program for each of its rows (its other extent is not 0)."""
    deps = _Dependencies(groups, written)
    for reduction in [g for g in groups if g.kind == "reduction" and not g.rows]:
        anchor = reduction.anchor
        (source,) = anchor.inputs
        kept = shapes.numel(anchor.shape)
        length = shapes.numel([source.shape[a] for a in anchor.attrs["axes"]])
        if source not in written or any(not shapes.dims_equal(shapes.numel(r.shape), kept) for r in reduction.epilogue):
            continue
        for host in (g for g in groups if g.kind == "template" and not g.side and gemm_extents(g.anchor)):
            m, n, k, a, b = gemm_extents(host.anchor)
            if not shapes.dims_equal(length, k):
                continue
            if _base(a) is source and shapes.dims_equal(kept, m):
                rows = True
            elif _base(b) is source and shapes.dims_equal(kept, n):
                rows = False
            else:
                continue
            gemm = why.name(host.anchor)
            if not _surely_nonempty(n if rows else m):  # no tiles across, no program runs the reduction
                why("E4", anchor, "refused", f"not in the K loop of {gemm}: its {'N' if rows else 'M'} extent "
                    f"{n if rows else m} may be 0, and then no program would compute it")
                continue
            if _reaches(deps, reduction, host) or _reaches(deps, host, reduction):
                why("E4", anchor, "refused", f"not in the K loop of {gemm}: one needs the other's values")
                continue
            why("E4", anchor, "fused", f"in the K loop of {gemm}, which reads {why.name(source)} as its "
                f"{'A' if rows else 'B'} operand: {why.name(source)} is read once for both")
            host.side = (anchor, list(reduction.epilogue), rows)
            host.roots.extend(reduction.roots)
            groups.remove(reduction)
            deps.absorb(host, reduction)
            break
    return groups


def _surely_nonempty(extent) -> bool:
    """Whether `extent` is at least 1 in every call (a size symbol may be 0)."""
    try:
        return int(extent) > 0
    except TypeError:
        return False


def _rows_into_matmul(groups: list, written: set, graph: Graph, why: Reasons) -> tuple:
    """E5: a row kernel over rows of a 2-D matmul's values joins that matmul's epilogue when
    it reads nothing else the matmul's kernel produces and depends on it through no other
    kernel; the matmul's values only it read are then not written."""
    deps = _Dependencies(groups, written)
    for rows in [g for g in groups if g.kind == "reduction" and row_signature(g.anchor)]:
        source = rows.anchor.inputs[0]
        if source.ndim != 2 or tuple(rows.anchor.attrs["axes"]) != (1,):
            continue
        reads = group_reads(rows, written)
        for host in groups:
            if host.kind != "template" or not host.anchor.opdef.row_epilogue or host.anchor.ndim != 2 \
                    or host.side or host.row_part or not _same_shape(host.anchor, source):
                continue
            resident = set(_resident(host))
            if not (reads & resident):
                continue
            matmul = why.name(host.anchor)
            if any(r in host.roots and r not in resident for r in reads):
                why("E5", rows.anchor, "refused", f"not in the epilogue of {matmul}: it reads a value that kernel "
                    "writes at other elements")
                continue
            if deps.waits_on_other_path(rows, host):
                why("E5", rows.anchor, "refused", f"not in the epilogue of {matmul}: another of its inputs needs "
                    "that kernel first (a cycle)")
                continue
            why("E5", rows.anchor, "fused", f"in the epilogue of {matmul}, whose tiles then span whole rows")
            host.row_part = ([rows.anchor] + rows.rows, list(rows.epilogue))
            host.roots.extend(rows.roots)
            groups.remove(rows)
            deps.absorb(host, rows)
            for value in _private_values(groups, written, graph)(host, [host.anchor] + list(host.epilogue)):
                why("R2", value, "fused", "not written: only its own kernel reads it")
                written = written - {value}
                if value in host.roots:
                    host.roots.remove(value)
                if value in host.epilogue:
                    host.epilogue.remove(value)
            break
    return groups, written


def _join_results(groups: list, why: Reasons) -> list:
    """E6: the kernels of results of one multi-result template node family (same op, inputs
    and attributes but `result`) become one kernel writing them all."""
    families, joined = {}, []
    for group in groups:
        anchor = group.anchor
        if group.kind != "template" or not anchor.opdef.results:
            joined.append(group)
            continue
        key = (anchor.op, tuple(i.id for i in anchor.inputs),
               tuple((k, id(v) if isinstance(v, Graph) else v) for k, v in sorted(anchor.attrs.items())
                     if k != "result"))
        host = families.get(key)
        if host is None:
            families[key] = group
            joined.append(group)
            continue
        why("E6", anchor, "fused", f"written by the kernel of {why.name(host.anchor)}: results of one "
            f"{anchor.op} kernel")
        host.roots.extend(group.roots)
    return joined


def _launch_order(groups: list, written: set) -> list:
    """Groups in dependency order, keeping the graph's order where it is free."""
    deps = _dependencies(groups, written)
    order, placed = [], set()
    while len(order) < len(groups):
        ready = next((gi for gi in range(len(groups)) if gi not in placed and deps[gi] <= placed), None)
        if ready is None:  # a fusion rule broke its own no-cycle condition: say so, do not spin
            stuck = [groups[gi].roots[0] for gi in range(len(groups)) if gi not in placed]
            raise KgenError(f"internal error: the fusion plan's kernels depend on each other in a cycle "
                            f"(kernels writing {stuck[:4]}); please report this graph")
        order.append(groups[ready])
        placed.add(ready)
    return order


def _launches(groups: list, written: set) -> list:
    """L1: each group (in dependency order) goes to the launch after the latest one it reads."""
    deps = _dependencies(groups, written)
    level = []
    for gi in range(len(groups)):
        level.append(1 + max((level[d] for d in deps[gi]), default=-1))
    launches = [[] for _ in range(max(level, default=-1) + 1)]
    for gi, lv in enumerate(level):
        launches[lv].append(gi)
    return launches


def _kind(node: Node) -> str:
    kind = node.opdef.kind
    return kind if kind in ("reduction", "template") else "pointwise"


def fuse(graph: Graph, decisions=()) -> FusionPlan:
    """The fusion plan of `graph`; `decisions` are those made before it (S1's, lowering loops)."""
    why = Reasons(graph)
    why.decisions.extend(decisions)
    written = _shared_values(graph, _must_write(graph, why), why)
    rows = {members[0]: members for members in _row_groups(graph, written, why)}
    in_rows = {n for members in rows.values() for n in members[1:]}
    roots = [n for n in graph.nodes if n in written and not is_in_memory_source(n) and n not in in_rows]
    groups = [KernelGroup(_kind(r), [r] + rows.get(r, [r])[1:], r if _kind(r) != "pointwise" else None,
                          rows=rows.get(r, [r])[1:]) for r in roots]
    groups = _join_results(groups, why)
    groups, written = _fuse_epilogues(groups, written, graph, why)
    groups, written = _rows_into_matmul(groups, written, graph, why)
    groups = _side_reductions(_merge_pointwise(groups, written, why), written, why)
    groups = _launch_order(groups, written)
    return FusionPlan(graph, written, groups, _launches(groups, written), why.decisions)
