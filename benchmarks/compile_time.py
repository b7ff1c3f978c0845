"""Compile-side times for the example programs: tracing + autodiff, kgen.compile (passes,
fusion, codegen), the first interpreted step, and AOT compiling every kernel for sm_80 and
sm_90. Prints a table and writes benchmarks/results/DATE-DEVICE-compile_time.json.

    python benchmarks/compile_time.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import kgen  # noqa: E402
from kgen.kernels.aot import compile_program  # noqa: E402
from results_io import device_name, write_result  # noqa: E402


def measure(name, build, args):
    t0 = time.perf_counter()
    train = build()
    t1 = time.perf_counter()  # build() traces, differentiates and compiles
    train(*args)
    t2 = time.perf_counter()
    binaries = compile_program(train.program, ("sm_80", "sm_90"))
    t3 = time.perf_counter()
    return {"model": name, "kernels": len(train.kernels), "trace_grad_compile_s": t1 - t0,
            "first_step_s": t2 - t1, "aot_sm80_sm90_s": t3 - t2, "binaries": len(binaries)}


def main():
    import linreg
    import logreg

    xs, ys = linreg.make_data(256)
    lx, ly = logreg.make_data(512)
    rows = [
        measure("linreg", lambda: linreg.build(0.5)[0], (xs, ys)),
        measure("logreg", lambda: logreg.build(3, 1.0)[0], (lx, ly)),
    ]
    header = f"{'model':<8} {'kernels':>7} {'trace+compile s':>15} {'first step s':>12} {'AOT 2 targets s':>15}"
    print(header)
    for r in rows:
        print(f"{r['model']:<8} {r['kernels']:>7} {r['trace_grad_compile_s']:>15.3f} "
              f"{r['first_step_s']:>12.3f} {r['aot_sm80_sm90_s']:>15.3f}")
    write_result("compile_time", {"device": device_name(), "kgen": kgen.__version__, "torch": torch.__version__,
                                  "rows": rows})


if __name__ == "__main__":
    main()
