"""The GPU benchmark suite in one command (issue 4, part 6).

    python benchmarks/gpu_suite.py                         every section on this CUDA GPU
    python benchmarks/gpu_suite.py --only matmul,train_step --compile-modes default
    python benchmarks/gpu_suite.py --smoke --out /tmp/r    every section at tiny sizes, for CI

On a GPU, kgen's kernels are tuned (timed, checked against the reference) before they are
timed, in the --tune tier, as torch.compile's max-autotune tunes torch's; each row says
how long that took (kgen_tune_s).

Sections (benchmarks/gpu_<name>.py): pointwise (fused bandwidth vs copy), matmul (vs
torch.matmul), conv (vs cuDNN), epilogue (matmul+bias+relu vs eager), train_step (mlp128
and cnn vs torch eager and torch.compile, kgen with and without CUDA graphs), compile_load
(compile, AOT and artifact load times). Prints a table per section and the issue's targets
as pass/FAIL, and writes OUT/DATE-DEVICE-gpu_suite.json (OUT defaults to benchmarks/results).
Sections an earlier run wrote there (same day, device and versions) and this one did not
measure are kept: the suite can be run in parts (--only), each within a time limit.

Without a CUDA GPU it stops with exit status 2, unless --smoke: then kgen runs on Triton's
interpreter on CPU tensors against torch eager only (no torch.compile), timed by the wall
clock, so the figures say nothing about speed; it only proves the code runs. Exit status 1
means a section raised (its traceback is in the JSON); failed targets are results, not errors.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen.kernels import cudagraph  # noqa: E402
from kgen.files import atomic_write  # noqa: E402
from kgen.kernels.runtime import default_device  # noqa: E402
import gpu_compile_load  # noqa: E402
import gpu_conv  # noqa: E402
import gpu_epilogue  # noqa: E402
import gpu_matmul  # noqa: E402
import gpu_pointwise  # noqa: E402
import gpu_train_step  # noqa: E402
from gpu_common import Bench, device_name, device_slug, table  # noqa: E402

SECTIONS = {"pointwise": gpu_pointwise, "matmul": gpu_matmul, "conv": gpu_conv, "epilogue": gpu_epilogue,
            "train_step": gpu_train_step, "compile_load": gpu_compile_load}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
NO_GPU = ("gpu_suite: no CUDA GPU here (torch.cuda.is_available() is False), so there is nothing to "
          "measure. Run it on a machine with a CUDA GPU, or pass --smoke to run every section at tiny "
          "sizes on the CPU (Triton's interpreter) to check that the code works.")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, torch eager only, wall clock; runs on CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="directory for the JSON result (default: benchmarks/results)")
    parser.add_argument("--only", type=_names(SECTIONS), default=list(SECTIONS),
                        help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--tune", choices=("quick", "thorough", "none"), default="quick",
                        help="tune kgen's kernels on the GPU before timing them, as max-autotune tunes "
                             "torch's (default: quick; picks are kept in the autotune cache)")
    parser.add_argument("--compile-modes", type=_names(COMPILE_MODES, empty=True), default=list(COMPILE_MODES),
                        help="torch.compile modes to compare, comma-separated ('' for none)")
    return parser.parse_args(argv)


def _names(allowed, empty=False):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown or (not names and not empty):
            raise argparse.ArgumentTypeError(f"expected names from {', '.join(allowed)}, got {text!r}")
        return names
    return parse


def run_section(name, module, bench) -> dict:
    print(f"\n== {name}: {module.TITLE}", flush=True)
    start = time.perf_counter()
    try:
        rows, error = module.run(bench), None
    except Exception:  # noqa: BLE001 (report it, and run the other sections)
        rows, error = [], traceback.format_exc()
        print(error, file=sys.stderr)
    if rows:
        print(table(module.COLUMNS, rows), flush=True)
    return {"title": module.TITLE, "rows": rows, "error": error, "seconds": time.perf_counter() - start,
            "when": datetime.datetime.now().isoformat(timespec="seconds")}


def merge_earlier(path: Path, results: dict) -> list:
    """Sections of an earlier run written to `path` (the same day and device), kept where
    this run did not measure them again, so a suite split over several calls (each within
    a time limit) ends in one result. Only a run of the same kind (smoke or not) and the
    same versions merges; another is replaced. Returns the sections taken over."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(earlier, dict) or earlier.get("smoke") != results["smoke"] \
            or earlier.get("versions") != results["versions"] or not isinstance(earlier.get("sections"), dict):
        return []
    kept = [name for name in earlier["sections"] if name in SECTIONS and name not in results["sections"]]
    results["sections"] = {name: earlier["sections"][name] for name in kept} | results["sections"]
    results["runs"] = earlier.get("runs", []) + results["runs"]
    return kept


def target_results(sections: dict) -> list:
    """One entry per (target, measured case): pass/fail, or None where a figure is missing."""
    out = []
    for name, result in sections.items():
        module = SECTIONS[name]
        for key, target in module.TARGETS:
            for row in result["rows"]:
                case = " ".join(str(row.get(k)) for k in module.CASE)
                out.append({"section": name, "target": target, "case": case, "pass": row.get(key)})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    import triton

    bench = Bench(smoke=args.smoke, device=default_device(), compile_modes=() if args.smoke else tuple(args.compile_modes),
                  tune_tier=None if args.tune == "none" else args.tune)
    print(f"gpu_suite on {device_name()} ({bench.device}); timer: {bench.timer}"
          + ("; SMOKE RUN: the figures exercise the code, they measure nothing" if args.smoke else ""))
    results = {"suite": "gpu_suite", "date": str(datetime.date.today()), "device": device_name(),
               "torch_device": str(bench.device), "smoke": args.smoke, "timer": bench.timer,
               "versions": {"kgen": kgen.__version__, "torch": torch.__version__, "triton": triton.__version__,
                            "cuda": torch.version.cuda},
               "cuda_graphs": cudagraph.enabled(bench.device), "env": {cudagraph.ENV: os.environ.get(cudagraph.ENV)},
               "compile_modes": list(bench.compile_modes), "kgen_tune_tier": bench.tune_tier, "sections": {},
               "runs": [{"when": datetime.datetime.now().isoformat(timespec="seconds"), "only": args.only,
                         "compile_modes": list(bench.compile_modes), "kgen_tune_tier": bench.tune_tier}]}
    for name in args.only:
        results["sections"][name] = run_section(name, SECTIONS[name], bench)
    path = args.out / f"{results['date']}-{device_slug()}-gpu_suite.json"
    kept = merge_earlier(path, results)
    if kept:
        print(f"\nkept from an earlier run today: {', '.join(kept)}")
    results["targets"] = target_results(results["sections"])
    if results["targets"]:
        print("\n== targets (the issue's) and checks")
        print(table([("section", "section", "{}"), ("case", "case", "{}"), ("target", "target", "{}"),
                     ("pass", "result", "{}")], results["targets"]))
    atomic_write(path, json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    failed = [name for name, r in results["sections"].items() if r["error"]]
    if failed:
        print(f"gpu_suite: sections that raised: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
