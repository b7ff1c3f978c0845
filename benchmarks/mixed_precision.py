"""Mixed precision against float32: each model's training step in fp32, fp16 (with and
without dynamic loss scaling) and bf16 (launches and bytes from the buffer plan, no device
needed), and how far a few fp16 steps on real MNIST digits drift from the float32 steps
from the same weights (on Triton's interpreter; bf16 does not run there).
Prints a table and writes benchmarks/results/DATE-DEVICE-mixed_precision.json.

    python benchmarks/mixed_precision.py [--steps 5] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from kgen.lowering.stats import program_stats  # noqa: E402
from results_io import device_name, write_result  # noqa: E402

MODELS = ("mlp128", "cnn")
VARIANTS = (("fp32", None), ("fp16", False), ("fp16", None), ("bf16", None))  # (precision, loss_scaler)


def step_of(name: str, x, y, precision: str, loss_scaler):
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y,
                         precision=precision, loss_scaler=loss_scaler)
    return model, step


def drift(name: str, steps: int, batch: int) -> dict:
    """Losses and weights after `steps` fp16 steps (loss-scaled) against fp32 ones."""
    spec = nn.zoo.get(name)
    (x, y), _ = spec.data()
    x, y = x[:batch], y[:batch]
    runs = {}
    for precision in ("fp32", "fp16"):
        model, step = step_of(name, x, y, precision, None)
        runs[precision] = [float(step(x, y)[0]) for _ in range(steps)], model.state_dict(), step
    (want, want_state, _), (got, got_state, step) = runs["fp32"], runs["fp16"]
    return {"steps": steps, "batch": batch, "fp32_losses": want, "fp16_losses": got,
            "max_loss_rel_diff": float(np.max(np.abs(np.subtract(got, want)) / np.abs(want))),
            "max_weight_abs_diff": float(max(np.max(np.abs(got_state[k] - want_state[k])) for k in want_state)),
            "max_weight_abs": float(max(np.max(np.abs(v)) for v in want_state.values())),
            "skipped_steps": step.loss_scaler.get_skipped_steps(), "loss_scale": step.loss_scaler.get_scale()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    rows = []
    for name in MODELS:
        x, y = (np.asarray(v) for v in nn.zoo.example_batch(nn.zoo.get(name), 64))
        figures = {}
        for precision, scaler in VARIANTS:
            _, step = step_of(name, x, y, precision, scaler)
            stats = program_stats(step.program, {"N": 64})
            label = precision + (" scaled" if step.loss_scaler is not None else "")
            figures[label] = {"launches": stats["launches"], "bytes": stats["bytes"]}
        rows.append({"model": name, "stats_batch": 64, "steps": figures, "drift": drift(name, args.steps, args.batch)})
    print(f"{'model':<8} {'variant':<12} {'launches':>8} {'MB':>8}")
    for r in rows:
        for label, f in r["steps"].items():
            print(f"{r['model']:<8} {label:<12} {f['launches']:>8} {f['bytes'] / 1e6:>8.3f}")
    print(f"\n{'model':<8} {'steps':>5} {'batch':>5} {'loss rel diff':>14} {'weight abs diff':>16} {'skipped':>8}")
    for r in rows:
        d = r["drift"]
        print(f"{r['model']:<8} {d['steps']:>5} {d['batch']:>5} {d['max_loss_rel_diff']:>14.2e} "
              f"{d['max_weight_abs_diff']:>16.2e} {d['skipped_steps']:>8}")
    write_result("mixed_precision", {"device": device_name(), "kgen": kgen.__version__, "rows": rows})


if __name__ == "__main__":
    main()
