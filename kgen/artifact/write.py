"""Writing an artifact: a compiled kgen function, program or graph, its kernels compiled
ahead of time for named GPU targets, stored as a directory (see kgen.artifact.manifest)
that `kgen.load` runs with no tracing, lowering, tuning or, on a listed GPU, compiling.

Everything the loader needs is decided here: the buffer plan, each kernel's parameters and
grid rule (as expressions checked against `plan_launch`), and the config of every kernel
for every target and shape bucket (the autotune cache's, else the default).
The directory is built under a temporary name beside `out` and renamed into place, so a
failure leaves nothing half-written."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import sympy

from kgen.artifact import manifest as mf
from kgen.artifact.rules import LaunchRule
from kgen.autotune.cache import TuneCache
from kgen.autotune.tuner import config_for
from kgen.compiler import compile as compile_graph
from kgen.errors import KgenError
from kgen.function import Function
from kgen.ir import shapes
from kgen.ir.graph import Graph
from kgen.kernels import aot
from kgen.kernels.launch import default_config, plan_launch
from kgen.kernels.runtime import Program
from kgen.lowering.fusion import is_in_memory_source

DEFAULT_SIZE = 64


def compile_artifact(fn, out, targets=("sm_80", "sm_90"), sizes=None, workers: int = None,
                     pool: aot.CompilePool = None) -> Path:
    """Compile `fn` (a kgen Function, a compiled Program, or a Graph) for `targets` and
    write the artifact directory `out`; returns its path.

    `sizes` gives the shape buckets: a dict of size values ({"N": 64}) or a list of them;
    every kernel gets a config (and a binary per target) for each bucket, and a call is
    served by the smallest bucket that covers its sizes. Unnamed sizes default to 64.
    Kernels compile in `workers` processes (default: one per CPU core), or in `pool`, an
    aot.CompilePool started before `fn` was built so that its start-up overlaps that."""
    out = Path(out)
    _check_destination(out)
    program, roles = _program_and_roles(fn)
    targets = _targets(targets)
    buckets = _buckets(program.graph, sizes)
    buffers, key_of, slots = _buffer_plan(program)
    files = {mf.SOURCE: program.source.encode(), mf.GRAPH_TEXT: (str(program.graph) + "\n").encode()}
    for key, node in ((k, n) for n, k in key_of.items() if buffers[k]["kind"] == "constant"):
        buffers[key]["file"] = f"constants/{key}.npy"
        files[buffers[key]["file"]] = _npy(node.attrs["value"])

    kernels, jobs, fills, cache = [], [], [], TuneCache()
    for kernel in program.kernels:
        entry, kernel_jobs = _describe_kernel(program, kernel, key_of, targets, buckets, cache)
        kernels.append(entry)
        for job, fill in kernel_jobs:
            jobs.append(job)
            fills.append(fill)
    binaries = {}
    for (binary_id, config), binary in zip(fills, aot.compile_parallel(jobs, workers, pool)):
        files[f"{binary_id}.ptx"] = binary.ptx.encode()
        files[f"{binary_id}.cubin"] = binary.cubin
        files[f"{binary_id}.json"] = json.dumps(binary.metadata, indent=1, sort_keys=True).encode()
        binaries[binary_id] = {"kernel": binary.kernel, "target": binary.target, "config": config,
                               "ptx": f"{binary_id}.ptx", "cubin": f"{binary_id}.cubin",
                               "metadata": f"{binary_id}.json", "shared_bytes": binary.shared_bytes,
                               "num_warps": binary.num_warps, "registers": getattr(binary, "registers", None),
                               "spill_bytes": getattr(binary, "spill_bytes", None)}

    inputs, outputs, single = _interface(program, roles, key_of, files)
    manifest = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, **mf.versions(),
        "graph_sha256": mf.sha256(files[mf.GRAPH_TEXT]),
        "kind": roles["kind"], "source": mf.SOURCE, "graph_text": mf.GRAPH_TEXT,
        "sizes": sorted(buckets[0]), "buckets": buckets, "targets": targets,
        "buffers": buffers, "slots": slots, "inputs": inputs, "outputs": outputs, "single_output": single,
        "launch_order": [k["name"] for k in kernels], "kernels": kernels, "binaries": binaries,
        "files": {name: {"sha256": mf.sha256(data), "bytes": len(data)} for name, data in sorted(files.items())},
    }
    _write_directory(out, files, mf.seal(manifest))
    return out


# --- what is compiled -----------------------------------------------------------------------
def _program_and_roles(fn):
    """The Program of `fn` and the role of its graph's inputs and outputs."""
    if isinstance(fn, Function):
        program = fn.program
        state = set(fn.shared)  # shared variables are their own graph input nodes
        updates = [var for var, _ in fn.updates]
        return program, {"kind": "function", "state": state, "n_outputs": len(fn.outputs), "updates": updates,
                         "single": bool(getattr(fn, "single_output", False))}
    if isinstance(fn, Graph):
        fn = compile_graph(fn)
    if isinstance(fn, Program):
        return fn, {"kind": "program", "state": set(), "n_outputs": len(fn.graph.outputs), "updates": [],
                    "single": False}
    raise KgenError(f"compile_artifact: expected a kgen Function, Program or Graph, got {type(fn).__name__}")


def _targets(targets) -> list:
    if isinstance(targets, str):
        targets = targets.split(",")
    targets = list(dict.fromkeys(t.strip() for t in targets if t.strip()))
    if not targets:
        raise KgenError("compile_artifact: expected at least one target (e.g. sm_90), got none")
    for t in targets:
        aot.parse_target(t)
    return targets


def _buckets(graph, sizes) -> list:
    """The shape buckets: dicts binding every size name of the graph's inputs, sorted."""
    names = sorted(set().union(*(shapes.symbols_of(n.shape) for n in graph.inputs)))
    given = [{}] if sizes is None else ([sizes] if isinstance(sizes, dict) else list(sizes))
    buckets = []
    for bucket in given:
        if not isinstance(bucket, dict):
            raise KgenError(f"compile_artifact: a shape bucket is a dict like {{'N': 64}}, got {bucket!r}")
        unknown = sorted(set(bucket) - set(names))
        if unknown:
            raise KgenError(f"compile_artifact: size {unknown[0]!r} is not a size of the graph's inputs "
                            f"(those are: {', '.join(names) or 'none'})")
        for name, value in bucket.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KgenError(f"compile_artifact: size {name!r} must be a positive int, got {value!r}")
        full = {name: bucket.get(name, DEFAULT_SIZE) for name in names}
        if full not in buckets:
            buckets.append(full)
    return sorted(buckets, key=lambda b: [b[n] for n in names])


def _buffer_plan(program):
    """Every buffer of the program: inputs, array constants and the values kernels write,
    with symbolic shapes and dtypes; the key each node's buffer has in the manifest; and
    the storage slots that written values share (the program's BufferPlan, B1-B3 in
    kgen.lowering.buffers: a value in a slot is a view of it, an in-place update is
    written into the input it replaces, the rest get their own tensor)."""
    graph, names = program.graph, program.graph.names()
    plan = getattr(program, "buffers", None)
    slot_of, inplace = getattr(plan, "slot_of", {}), getattr(plan, "inplace", {})
    buffers, key_of = {}, {}

    def add(node, key, kind):
        key_of[node] = key
        buffers[key] = {"kind": kind, "name": names.get(node, key), "shape": [_dim(d) for d in node.shape],
                        "dtype": node.dtype.name, "node": graph.line(node)}

    for i, node in enumerate(graph.inputs):
        add(node, f"in{i}", "input")
    constants = [n for n in graph.nodes if n.op == "constant" and n.shape != ()]
    for i, node in enumerate(constants):
        add(node, f"c{i}", "constant")
    written = [n for n in graph.nodes if n in program.plan.written and not is_in_memory_source(n)]
    for i, node in enumerate(written):
        add(node, f"b{i}", "allocated")
        if node in slot_of:
            buffers[f"b{i}"]["slot"] = slot_of[node]
        elif node in inplace:
            buffers[f"b{i}"]["inplace"] = key_of[inplace[node]]
    slots = [{"shape": [_dim(d) for d in first.shape], "dtype": first.dtype.name}
             for first in getattr(plan, "slots", [])]
    return buffers, key_of, slots


def _dim(d):
    return d if isinstance(d, int) else str(d)


def _npy(value) -> bytes:
    stream = io.BytesIO()
    np.save(stream, np.array(value, order="C"), allow_pickle=False)  # (ascontiguousarray makes 0-d 1-d)
    return stream.getvalue()


# --- kernels --------------------------------------------------------------------------------
def _describe_kernel(program, kernel, key_of, targets, buckets, cache):
    """The manifest entry of `kernel`, and the compile jobs of its binaries, each with the
    (binary id, config) it fills."""
    params = []
    for p in kernel.params:
        param = {"name": p.name, "kind": p.kind, "signature": p.signature()}
        if p.kind in ("in", "out"):
            if p.node not in key_of:
                raise KgenError(f"kernel {kernel.name}: parameter {p.name} reads a value that has no buffer")
            param["buffer"] = key_of[p.node]
        elif p.kind == "int":
            param["expr"] = str(sympy.sympify(p.expr))
        elif p.kind == "scratch":  # kgen.kernels.splitk: elements (times constexpr `per`), kept zeroed or not
            param.update(dtype=p.dtype.name, numel=p.numel, per=p.per, zeroed=p.zeroed)
        params.append(param)
    grid = [{"extent": str(sympy.sympify(extent)), "block": block} for extent, block in kernel.grid]
    entry = {"name": kernel.name, "kind": kernel.kind, "config_rule": kernel.config_rule,
             "params": params, "grid": grid, "configs": {mf.INTERPRETER: []}}
    jobs, seen = [], {}
    for b, sizes in enumerate(buckets):
        config = default_config(kernel, sizes, interpreted=True)
        _check_launch_rule(kernel, entry, sizes, config, interpreted=True)
        entry["configs"][mf.INTERPRETER].append({"bucket": b, "config": config})
        for target in targets:
            config, source = target_config(kernel, sizes, target, cache)
            _check_launch_rule(kernel, entry, sizes, config, interpreted=False)
            key = (target, json.dumps(config, sort_keys=True))
            if key not in seen:
                seen[key] = f"{target}/{kernel.name}.{sum(t == target for t, _ in seen)}"
                jobs.append((aot.kernel_job(program.source, kernel, target, config), (seen[key], config)))
            entry["configs"].setdefault(target, []).append({"bucket": b, "config": config, "source": source,
                                                            "binary": seen[key]})
    return entry, jobs


def target_config(kernel, sizes: dict, target: str, cache: TuneCache) -> tuple:
    """(config, "tuned" or "default") of `kernel` at `sizes` on `target`: the autotune
    cache's tuned config, else the config family's default. Nothing is tuned here:
    `kgen tune` fills the cache."""
    config = dict(config_for(kernel, sizes, target, cache))
    return config, "tuned" if cache.lookup(kernel, sizes, target) is not None else "default"


def _check_launch_rule(kernel, entry, sizes, config, interpreted) -> None:
    """The stored grid and int-argument expressions give what `plan_launch` gives."""
    want = plan_launch(kernel, sizes, interpreted, config)
    got = LaunchRule(entry).at(sizes, config)
    if got != (tuple(want.grid), dict(want.ints)):
        raise KgenError(f"kernel {kernel.name}: the stored launch rule gives grid {got[0]} and ints {got[1]} "
                        f"at {sizes}, plan_launch gives {want.grid} and {want.ints}")


# --- inputs and outputs ---------------------------------------------------------------------
def _interface(program, roles, key_of, files):
    """The manifest's inputs (arguments and state, state values written to `files`), outputs
    (with the state input each update replaces), and whether a call returns one value."""
    graph = program.graph
    inputs, state_names = [], set()
    for node in graph.inputs:
        entry = {"buffer": key_of[node], "name": node.name, "role": "argument"}
        if node in roles["state"]:
            name = _unique(node.name, state_names)
            entry.update(name=name, role="state", value=f"state/{key_of[node]}.npy")
            files[entry["value"]] = _npy(node.get_value())
        inputs.append(entry)
    arguments = [i["name"] for i in inputs if i["role"] == "argument"]
    for name in arguments:
        if arguments.count(name) > 1:
            raise KgenError(f"compile_artifact: two inputs are named {name!r}; an artifact's inputs need "
                            f"distinct names")
    outputs = []
    for i, node in enumerate(graph.outputs):
        if i < roles["n_outputs"]:
            outputs.append({"buffer": key_of[node], "name": f"out{i}", "role": "output"})
        else:
            var = roles["updates"][i - roles["n_outputs"]]
            updated = next(e for e in inputs if e["buffer"] == key_of[var])
            outputs.append({"buffer": key_of[node], "name": f"new {updated['name']}", "role": "update",
                            "updates": updated["buffer"]})
    return inputs, outputs, roles["single"]


def _unique(name: str, taken: set) -> str:
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


# --- the directory ----------------------------------------------------------------------------
def _check_destination(out: Path) -> None:
    if out.exists() and not (out.is_dir() and ((out / mf.MANIFEST).exists() or not any(out.iterdir()))):
        raise KgenError(f"{out}: exists and is not a kgen artifact (nor empty); not overwriting it")


def _write_directory(out: Path, files: dict, manifest_text: str) -> None:
    """Write every file under a temporary directory beside `out`, then rename it to `out`
    (replacing an older artifact there)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in files.items():
            path = temp / mf.safe_relative(name, temp)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (temp / mf.MANIFEST).write_text(manifest_text)
        _check_destination(out)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "artifact")
        os.replace(temp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
