"""Interpreted training steps of the zoo's lstm and gru (batch 64, 28 steps of 28 pixels,
Adam): the layers as they are (kgen.scan, a persistent scan kernel each way:
kgen/kernels/scan.py) beside the same layers unrolled into their 28 steps as nn.LSTM /
nn.GRU were before loops (one cell of ops per step,
differentiated and fused like any graph), from the same initial weights and batch, in one
process. Times the build (tracing to generated source), the steps after the first (which
loads the kernels), and each launch of the persistent step, to show where the interpreter's time goes. Prints a table and writes
benchmarks/results/DATE-DEVICE-recurrent-step[-TAG].json.

    python benchmarks/recurrent_step_time.py [--steps 3] [--models lstm gru] [--tag TAG]

On a machine without a GPU the steps run on Triton's interpreter, so the times say how fast
kgen's own tests and CPU training go, nothing about a GPU. The machine may be shared: each
figure is the fastest of --steps steps (--steps 1 takes the one after the compiling call).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import kgen
from kgen import nn, ops
from results_io import device_name, write_result

ROOT = Path(__file__).resolve().parents[1]


class _Unrolled:
    """One layer, one direction, batch first (the zoo's layer), its steps unrolled into the
    graph as the layers were written before the persistent kernels: the input products of
    every step as one matmul, then per step h @ W_hh.T + b_hh and the cell's gate math
    (no hidden products at the first step, whose state is zero)."""

    def forward(self, x, hx=None):
        steps, hidden = x.shape[1], self.hidden_size
        flat = ops.reshape(x, (-1, x.shape[2])) @ ops.transpose(self.weight_ih_l0) + self.bias_ih_l0
        products = ops.reshape(flat, (x.shape[0], steps, -1))
        state, hs = (None,) * len(self.STATES), []
        for t in range(steps):
            h = state[0]
            hidden_products = None if h is None else h @ ops.transpose(self.weight_hh_l0) + self.bias_hh_l0
            if h is None:
                hidden_products = self.bias_hh_l0
            state = self.cell(products[:, t], hidden_products, state)
            hs.append(state[0])
        finals = tuple(ops.reshape(s, (1, s.shape[0], hidden)) for s in state)
        return ops.stack(hs, axis=1), finals if len(finals) == 2 else finals[0]


class UnrolledLSTM(_Unrolled, nn.LSTM):
    @staticmethod
    def cell(x_product, hidden_products, state):
        h, c = state
        i, f, g, o = ops.split(x_product + hidden_products, 4, axis=-1)
        kept = ops.sigmoid(i) * ops.tanh(g)
        c = kept if c is None else ops.sigmoid(f) * c + kept
        return ops.sigmoid(o) * ops.tanh(c), c


class UnrolledGRU(_Unrolled, nn.GRU):
    @staticmethod
    def cell(x_product, hidden_products, state):
        h, = state
        r_x, z_x, n_x = ops.split(x_product, 3, axis=-1)
        r_h, z_h, n_h = ops.split(hidden_products, 3, axis=-1)
        r, z = ops.sigmoid(r_x + r_h), ops.sigmoid(z_x + z_h)
        n = ops.tanh(n_x + r * n_h)
        return ((1.0 - z) * n if h is None else (1.0 - z) * n + z * h),


UNROLLED = {"lstm": UnrolledLSTM, "gru": UnrolledGRU}


def build(name: str, unrolled: bool, x, y):
    """The zoo model's training step (or its unrolled twin's), from seed 0's weights, and the
    seconds building it took (tracing, autodiff, lowering and code generation: the fastest
    of three builds; of one, unrolled, whose build takes seconds)."""
    return min((_build(name, unrolled, x, y) for _ in range(1 if unrolled else 3)), key=lambda built: built[1])


def _build(name: str, unrolled: bool, x, y):
    start = time.perf_counter()
    spec = nn.zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    if unrolled:
        twin = nn.Sequential(UNROLLED[name](28, 64, batch_first=True), nn.LastStep(), nn.Linear(64, 10), nn.Softmax())
        twin.load_state_dict(model.state_dict())
        model = twin
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)
    return step, time.perf_counter() - start


def timed(built, x, y, steps: int) -> dict:
    """The build's seconds, the first call's (it loads the kernels), the fastest of `steps`
    further steps, and per launch of that step: seconds and programs."""
    step, build_seconds = built
    start = time.perf_counter()
    step(x, y)
    first = time.perf_counter() - start
    program, launch = step.program, step.program.launch
    best, per_launch = None, None
    for _ in range(steps):
        launches = {}

        def timed_launch(kernel, env, sizes):
            began = time.perf_counter()
            launch(kernel, env, sizes)
            launches[kernel.name] = time.perf_counter() - began

        program.launch = timed_launch
        try:
            began = time.perf_counter()
            step(x, y)
            seconds = time.perf_counter() - began
        finally:
            program.launch = launch
        if best is None or seconds < best:
            best, per_launch = seconds, launches
    sizes = {"N": int(x.shape[0])}
    kernels = [{"kernel": k.name, "kind": k.kind, "parts": [p.name for p in (k.parts or ())],
                "programs": int(np.prod(program.launch_plan(k, sizes).grid)),
                "config": program.launch_plan(k, sizes).config, "seconds": round(per_launch[k.name], 4)}
               for k in program.kernels]
    return {"build_s": round(build_seconds, 3), "first_call_s": round(first, 3), "step_s": round(best, 3), "launches": len(program.kernels),
            "kernels": kernels}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(kgen.__file__).parents[1],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the compiling one (the fastest counts)")
    parser.add_argument("--models", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    parser.add_argument("--no-unrolled", action="store_true", help="time the persistent steps only")
    parser.add_argument("--tag", default="", help="appended to the result file's name (a commit, say)")
    args = parser.parse_args(argv)

    (x_all, y_all), _ = nn.zoo.get("lstm").data()
    x, y = x_all[:64], y_all[:64]
    rows = []
    for name in args.models:
        row = {"model": name, "persistent": timed(build(name, False, x, y), x, y, args.steps)}
        if not args.no_unrolled:
            row["unrolled"] = timed(build(name, True, x, y), x, y, args.steps)
            row["speedup"] = round(row["unrolled"]["step_s"] / row["persistent"]["step_s"], 2)
        rows.append(row)

    print(f"{'model':6s} {'build s':>7s} {'persistent s':>12s} {'launches':>8s} {'unrolled s':>10s} {'launches':>8s} "
          f"{'speedup':>7s}")
    for row in rows:
        p, u = row["persistent"], row.get("unrolled")
        print(f"{row['model']:6s} {p['build_s']:7.3f} {p['step_s']:12.3f} {p['launches']:8d} "
              + (f"{u['step_s']:10.3f} {u['launches']:8d} {row['speedup']:6.2f}x" if u else ""))
    for row in rows:
        print(f"\n{row['model']} persistent step, per launch:")
        for k in row["persistent"]["kernels"]:
            what = ", ".join(k["parts"]) if k["parts"] else k["kind"]
            print(f"  {k['kernel']:22s} {k['seconds']:7.3f} s  {k['programs']:4d} programs  ({what})")

    suffix = f"-{args.tag}" if args.tag else ""
    print()
    write_result(f"recurrent-step{suffix}", {
        "device": device_name(), "kgen": kgen.__version__, "commit": commit(), "batch": 64, "timed_steps": args.steps,
        "runtime": "Triton interpreter (CPU)" if not torch.cuda.is_available() else "CUDA",
        "command": "python benchmarks/recurrent_step_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "models": rows,
    })


if __name__ == "__main__":
    main()
