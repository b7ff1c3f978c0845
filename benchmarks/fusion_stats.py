"""Launches, bytes and flops of each zoo model's training step, fused by kgen and lowered one
kernel per op, side by side (static figures from the buffer plan; no device needed).
Prints a table and writes benchmarks/results/DATE-DEVICE-fusion_stats.json.

    python benchmarks/fusion_stats.py [--batch 64]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from kgen.lowering.stats import program_stats, unfused_stats  # noqa: E402
from results_io import device_name, write_result  # noqa: E402


def step_of(name: str, batch: int):
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    x, y = (np.asarray(v) for v in nn.zoo.example_batch(spec, batch))
    return nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    rows = []
    for name in nn.zoo.names():
        step = step_of(name, args.batch)
        sizes = {"N": args.batch}
        fused, unfused = program_stats(step.program, sizes), unfused_stats(step.program.graph, sizes)
        rows.append({"model": name, "batch": args.batch, "launches": fused["launches"], "bytes": fused["bytes"],
                     "flops": fused["flops"], "unfused": unfused})
    print(f"{'model':<14} {'launches':>8} {'unfused':>8} {'MB':>9} {'unfused MB':>10} {'bytes ratio':>11}")
    for r in rows:
        print(f"{r['model']:<14} {r['launches']:>8} {r['unfused']['launches']:>8} {r['bytes'] / 1e6:>9.3f} "
              f"{r['unfused']['bytes'] / 1e6:>10.3f} {r['bytes'] / r['unfused']['bytes']:>11.2f}")
    write_result("fusion_stats", {"device": device_name(), "kgen": kgen.__version__, "rows": rows})


if __name__ == "__main__":
    main()
