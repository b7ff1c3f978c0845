"""What a report shows of an artifact directory written by `kgen compile`, from its manifest,
kernels.py and graph.txt alone (no tracing or lowering): the IR, the kernels with their
provenance-linked source, what each reads and writes, each target's binary facts (registers,
spills, shared memory, occupancy) and config, and the buffer plan. Bytes, flops, fusion
decisions and predicted times need the program itself: the page says so."""
from __future__ import annotations

import re
from pathlib import Path

from kgen.artifact import manifest as mf
from kgen.autotune import costmodel
from kgen.report.collect import anchor, source_lines

_NODE = re.compile(r"^\s*(%\d+|[A-Za-z_][\w.]*): ")
_DOC_NODE = re.compile(r"^\s+(%\d+): ")


def kernel_text(source: str, name: str) -> str:
    """One kernel's function, decorator included, out of the module's source."""
    start = source.index(f"@triton.jit\ndef {name}(")
    end = source.find("\n@triton.jit", start + 1)
    return source[start:end if end >= 0 else len(source)].rstrip() + "\n"


def _lines(graph_text: str, inputs: list) -> list:
    """(name, line) of each node: the inputs (as their manifest records them), then graph.txt's body."""
    out = [(_NODE.match(text).group(1), text) for text in inputs]
    for line in graph_text.splitlines()[1:-1]:
        found = _NODE.match(line) if not line.startswith("   ") else None  # a loop body's nodes: no anchors
        out.append((found.group(1) if found else None, line.strip()))
    return out


def _facts(manifest: dict, name: str, target: str) -> dict:
    binary = next((b for b in manifest["binaries"].values() if b["kernel"] == name and b["target"] == target), None)
    if binary is None:
        return {"error": f"no {target} binary in this artifact (compiled for {', '.join(manifest['targets'])})"}
    row = {"config": binary["config"], "tuned": None, "key": None, "registers": binary["registers"],
           "spill_bytes": binary["spill_bytes"], "shared_bytes": binary["shared_bytes"], "error": ""}
    if target in costmodel.GPUS:
        resources = costmodel.Resources(binary["registers"], binary["spill_bytes"], binary["shared_bytes"],
                                        binary["registers"], True)
        blocks = costmodel.blocks_per_sm(target, binary["num_warps"], resources)
        row.update(occupancy=blocks * binary["num_warps"] * 32 / costmodel.gpu(target).max_threads_per_sm,
                   blocks_per_sm=blocks)
    return row


def _buffer_rows(manifest: dict, order: list) -> list:
    buffers, names = manifest["buffers"], {b["buffer"]: b["name"] for b in manifest["inputs"]}
    written_at, last_read = {}, {}
    for li, kernel in enumerate(order):
        for p in kernel["params"]:
            if p["kind"] == "out":
                written_at[p["buffer"]] = li
            elif p["kind"] == "in":
                last_read[p["buffer"]] = li
    slots, rows, fresh = {}, [], []
    for key, b in buffers.items():
        if key not in written_at:
            continue
        label, first = b["node"].split(" = ")[0], written_at[key]
        if "slot" in b:
            slots.setdefault(b["slot"], []).append((label, first, max(first, last_read.get(key, first)), False))
        elif "inplace" in b:
            old = b["inplace"]
            rows.append((names.get(old, old), "B3", [(f"{label} over {names.get(old, old)}",
                                                      min(first, last_read.get(old, first)), first, True)]))
        else:
            fresh.append((label, first, first, False))
    return [(f"slot {s}", "B2", sorted(spans, key=lambda t: t[1])) for s, spans in sorted(slots.items())] + rows \
        + ([("outputs", "B1", fresh)] if fresh else [])


def collect_artifact(directory: Path, history: dict = None, title: str = None) -> dict:
    """The page's data (as kgen.report.collect.collect gives it) for the artifact at `directory`."""
    manifest = mf.read(directory)
    files = mf.check_files(directory, manifest)
    source, graph_text = files[manifest["source"]].decode(), files[manifest["graph_text"]].decode()
    buffers = manifest["buffers"]
    inputs = [buffers[i["buffer"]]["node"] for i in manifest["inputs"]]
    nodes = _lines(graph_text, inputs)
    known = {name: line for name, line in nodes if name}
    by_name = {k["name"]: k for k in manifest["kernels"]}
    order = [by_name[name] for name in manifest["launch_order"]]
    computed_by, kernels = {}, []
    for li, k in enumerate(order):
        text = kernel_text(source, k["name"])
        lines = source_lines(text, known)
        for name in {m.group(1) for m in map(_DOC_NODE.match, text.splitlines()) if m}:
            computed_by.setdefault(name, []).append(k["name"])

        def labels(kind):
            return [buffers[p["buffer"]]["node"].split(" = ")[0] for p in k["params"] if p["kind"] == kind]
        kernels.append({"name": k["name"], "kind": k["kind"], "launch": li, "parts": [], "lines": lines,
                        "reads": labels("in"), "writes": labels("out"), "bytes_read": None, "bytes_written": None,
                        "flops": None, "why": None, "check": None,
                        "targets": {t: _facts(manifest, k["name"], t) for t in manifest["targets"]}})
    graph = [(anchor(name) if name else None, line, computed_by.get(name, [])) for name, line in nodes]
    return {"title": title or f"artifact {directory}", "sizes": manifest["buckets"][0], "targets": manifest["targets"],
            "versions": {"kgen": manifest["kgen_version"], "triton": manifest["triton_version"]},
            "summary": {"fused": {"launches": len(order), "bytes": None, "flops": None}, "unfused": None,
                        "compile_seconds": None, "aot_seconds": None, "buffers": None,
                        "note": "an artifact: bytes, flops, fusion decisions and predicted times need the program "
                                "(`kgen report MODEL`)"},
            "graph": graph, "kernels": kernels, "buffers": _buffer_rows(manifest, order), "history": history}
