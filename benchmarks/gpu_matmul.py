"""Matmul TFLOP/s of kgen's template against torch.matmul (cuBLAS), float32 and float16,
at a few square sizes and one MLP layer's shape. Target: at least 90% of torch.matmul.

The target compares like with like: torch runs float32 in the precision kgen's kernels use
(exact 'ieee' products, TF32 off, unless kgen's source asks for TF32). torch with TF32 on is
shown beside it, as what a float32 user of torch gets when they allow it.

    python benchmarks/gpu_suite.py --only matmul
"""
from __future__ import annotations

import torch

import kgen
from gpu_common import at_least, bind, kgen_precision, ratio, torch_tf32

TITLE = "matmul TFLOP/s vs torch.matmul"
COLUMNS = [("dtype", "dtype", "{}"), ("shape", "M x N x K", "{}"), ("kgen_precision", "kgen prec.", "{}"),
           ("kgen_tflops", "kgen TFLOP/s", "{:.2f}"), ("torch_tflops", "torch TFLOP/s", "{:.2f}"),
           ("fraction_of_torch", "of torch", "{:.1%}"), ("torch_tf32_tflops", "torch tf32", "{:.2f}"),
           ("pass_90pct_torch", ">=90% torch", "{}")]
CASE = ("dtype", "shape")
TARGETS = [("pass_90pct_torch", "matmul >= 90% of torch.matmul")]

SIZES = [(1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192), (512, 128, 784)]  # M, N, K
SMOKE_SIZES = [(8, 16, 32)]


def matmul_program(dtype: str, device):
    a, b = kgen.tensor("a", ("M", "K"), dtype), kgen.tensor("b", ("K", "N"), dtype)
    program = kgen.compile(kgen.Graph([a, b], [kgen.ops.matmul(a, b)]), device)
    program.cuda_graphs = False
    return program


def measure(bench, program, dtype: str, m: int, n: int, k: int) -> dict:
    torch_dtype = getattr(torch, dtype)
    a, b = bench.randn(m, k, dtype=torch_dtype), bench.randn(k, n, dtype=torch_dtype)
    inputs = bind(program, a=a, b=b)
    tune_s = bench.tune(program, inputs)
    precision = kgen_precision(program) if dtype == "float32" else dtype
    tflops = lambda ms: 2 * m * n * k / (ms * 1e-3) / 1e12  # noqa: E731
    kgen_ms = bench.time_ms(lambda: program.run(inputs))
    with torch_tf32(precision == "tf32"):
        torch_ms = bench.time_ms(lambda: torch.matmul(a, b))
    tf32_ms = None
    if dtype == "float32":
        with torch_tf32(True):
            tf32_ms = bench.time_ms(lambda: torch.matmul(a, b))
    fraction = ratio(tflops(kgen_ms), tflops(torch_ms))
    return {"dtype": dtype, "kgen_tune_s": tune_s, "shape": f"{m}x{n}x{k}", "m": m, "n": n, "k": k, "kgen_precision": precision,
            "kgen_ms": kgen_ms, "torch_ms": torch_ms, "torch_tf32_ms": tf32_ms, "kgen_tflops": tflops(kgen_ms),
            "torch_tflops": tflops(torch_ms), "torch_tf32_tflops": tf32_ms and tflops(tf32_ms),
            "fraction_of_torch": fraction, "pass_90pct_torch": at_least(fraction, 0.9)}


def run(bench) -> list:
    rows = []
    for dtype in ("float32", "float16"):
        program = matmul_program(dtype, bench.device)
        rows += [measure(bench, program, dtype, *mnk) for mnk in bench.pick(SIZES, SMOKE_SIZES)]
    return rows
