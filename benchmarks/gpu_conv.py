"""Convolution: kgen's implicit-GEMM conv2d template against torch (cuDNN, its fastest
algorithm picked by cudnn.benchmark) on the MNIST CNN's two convolutions, at batch 64 and
512. Like the matmul section, torch runs float32 in the precision kgen's kernels use; cuDNN
with TF32 (torch's default for convolutions) is shown beside it. No target in the issue: the
fraction of cuDNN is reported.

    python benchmarks/gpu_suite.py --only conv
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import kgen
from gpu_common import bind, kgen_precision, ratio, torch_tf32

TITLE = "conv2d vs torch (cuDNN), the CNN's convolutions"
COLUMNS = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("kgen_precision", "kgen prec.", "{}"),
           ("kgen_ms", "kgen ms", "{:.3f}"), ("torch_ms", "cuDNN ms", "{:.3f}"),
           ("fraction_of_torch", "of cuDNN", "{:.1%}"), ("torch_tf32_ms", "cuDNN tf32 ms", "{:.3f}"),
           ("kgen_tflops", "kgen TFLOP/s", "{:.2f}")]
CASE = ("layer", "batch")
TARGETS = []

# The zoo's cnn: Conv2d(1, 32, 3) on 28x28, then (after a 2x2 pool) Conv2d(32, 64, 3) on 13x13.
LAYERS = [("conv1", 1, 28, 32), ("conv2", 32, 13, 64)]  # name, in channels, side, out channels


def conv_program(channels: int, side: int, filters: int, device):
    x = kgen.tensor("x", ("N", channels, side, side))
    w = kgen.tensor("w", (filters, channels, 3, 3))
    program = kgen.compile(kgen.Graph([x, w], [kgen.ops.conv2d(x, w)]), device)
    program.cuda_graphs = False
    return program


def measure(bench, program, layer, batch: int) -> dict:
    name, channels, side, filters = layer
    x, w = bench.randn(batch, channels, side, side), bench.randn(filters, channels, 3, 3)
    inputs = bind(program, x=x, w=w)
    tune_s = bench.tune(program, inputs)
    flops = 2 * batch * filters * (side - 2) ** 2 * channels * 9
    precision = kgen_precision(program)
    kgen_ms = bench.time_ms(lambda: program.run(inputs))
    with torch_tf32(precision == "tf32"):
        torch_ms = bench.time_ms(lambda: F.conv2d(x, w))
    with torch_tf32(True):
        tf32_ms = bench.time_ms(lambda: F.conv2d(x, w))
    return {"layer": name, "kgen_tune_s": tune_s, "batch": batch, "input": [batch, channels, side, side], "filters": filters,
            "kgen_precision": precision, "kgen_ms": kgen_ms, "torch_ms": torch_ms, "torch_tf32_ms": tf32_ms,
            "fraction_of_torch": ratio(torch_ms, kgen_ms), "kgen_tflops": flops / (kgen_ms * 1e-3) / 1e12,
            "torch_tflops": flops / (torch_ms * 1e-3) / 1e12}


def run(bench) -> list:
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        rows = []
        for layer in LAYERS:
            program = conv_program(*layer[1:], bench.device)
            rows += [measure(bench, program, layer, batch) for batch in bench.pick([64, 512], [2])]
        return rows
    finally:
        torch.backends.cudnn.benchmark = saved
