"""Depthwise convolution, the two lowerings: kgen's direct kernels (kgen/kernels/depthwise.py)
against the per-group implicit GEMM (kgen/kernels/conv.py, which depthwise layers would take
without them), on MobileNet-like 3x3 layers: a step's forward and both gradients, timed
on this machine's device (Triton's interpreter without a GPU), after a first call that
compiles. Beside the times, each lowering's useful share of its multiply-adds: a tl.dot
pads a group's k filters and KH*KW taps to its 16-wide tiles. Prints a table and writes
benchmarks/results/DATE-DEVICE-depthwise_lowering.json.

    python benchmarks/depthwise_lowering.py
"""
from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import kgen
from kgen import ops
from kgen.kernels import conv
from results_io import device_name, write_result

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # (N, C, H, W, channel multiplier, stride)
    (4, 32, 28, 28, 1, 1),
    (4, 32, 28, 28, 2, 2),
    (2, 64, 14, 14, 1, 1),
]


def step(layer):
    n, c, h, w, k, stride = layer
    x, wt = kgen.tensor("x", (n, c, h, w)), kgen.tensor("w", (k * c, 1, 3, 3))
    y = ops.conv2d(x, wt, stride=stride, padding=1, groups=c)
    g = kgen.tensor("g", y.shape)
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(tuple(int(d) for d in v.shape)).astype(np.float32) for v in (x, wt, g)]
    return kgen.function([x, wt, g], [y] + kgen.grad(y, [x, wt], seed=g)), values


def timed(layer, direct: bool) -> dict:
    with mock.patch.object(conv, "is_depthwise", conv.is_depthwise if direct else lambda node: False):
        fn, values = step(layer)
        first = time.perf_counter()
        fn(*values)  # generates and compiles the kernels
        second = time.perf_counter()
        fn(*values)
        done = time.perf_counter()
    n, c, h, w, k, stride = layer
    # the forward's useful multiply-adds over those computed: per group, k of a tile's 16 columns, 9 of 16 K steps
    useful = 1.0 if direct else (k * 9) / (max(16, k) * 16)
    return {"lowering": "direct" if direct else "implicit GEMM per group", "first_call_s": second - first,
            "call_s": done - second, "families": sorted(kk.config_rule for kk in _parts(fn.kernels)),
            "useful_share": round(useful, 3)}


def _parts(kernels):
    return [p for kk in kernels for p in (kk.parts or (kk,))]


def main():
    rows = []
    for layer in LAYERS:
        for direct in (True, False):
            row = {"layer": "N={} C={} {}x{} multiplier {} stride {}".format(*layer), **timed(layer, direct)}
            rows.append(row)
            print(f"{row['layer']:40s} {row['lowering']:26s} call {row['call_s']:7.2f} s  "
                  f"first {row['first_call_s']:7.2f} s  useful {row['useful_share']:.3f}  {row['families']}")
    write_result("depthwise_lowering", {"device": device_name(), "triton_interpreter": not torch.cuda.is_available(),
                                        "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
