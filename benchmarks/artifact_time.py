"""Artifact times of a zoo model's training step (default: cnn, batch 64, sm_90).

  cold compile  a fresh process with empty Triton and kgen caches: trace + autodiff +
                lowering (the step) and kgen.compile_artifact (AOT compile of every kernel
                and writing the artifact), `--repeat` times per worker setting (serial, a
                pool forked for the compile, a pool started before tracing as `kgen
                compile` does), interleaved; the serial runs also say where the compile
                time goes (Triton's stages, summed)
  warm load     a fresh process: kgen.load of that artifact (hash checks included), the
                counters it moved (must be none), and its first call on this machine

Prints a table and writes benchmarks/results/DATE-DEVICE-artifact_time.json.

    python benchmarks/artifact_time.py [--model cnn] [--batch 64] [--target sm_90]
                                       [--workers 1,2,2p] [--repeat 3] [--loads 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_io import device_name, write_result  # noqa: E402

TARGETS = {"cold_compile_s": 5.0, "warm_load_s": 0.2}

COLD = r"""
import collections, json, resource, sys, time
start = time.perf_counter()
import kgen
import kgen.kernels.aot
from kgen.cli import _example_batch, _spec_and_model, _step
imported = time.perf_counter()
model, batch, target, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
workers, prestart = int(sys.argv[5].rstrip("p")), sys.argv[5].endswith("p")
stages = collections.Counter()
if workers == 1:  # where the time goes, summed over kernels (in this process only)
    from triton import knobs
    def listener(src, metadata, metadata_group, times, cache_hit):
        stages["setup"] += times.ir_initialization / 1e6
        for stage, us in times.lowering_stages:
            stages[stage] += us / 1e6
    knobs.compilation.listener = listener
spec, net = _spec_and_model(model)
x, y = _example_batch(spec, batch)
data = time.perf_counter()
pool = kgen.kernels.aot.CompilePool(workers) if prestart else None  # warms up while we trace
step = _step(spec, net, x, y, train=True)
built = time.perf_counter()
kgen.compile_artifact(step, out, targets=(target,), sizes={"N": batch}, workers=workers, pool=pool)
done = time.perf_counter()
if pool:
    pool.close()
used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"import_s": imported - start, "data_s": data - imported, "trace_lower_s": built - data,
                  "aot_and_write_s": done - built, "cold_compile_s": done - data,
                  "process_cpu_s": sum(u.ru_utime + u.ru_stime for u in used),
                  "kernels": len(step.kernels), "counters": kgen.counters.snapshot(),
                  "triton_stages_s": {k: round(v, 3) for k, v in stages.items()}}))
"""

LOAD = r"""
import json, sys, time
start = time.perf_counter()
import kgen
imported = time.perf_counter()
before = kgen.counters.snapshot()
artifact = kgen.load(sys.argv[1])
loaded = time.perf_counter()
row = {"import_s": imported - start, "load_s": loaded - imported, "load_counters": kgen.counters.since(before),
       "mode": artifact.mode}
if sys.argv[2] == "call":  # the first and second call (on the interpreter without a GPU)
    inputs = artifact.example_inputs()
    called = time.perf_counter()
    artifact(*inputs)
    first = time.perf_counter()
    artifact(*inputs)
    row.update(first_call_s=first - called, second_call_s=time.perf_counter() - first)
row["call_counters"] = kgen.counters.since(before)
print(json.dumps(row))
"""


def fresh(script: str, args: list, env: dict) -> tuple:
    """Run `script` in a fresh Python; its JSON result and the process's wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--target", default="sm_90")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()},{os.cpu_count()}p",
                        help="compile processes, one run each; a trailing p: started before tracing "
                             "(aot.CompilePool, as `kgen compile` does)")
    parser.add_argument("--repeat", type=int, default=3, help="cold compiles per worker setting (interleaved)")
    parser.add_argument("--loads", type=int, default=3, help="warm loads (fresh processes)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kgen-artifact-time-"))
    artifact = work / "artifact"
    compiles = []
    settings = list(dict.fromkeys(args.workers.split(",")))
    for workers in settings * args.repeat:
        caches = Path(tempfile.mkdtemp(dir=work))  # empty: a cold compile
        env = dict(os.environ, TRITON_CACHE_DIR=str(caches / "triton"), KGEN_CACHE_DIR=str(caches / "kgen"))
        load_before = os.getloadavg()[0]
        row, wall = fresh(COLD, [args.model, args.batch, args.target, artifact, workers], env)
        compiles.append({"workers": workers, "process_wall_s": wall, "loadavg_1min_before": load_before, **row})
    env = dict(os.environ, KGEN_CACHE_DIR=str(work / "load-cache"))
    loads = []
    for i in range(args.loads):
        row, wall = fresh(LOAD, [artifact, "call" if i == 0 else "load"], env)
        loads.append({"process_wall_s": wall, **row})
    size = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())

    print(f"{args.model} training step, batch {args.batch}, target {args.target}, on {device_name()} "
          f"({os.cpu_count()} cores); {compiles[0]['kernels']} kernels, artifact {size / 1e6:.2f} MB")
    print(f"{'cold compile':<24} {'trace+lower s':>13} {'AOT+write s':>11} {'total s':>8} {'process s':>9} "
          f"{'CPU s':>6} {'load avg':>8}")
    for r in compiles:
        label = f"{r['workers'].rstrip('p')} worker(s)" + (", early pool" if r["workers"].endswith("p") else "")
        print(f"{label:<24} {r['trace_lower_s']:>13.2f} {r['aot_and_write_s']:>11.2f} "
              f"{r['cold_compile_s']:>8.2f} {r['process_wall_s']:>9.2f} {r['process_cpu_s']:>6.1f} "
              f"{r['loadavg_1min_before']:>8.2f}")
    medians = {}
    for w in settings:
        times = sorted(r["cold_compile_s"] for r in compiles if r["workers"] == w)
        medians[w] = times[len(times) // 2]
        print(f"  {w:>3}: median {medians[w]:.2f} s, best {times[0]:.2f} s of {len(times)}")
    serial = next((r for r in compiles if r["workers"] == "1"), None)
    if serial:
        print("  serial compile by Triton stage (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in serial["triton_stages_s"].items()))
    print(f"{'warm load':<24} {'load s':>13} {'1st call s':>11} {'2nd call':>8} {'process s':>9} counters")
    for r in loads:
        calls = (f"{r['first_call_s']:>11.3f} {r['second_call_s']:>8.3f}" if "first_call_s" in r
                 else f"{'-':>11} {'-':>8}")
        print(f"{r['mode']:<24} {r['load_s']:>13.3f} {calls} {r['process_wall_s']:>9.2f} "
              f"{r['call_counters'] or 'none'}")
    best = min(medians.values())
    load = sorted(r["load_s"] for r in loads)[len(loads) // 2]
    print(f"targets: cold compile {best:.2f} s (median, best setting; target <= {TARGETS['cold_compile_s']} s), "
          f"warm load {load:.3f} s median (target <= {TARGETS['warm_load_s']} s) with "
          f"{'zero' if not any(r['call_counters'] for r in loads) else 'SOME'} compiles")

    import kgen
    import torch
    import triton
    write_result("artifact_time", {
        "device": device_name(), "cpu_count": os.cpu_count(), "kgen": kgen.__version__,
        "triton": triton.__version__, "torch": torch.__version__, "model": args.model, "batch": args.batch,
        "target": args.target, "kernels": compiles[0]["kernels"], "artifact_bytes": size, "targets": TARGETS,
        "cold_compile": compiles, "warm_load": loads,
        "summary": {"cold_compile_median_s": medians, "warm_load_median_s": load}})


if __name__ == "__main__":
    main()
