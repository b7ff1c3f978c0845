"""Fused matmul + bias + relu: kgen's one kernel (bias and relu in the matmul's epilogue)
against torch eager's relu(x @ w + b), several kernels and a round trip of the product
through memory, in the same float32 precision. No target in the issue: the speedup over
eager is reported.

    python benchmarks/gpu_suite.py --only epilogue
"""
from __future__ import annotations

import torch

import kgen
from gpu_common import bind, kgen_precision, ratio, torch_tf32

TITLE = "fused matmul+bias+relu vs eager"
COLUMNS = [("shape", "M x N x K", "{}"), ("kernels", "kernels", "{}"), ("kgen_ms", "kgen ms", "{:.3f}"),
           ("eager_ms", "eager ms", "{:.3f}"), ("speedup_vs_eager", "speedup", "{:.2f}x"),
           ("kgen_precision", "precision", "{}")]
CASE = ("shape",)
TARGETS = []

SIZES = [(512, 128, 784), (4096, 4096, 4096), (8192, 1024, 4096)]  # M, N, K
SMOKE_SIZES = [(8, 16, 32)]


def linear_relu_program(device):
    x, w, b = kgen.tensor("x", ("M", "K")), kgen.tensor("w", ("K", "N")), kgen.tensor("b", ("N",))
    program = kgen.compile(kgen.Graph([x, w, b], [kgen.ops.relu(kgen.ops.matmul(x, w) + b)]), device)
    program.cuda_graphs = False
    return program


def measure(bench, program, m: int, n: int, k: int) -> dict:
    x, w, b = bench.randn(m, k), bench.randn(k, n), bench.randn(n)
    inputs = bind(program, x=x, w=w, b=b)
    tune_s = bench.tune(program, inputs)
    precision = kgen_precision(program)
    kgen_ms = bench.time_ms(lambda: program.run(inputs))
    with torch_tf32(precision == "tf32"):
        eager_ms = bench.time_ms(lambda: torch.relu(x @ w + b))
    return {"shape": f"{m}x{n}x{k}", "kgen_tune_s": tune_s, "m": m, "n": n, "k": k, "kernels": len(program.kernels),
            "kgen_precision": precision, "kgen_ms": kgen_ms, "eager_ms": eager_ms,
            "speedup_vs_eager": ratio(eager_ms, kgen_ms)}


def run(bench) -> list:
    program = linear_relu_program(bench.device)
    return [measure(bench, program, *mnk) for mnk in bench.pick(SIZES, SMOKE_SIZES)]
