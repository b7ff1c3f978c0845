"""Why a program has the kernels it has: the fusion decisions (kgen.lowering.fusion's
`FusionPlan.decisions`, and B3's moves from kgen.lowering.buffers) gathered per kernel.

Each kernel lists the values it writes with the rules that write them (R1-R6: every
boundary between two kernels is a value one writes and the other reads), the values it
computes in place with the rule that put them there (E1-E5, R5's recomputation, R2's
exception), the merges a rule considered and refused, and the buffers it reads with the
kernel that wrote each. A launch of several kernels says L1.

    kgen stats cnn --train --why

Loops come first: how each scan was lowered (S1, kgen/lowering/loops.py), one persistent
kernel or per-step kernels and why (`loop_decisions`).
"""
from __future__ import annotations

from kgen.lowering.fusion import FusionPlan, group_nodes, group_reads, is_in_memory_source


def explain(plan: FusionPlan, names: list = None) -> list:
    """Per launch, a dict: `name`, `launch`, and `kernels`: per kernel group it runs (one,
    or a combo's parts under L1) its `name`, `writes` (value, [(rule, reason)]), `fused`,
    `refused`, `moved` (value, rule, reason) and `reads` (a buffer another kernel wrote, and
    that kernel's name; or an input or constant).
    `names`: per launch, the generated kernel's name and its parts' names (default k<i>)."""
    graph_names = plan.graph.names()
    label = {n: graph_names[n] if n.op == "input" else f"{graph_names[n]} {n.op}" for n in plan.graph.nodes}
    nodes = {gi: set(group_nodes(g, plan.written)) for gi, g in enumerate(plan.groups)}
    owner = {root: gi for gi, g in enumerate(plan.groups) for root in g.roots}
    group_name = {}
    for li, launch in enumerate(plan.launches):
        launch_name, parts = names[li] if names else (f"k{li}", [f"k{li}{chr(97 + j)}" for j in range(len(launch))])
        for j, gi in enumerate(launch):
            group_name[gi] = launch_name if len(launch) == 1 else parts[j]

    about = {gi: [] for gi in range(len(plan.groups))}
    for d in plan.decisions:
        at = [owner[d.node]] if d.node in owner else [gi for gi, ns in nodes.items() if d.node in ns]
        for gi in at:
            about[gi].append(d)

    def kernel(gi: int) -> dict:
        group, decisions = plan.groups[gi], about[gi]
        entry = {"name": group_name[gi], "writes": [], "fused": [], "refused": [], "moved": [], "reads": []}
        for root in group.roots:
            entry["writes"].append((label[root], [(d.rule, d.reason) for d in decisions
                                                  if d.node is root and d.outcome == "written"]))
        for d in decisions:
            if d.outcome != "written":
                entry[d.outcome].append((label[d.node], d.rule, d.reason))
        for value in sorted(group_reads(group, plan.written) - set(group.roots), key=lambda n: n.id):
            source = "input" if value.op == "input" else "constant" if is_in_memory_source(value) \
                else group_name[owner[value]]
            entry["reads"].append((label[value], source))
        return entry

    return [{"name": (names[li][0] if names else f"k{li}"), "launch": li, "kernels": [kernel(gi) for gi in launch]}
            for li, launch in enumerate(plan.launches)]


def loop_decisions(plan: FusionPlan) -> list:
    """Per scan of the compiled graph, (rule, outcome, reason) of its lowering (S1): one
    persistent kernel, or per-step kernels and why. The reason names the scan."""
    return [(d.rule, d.outcome, d.reason) for d in plan.decisions if d.rule == "S1"]


def format_explanation(launches: list, loops: list = ()) -> str:
    """The text `kgen stats --why` prints; `loops` from `loop_decisions`."""
    lines = [f"loop    {rule:<4}{reason}" for rule, _, reason in loops]
    for launch in launches:
        parts = launch["kernels"]
        lines.append(f"{launch['name']}  (launch {launch['launch']})")
        if len(parts) > 1:
            lines.append(f"  L1  {len(parts)} kernels that do not depend on each other share this launch "
                         f"(a combo kernel): {', '.join(k['name'] for k in parts)}")
        for k in parts:
            indent = "  " if len(parts) == 1 else "    "
            if len(parts) > 1:
                lines.append(f"  {k['name']}")
            written = [(value if i == 0 else "", rule, reason) for value, rules in k["writes"]
                       for i, (rule, reason) in enumerate(rules or [("", "(no rule recorded)")])]
            for outcome, rows in (("writes", written), ("fused", k["fused"]), ("refused", k["refused"]),
                                  ("moved", k["moved"])):
                for i, (value, rule, reason) in enumerate(rows):  # the outcome on its first row only
                    lines.append(f"{indent}{outcome if i == 0 else '':<8}{value:<28}{rule:<4}{reason}")
            if k["reads"]:
                lines.append(f"{indent}{'reads':<8}" + ", ".join(f"{v} ({src})" for v, src in k["reads"]))
    return "\n".join(lines)
