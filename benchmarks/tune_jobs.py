"""Offline tuning spread over processes: the wall time of `kgen tune MODEL` (a zoo model's
training step, the cost model deciding, every candidate compiled afresh: empty Triton and
tune caches each run) with --jobs 1 and --jobs K, and what each way of starting worker
processes costs (fork, forkserver, spawn; kgen/autotune/workers.py chooses by these).
Runs alternate between the settings; each cache a run fills is compared with the first
run's, file by file (a spread run must decide and store exactly what a serial one does).
The load average is recorded: on a shared machine other work takes cores too.
Prints a table and writes benchmarks/results/DATE-DEVICE-tune-jobs.json.

    python benchmarks/tune_jobs.py [--model mlp128] [--jobs 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

START = r"""
import sys, time
import torch
from kgen.autotune import tuner  # torch and Triton imported, as in `kgen tune`
from kgen.autotune.workers import Workers
torch.ones(256, 256) @ torch.ones(256, 256)  # torch's threads started
start = time.perf_counter()
with Workers(2, method=sys.argv[1]) as pool:  # each worker has kgen's tuner imported, as a compile worker needs
    pool.map(tuner._us, [1.0] * 8)
print(time.perf_counter() - start)
"""


def tree(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def tune_once(model: str, jobs: int, targets: str, batch: int) -> tuple:
    """(wall seconds, CPU seconds of it and its workers, the cache's files) of one `kgen tune`
    in a fresh process with empty caches."""
    with tempfile.TemporaryDirectory(prefix="kgen-tune-jobs-") as scratch:
        scratch = Path(scratch)
        env = dict(os.environ, TRITON_CACHE_DIR=str(scratch / "triton"), KGEN_CACHE_DIR=str(scratch / "kgen"),
                   PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "kgen.cli", "tune", model, "--target", targets, "--batch", str(batch),
                   "--jobs", str(jobs), "--cache", str(scratch / "tune")]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return seconds, cpu, tree(scratch / "tune")


def start_cost(method: str) -> float:
    out = subprocess.run([sys.executable, "-c", START, method], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def device_name() -> str:
    return f"cpu-{platform.machine()}-{os.cpu_count()}threads"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp128")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--targets", default="sm_80,sm_90")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    load_before = os.getloadavg()
    starts = {method: round(start_cost(method), 2) for method in ("fork", "forkserver", "spawn")}
    runs, first_tree, identical = [], None, True
    for repeat in range(args.repeats):
        order = (1, args.jobs) if repeat % 2 == 0 else (args.jobs, 1)
        for jobs in order:
            seconds, cpu, files = tune_once(args.model, jobs, args.targets, args.batch)
            first_tree = files if first_tree is None else first_tree
            identical &= files == first_tree
            runs.append({"jobs": jobs, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                         "load_1min_after": round(os.getloadavg()[0], 2), "cache_files": len(files)})
            print(f"--jobs {jobs}: {seconds:.1f} s wall, {cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f})", flush=True)

    print(f"\n{args.model} training step, batch {args.batch}, targets {args.targets}, {os.cpu_count()} cores")
    print(f"{'jobs':>4} {'wall s per run':<24} {'best s':>7} {'CPU s per run':<24}")
    best = {}
    for jobs in sorted({r["jobs"] for r in runs}):
        times = [r["seconds"] for r in runs if r["jobs"] == jobs]
        cpus = [r["cpu_seconds"] for r in runs if r["jobs"] == jobs]
        best[jobs] = min(times)
        print(f"{jobs:>4} {', '.join(f'{t:.1f}' for t in times):<24} {best[jobs]:>7.1f} "
              f"{', '.join(f'{c:.1f}' for c in cpus):<24}")
    print(f"speed-up of the best runs: {best[1] / best[args.jobs]:.2f}x; every run's cache identical: {identical}")
    print("starting 2 workers, each with kgen's tuner imported, for 8 small jobs: "
          + ", ".join(f"{m} {s:.2f} s" for m, s in starts.items()))

    import kgen
    from results_io import write_result
    write_result("tune-jobs", {
        "device": device_name(), "kgen": kgen.__version__, "python": platform.python_version(),
        "what": f"kgen tune {args.model} --target {args.targets} --batch {args.batch} --jobs K, a fresh process "
                f"with empty Triton and tune caches per run (every candidate compiled)",
        "load_1min_before": round(load_before[0], 2), "runs": runs, "best_seconds": best,
        "speedup_best": round(best[1] / best[args.jobs], 3), "identical_caches": identical,
        "worker_start_seconds": starts,
        "worker_start_what": "Workers(2, method).map of a function of kgen's tuner over 8 items (each worker has "
                             "kgen.autotune.tuner imported: inherited, or imported once, or imported per worker), "
                             "torch and Triton imported in the parent"},
        device=device_name())


if __name__ == "__main__":
    main()
