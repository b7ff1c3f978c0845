"""What a report shows, gathered from a compiled program as plain data (dicts and lists), so
the page (kgen.report.page) only formats it: the summary, the IR one node a line, the kernels
in launch order with their provenance, fusion decisions, figures, per-target compile facts
and predictions, and the buffer plan's lifetimes."""
from __future__ import annotations

import re
import time

import kgen
from kgen.autotune import costmodel
from kgen.autotune.cache import TuneCache, tune_key
from kgen.autotune.facts import gather
from kgen.autotune.tuner import config_for
from kgen.ir import shapes
from kgen.kernels.aot import parse_target
from kgen.lowering.explain import explain
from kgen.lowering.stats import program_stats, unfused_stats

# a generated line's provenance comment: `# %3 add` (an IR node) or `# x` (a load of input x)
_PROVENANCE = re.compile(r"#\s+(%\d+|[A-Za-z_][\w.]*)(?:\s+\w+)?\s*$")


def anchor(name: str) -> str:
    """The HTML id of an IR value: `n3` for %3, `in-<name>` for an input."""
    if name.startswith("%"):
        return f"n{name[1:]}"
    return "in-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def kernel_anchor(name: str) -> str:
    return "kernel-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def default_sizes(program, sizes: dict = None) -> dict:
    """`sizes` with every symbol of the program's inputs bound (64 where not given)."""
    sizes = dict(sizes or {})
    for node in program.graph.inputs:
        for name in shapes.symbols_of(node.shape):
            sizes.setdefault(str(name), 64)
    return sizes


def versions() -> dict:
    import torch
    import triton
    return {"kgen": kgen.__version__, "triton": triton.__version__, "torch": torch.__version__}


def graph_lines(graph, computed_by: dict, state_names: dict = None) -> list:
    """Per node, in the graph's order: (anchor or None, text, [kernel names computing it]);
    an input's line ends with its model name from `state_names` (`# 0.weight`), where given;
    a loop's body follows its node, unanchored."""
    names, lines, shown, state_names = graph.names(), [], set(), state_names or {}
    for node in graph.inputs:
        owner = f"  # {state_names[node.name]}" if node.name in state_names else ""
        lines.append((anchor(names[node]), graph.line(node) + owner, computed_by.get(node, [])))
    for node in graph.nodes:
        if node.op == "input":
            continue
        lines.append((anchor(names[node]), graph.line(node), computed_by.get(node, [])))
        body = node.attrs.get("body") if node.op == "scan" else None
        if body is not None and id(body) not in shown:
            shown.add(id(body))
            lines.extend((None, "    " + text, []) for text in str(body).splitlines())
    lines.append((None, "return " + ", ".join(names[o] for o in graph.outputs), []))
    return lines


def source_lines(text: str, known: dict) -> list:
    """Per line of a kernel's source: (code, anchor of the IR value its comment names or
    None, that value's IR line or "")."""
    out = []
    for line in text.splitlines():
        found = _PROVENANCE.search(line)
        name = found.group(1) if found else None
        if name in known:
            out.append((line, anchor(name), known[name]))
        else:
            out.append((line, None, ""))
    return out


def _label(graph, node) -> str:
    names = graph.names()
    return f"{names[node]}: {node.type_str()}"


def _why(program) -> dict:
    """The fusion decisions (kgen.lowering.explain) by launch kernel name, with each read's
    producer given as the launch kernel holding it (a combo's part is no section)."""
    names = [(k.name, [part.name for part in k.parts]) for k in program.kernels]
    launch_of = {part: k for k, parts in names for part in parts}
    launches = explain(program.plan, names)
    for launch in launches:
        for entry in launch["kernels"]:
            entry["reads"] = [(value, launch_of.get(source, source)) for value, source in entry["reads"]]
    return {launch["name"]: launch for launch in launches}


def target_facts(program, sizes: dict, targets: list, workers: int = None, cache: TuneCache = None) -> dict:
    """Per target, per kernel name: its config (tuned in the autotune cache, else the
    family's default) and cache key, the AOT compile's registers, spills and shared memory,
    and where the cost model has the target, occupancy and predicted time."""
    cache = cache if cache is not None else TuneCache()
    result = {}
    for target in targets:
        parse_target(target)
        configs = [config_for(k, sizes, target, cache) for k in program.kernels]
        facts = gather(program.source, list(zip(program.kernels, configs)), target, workers)
        per_kernel = {}
        for kernel, config, fact in zip(program.kernels, configs, facts):
            row = {"config": config, "tuned": cache.lookup(kernel, sizes, target) is not None,
                   "key": tune_key(kernel, sizes, target).digest(), "registers": fact.registers,
                   "spill_bytes": fact.spill_bytes, "shared_bytes": fact.shared_bytes, "error": fact.error}
            if target in costmodel.GPUS and fact.ok:
                row.update(_prediction(kernel, sizes, target, config, fact))
            per_kernel[kernel.name] = row
        result[target] = per_kernel
    return result


def _prediction(kernel, sizes, target, config, fact) -> dict:
    resources = costmodel.from_facts(fact)
    gpu = costmodel.gpu(target)
    warps = config.get("num_warps", 4)
    blocks = costmodel.blocks_per_sm(target, warps, resources)
    predicted = costmodel.predict(kernel, sizes, target, config, resources)
    return {"occupancy": blocks * warps * 32 / gpu.max_threads_per_sm, "blocks_per_sm": blocks,
            "predicted_us": predicted.us, "bound": predicted.bound}


def collect(program, sizes: dict = None, targets=("sm_80", "sm_90"), check=None, title: str = "kgen program",
            compile_seconds: float = None, workers: int = None, history: dict = None,
            state_names: dict = None) -> dict:
    """Everything the page shows of `program` at `sizes`; `check` is a kgen.check report
    (CheckReport) or None; `history` the per-epoch lists fit returns, or None;
    `state_names` the model's names of state inputs (input name -> `0.weight`), or None."""
    sizes = default_sizes(program, sizes)
    graph = program.graph
    names = graph.names()
    known = {names[n]: graph.line(n) for n in graph.nodes}
    known.update({names[n]: graph.line(n) for n in graph.inputs})
    computed_by = {}
    for k in program.kernels:
        for n in k.nodes:
            computed_by.setdefault(n, []).append(k.name)
    started = time.perf_counter()
    per_target = target_facts(program, sizes, list(targets), workers)
    aot_seconds = time.perf_counter() - started
    fused, unfused = program_stats(program, sizes), unfused_stats(graph, sizes)
    why, checks = _why(program), {r.kernel: r for r in (check.rows if check is not None else [])}
    kernels = []
    for li, (k, figures) in enumerate(zip(program.kernels, fused["kernels"])):
        check_row = checks.get(k.name)
        kernels.append({
            "name": k.name, "kind": k.kind, "launch": li, "parts": [p.name for p in k.parts],
            "lines": source_lines(k.text, known), "reads": [_label(graph, n) for n in k.reads],
            "writes": [_label(graph, n) for n in k.roots], "bytes_read": figures["bytes_read"],
            "bytes_written": figures["bytes_written"], "flops": figures["flops"], "why": why.get(k.name),
            "targets": {t: per_target[t][k.name] for t in targets},
            "check": None if check_row is None else {"error": check_row.error, "tolerance": check_row.tolerance,
                                                     "ok": check_row.ok}})
    return {"title": title, "sizes": sizes, "targets": list(targets), "versions": versions(),
            "summary": {"fused": {key: fused[key] for key in ("launches", "bytes", "flops")}, "unfused": unfused,
                        "compile_seconds": compile_seconds, "aot_seconds": aot_seconds,
                        "buffers": program.buffers.describe(sizes)},
            "graph": graph_lines(graph, computed_by, state_names), "kernels": kernels,
            "buffers": buffer_lifetimes(program, state_names),
            "history": history}


def buffer_lifetimes(program, state_names: dict = None) -> list:
    """The buffer plan as rows over launches: per slot (B2) the values it holds, each from
    the launch writing it to the last launch reading it; per state updated in place (B3),
    the launch overwriting it; the fresh outputs (B1). Each row: (label, rule, [(value,
    first launch, last launch, in_place)])."""
    graph, plan = program.graph, program.buffers
    names = {**graph.names(), **{n: state_names[n.name] for n in graph.inputs if n.name in (state_names or {})}}
    written_at, last_read = {}, {}
    for li, k in enumerate(program.kernels):
        for n in k.roots:
            written_at[n] = li
        for n in k.reads:
            last_read[n] = li
    rows = []
    for si in range(len(plan.slots)):
        held = sorted((n for n, s in plan.slot_of.items() if s == si), key=lambda n: written_at.get(n, 0))
        spans = [(_label(graph, n), written_at[n], max(written_at[n], last_read.get(n, written_at[n])), False)
                 for n in held if n in written_at]
        rows.append((f"slot {si}", "B2", spans))
    for new, old in plan.inplace.items():
        if new in written_at:
            first = min([written_at[new]] + [li for li, k in enumerate(program.kernels) if old in k.reads])
            rows.append((names[old], "B3", [(f"{_label(graph, new)} over {names[old]}", first, written_at[new],
                                             True)]))
    fresh = [(_label(graph, n), written_at[n], written_at[n], False) for n in plan.fresh if n in written_at]
    if fresh:
        rows.append(("outputs", "B1", fresh))
    return rows
