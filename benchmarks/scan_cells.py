"""LSTM and GRU training steps two ways: the cell written with kgen.scan (one persistent scan
kernel each way, kgen/kernels/scan.py) against the hand-written recurrence ops kgen.nn's
layers use (kgen/ir/ops_recurrent.py, kgen/kernels/recurrent.py). Static figures of the
compiled programs (kgen.lowering.stats.program_stats: launches, kernels, bytes, flops) at the
zoo's sizes, T=28 steps of I=28 features, batch 64, H=64, the model the zoo's lstm and gru
train (the layer, its last state, Linear(64, 10), cross-entropy, SGD); nothing runs. The
scan cells are the ones tests/kernels/test_scan_cells.py checks against torch.
Prints a table and writes benchmarks/results/DATE-DEVICE-scan-cells.json.

    python benchmarks/scan_cells.py [--batch 64] [--steps 28] [--hidden 64]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen import ops  # noqa: E402
from kgen.ir.ops_recurrent import run_direction  # noqa: E402
from kgen.nn.recurrent import gru_direction, lstm_direction  # noqa: E402
from kgen.lowering.stats import program_stats  # noqa: E402
from compile_time import device_name  # noqa: E402

GATES = {"lstm": 4, "gru": 3}


def training_step(cell: str, how: str, steps: int, features: int, hidden: int, classes: int = 10):
    """A kgen.function: x [N, T, I] (batch first) -> the layer's last h -> Linear -> cross-entropy,
    the SGD update of every parameter; the recurrence by `how`: "scan" or "ops"."""
    rng = np.random.default_rng(0)
    gates = GATES[cell]

    def param(name, shape):
        return kgen.shared((rng.standard_normal(shape) * 0.1).astype(np.float32), name=f"{how}_{cell}_{name}")

    w_ih, w_hh = param("w_ih", (gates * hidden, features)), param("w_hh", (gates * hidden, hidden))
    b_ih, b_hh = param("b_ih", (gates * hidden,)), param("b_hh", (gates * hidden,))
    fc_w, fc_b = param("fc_w", (classes, hidden)), param("fc_b", (classes,))
    x, y = kgen.tensor("x", ("N", steps, features)), kgen.tensor("y", ("N",), kgen.int32)
    time_first = ops.transpose(x, (1, 0, 2))
    flat = ops.reshape(time_first, (-1, features)) @ ops.transpose(w_ih) + b_ih
    if cell == "lstm":
        flat = flat + b_hh  # an LSTM's gates take both biases summed, as kgen.nn's layer computes them
    xproj = ops.reshape(flat, (steps, x.shape[0], gates * hidden))
    zeros = ops.broadcast_to(ops.constant(0.0), (x.shape[0], hidden))
    if how == "ops":
        states = (None, None) if cell == "lstm" else (None,)  # zeros
        _, finals = run_direction(cell, xproj, w_hh, b_hh if cell == "gru" else None, states)
    elif cell == "lstm":
        _, finals = lstm_direction(xproj, w_hh, zeros, zeros)
    else:
        _, finals = gru_direction(xproj, w_hh, b_hh, zeros)
    logits = finals[0] @ ops.transpose(fc_w) + fc_b
    loss = ops.cross_entropy(logits, y)
    params = [w_ih, w_hh, b_ih, b_hh, fc_w, fc_b]
    grads = kgen.grad(loss, params)
    return kgen.function([x, y], [loss], updates=[(p, p - 0.01 * g) for p, g in zip(params, grads)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--features", type=int, default=28)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    sizes, rows = {"N": args.batch}, []
    for cell in ("lstm", "gru"):
        for how in ("ops", "scan"):
            step = training_step(cell, how, args.steps, args.features, args.hidden)
            stats = program_stats(step.program, sizes)
            kernels = [k.kind for launch in step.program.kernels for k in (launch.parts or [launch])]
            recurrent = [k for k in stats["kernels"] if k["kind"] in ("scan", "recurrent")
                         or any(p.kind in ("scan", "recurrent") for p in
                                next(x for x in step.program.kernels if x.name == k["name"]).parts)]
            rows.append({"cell": cell, "recurrence": how, "launches": stats["launches"], "kernels": kernels,
                         "bytes": stats["bytes"], "flops": stats["flops"],
                         "recurrence_launches": [{"name": k["name"], "bytes": k["bytes_read"] + k["bytes_written"]}
                                                 for k in recurrent],
                         "per_launch": stats["kernels"]})
    print(f"{'cell':<5} {'recurrence':<10} {'launches':>8} {'kernels':>7} {'loop kernels':>12} {'MB':>8} "
          f"{'MFLOP':>8} {'bytes vs ops':>12}")
    for r in rows:
        base = next(b for b in rows if b["cell"] == r["cell"] and b["recurrence"] == "ops")
        loops = sum(1 for k in r["kernels"] if k in ("scan", "recurrent"))
        print(f"{r['cell']:<5} {r['recurrence']:<10} {r['launches']:>8} {len(r['kernels']):>7} {loops:>12} "
              f"{r['bytes'] / 1e6:>8.3f} {r['flops'] / 1e6:>8.2f} {r['bytes'] / base['bytes']:>12.3f}")
    name = f"{datetime.date.today()}-{device_name()}-scan-cells.json"
    out = ROOT / "benchmarks" / "results" / name
    out.write_text(json.dumps({"device": device_name(), "kgen": kgen.__version__, "sizes": vars(args),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
