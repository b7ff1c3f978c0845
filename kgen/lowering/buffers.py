"""The buffer plan: where each value a program writes lives.

After fusion, every written value (FusionPlan.written) needs memory from the launch that
writes it to the last launch that reads it. The plan gives each one a storage slot:

  B1  a graph output gets a fresh tensor each run (the caller keeps it), except B3's
  B2  an intermediate value takes the slot of a value of the same dtype and size whose last
      reader ran in an earlier launch (liveness by launch: the parts of one combo launch
      run at once, so a slot is free only after the launch that last reads it)
  B3  an update `new` of a parameter or optimizer state `old` (a kgen.function update) is
      written in place, into `old`'s tensor, when nothing reads `old` after `new`'s kernel
      starts and that kernel reads `old` only to compute `new`, elementwise at the elements
      it writes (an optimizer update in a gradient's epilogue reads w[i], then writes w[i]).
      When another kernel of the same launch reads `old` (the input gradient reads the
      weight the weight gradient updates), the updating kernel moves to a later launch if
      one exists before anything that reads its results (no launch is added), and only
      if no kernel it reads an earlier in-place update's old value from would then run
      with or after that update's kernel
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kgen.ir import shapes
from kgen.ir.node import Node
from kgen.lowering.fusion import Decision, FusionPlan, fused_nodes, group_nodes, group_reads, is_in_memory_source


@dataclass
class BufferPlan:
    slot_of: dict = field(default_factory=dict)  # intermediate node -> slot index (B2)
    slots: list = field(default_factory=list)  # per slot, the first node stored there (shape, dtype)
    fresh: list = field(default_factory=list)  # outputs allocated per run (B1)
    inplace: dict = field(default_factory=dict)  # update node -> the input whose tensor it overwrites (B3)

    def describe(self, sizes: dict) -> dict:
        """Figures at concrete sizes: bytes held by slots, and without reuse."""
        def nbytes(n):
            return shapes.evaluate(shapes.numel(n.shape), sizes) * max(1, n.dtype.bits // 8)
        return {"slots": len(self.slots), "slot_bytes": sum(nbytes(n) for n in self.slots),
                "unshared_bytes": sum(nbytes(n) for n in self.slot_of),
                "inplace": len(self.inplace)}


def _launch_of(plan: FusionPlan) -> dict:
    """Group index -> launch index."""
    return {g: li for li, launch in enumerate(plan.launches) for g in launch}


def _reads_in_place(group, old: Node, new: Node, written: set) -> bool:
    """B3's kernel condition: `old` is read only in computing `new`, and every value
    computed from it is an elementwise op over old's shape (so each lane reads old where it
    writes new, before it writes)."""
    nodes = set(group_nodes(group, written))
    # Only new's own computation reads old: the kernel stores each root once it has
    # computed it, so another root reading old could load it after new overwrote it.
    own = set(fused_nodes(new, written - {new}))
    if any(old in n.inputs and n not in own for n in nodes):
        return False
    derived = {old}
    for node in sorted(nodes, key=lambda n: n.id):
        if any(i in derived for i in node.inputs):
            if node.opdef.kind != "elementwise" or node.shape != old.shape:
                return False
            derived.add(node)
    # a reduction or template computes its epilogue at its own elements, read flat
    anchor = group.side[0] if group.side and new in group.side[1] else group.anchor
    return anchor is None or shapes.dims_equal(shapes.numel(anchor.shape), shapes.numel(old.shape))


def plan_buffers(plan: FusionPlan, updates: dict = None) -> BufferPlan:
    """The buffer plan of `plan`; `updates` maps an update's new value to the input it
    replaces (from kgen.function's updates), for B3, which may move kernels between
    `plan.launches` (so plan the buffers before generating code)."""
    updates = updates or {}
    graph, written = plan.graph, plan.written
    launch = _launch_of(plan)
    producer = {r: gi for gi, g in enumerate(plan.groups) for r in g.roots}
    readers = {}
    for gi, group in enumerate(plan.groups):
        for value in group_reads(group, written):
            readers.setdefault(value, set()).add(gi)
    outputs = list(graph.outputs)
    out = BufferPlan()

    # B3: updates in place. Invariant, kept for every pair taken: each kernel other than
    # new's own that reads old runs in a launch before new's. A move can break it for an
    # earlier pair (the moved kernel reads that pair's old value), so each candidate is
    # checked against all pairs taken so far, at the launches it would leave.
    def safe(pairs, at):
        return all(at[r] < at[producer[n]] for n, o in pairs for r in readers.get(o, ()) if r != producer[n])

    for new, old in updates.items():
        if new not in producer or old in out.inplace.values() or old in outputs or outputs.count(new) != 1 \
                or new.shape != old.shape or new.dtype != old.dtype:
            continue
        gi = producer[new]
        if not _reads_in_place(plan.groups[gi], old, new, written):
            continue
        others = readers.get(old, set()) - {gi}
        later = max((launch[r] for r in others), default=-1) + 1  # the first launch after old's readers
        at = dict(launch)
        if later > launch[gi]:
            dependents = {r for root in plan.groups[gi].roots for r in readers.get(root, ())} - {gi}
            if later >= len(plan.launches) or any(launch[d] <= later for d in dependents):
                continue
            at[gi] = later
        if not safe([*out.inplace.items(), (new, old)], at):
            continue
        if at[gi] != launch[gi]:
            name = plan.graph.names()
            plan.decisions.append(Decision("B3", new, "moved", f"its kernel moved from launch {launch[gi]} to {later}, "
                                           f"after every other reader of {name[old]}, to write it in place"))
            plan.launches[launch[gi]].remove(gi)
            plan.launches[later].append(gi)
            launch[gi] = later
        out.inplace[new] = old

    # B1 and B2: outputs fresh, intermediates in reused slots, first fit by launch order
    free_after = []  # per slot: the launch after which it is free
    for li, groups in enumerate(plan.launches):
        for gi in groups:
            for value in plan.groups[gi].roots:
                if value in out.inplace:
                    continue
                if value in outputs:
                    out.fresh.append(value)
                    continue
                last = max((launch[r] for r in readers.get(value, ())), default=li)
                for si, first in enumerate(out.slots):
                    if free_after[si] < li and first.dtype == value.dtype and shapes.dims_equal(
                            shapes.numel(first.shape), shapes.numel(value.shape)):
                        break
                else:
                    si = len(out.slots)
                    out.slots.append(value)
                    free_after.append(-1)
                out.slot_of[value] = si
                free_after[si] = last
    assert all(not is_in_memory_source(n) for n in out.slot_of)
    return out
