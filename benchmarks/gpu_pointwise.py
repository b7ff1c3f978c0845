"""Fused pointwise bandwidth against the measured copy bandwidth: kgen's one kernel for
relu(2x + y) - 0.5y (reads x and y, writes the result) and torch copying the same number of
bytes (a copy reads and writes half of them each). Target: at least 90% of copy bandwidth.
Eager torch (several kernels for the same expression) is shown beside it.

    python benchmarks/gpu_suite.py --only pointwise
"""
from __future__ import annotations

import torch

import kgen
from gpu_common import at_least, bind, ratio

TITLE = "fused pointwise bandwidth vs copy"
COLUMNS = [("elements", "elements", "{:,}"), ("kernels", "kernels", "{}"), ("kgen_gbps", "kgen GB/s", "{:.0f}"),
           ("copy_gbps", "copy GB/s", "{:.0f}"), ("fraction_of_copy", "of copy", "{:.1%}"),
           ("eager_gbps", "eager GB/s", "{:.0f}"), ("pass_90pct_copy", ">=90% copy", "{}")]
CASE = ("elements",)
TARGETS = [("pass_90pct_copy", "fused pointwise >= 90% of copy bandwidth")]


def fused_program(device):
    x, y = kgen.tensor("x", ("N",)), kgen.tensor("y", ("N",))
    program = kgen.compile(kgen.Graph([x, y], [kgen.ops.relu(x * 2.0 + y) - 0.5 * y]), device)
    program.cuda_graphs = False  # one big kernel: measure it, not the input copies of a replay
    return program


def measure(bench, program, n: int) -> dict:
    x, y = bench.randn(n), bench.randn(n)
    inputs = bind(program, x=x, y=y)
    tune_s = bench.tune(program, inputs)
    moved = 3 * n * x.element_size()  # two reads, one write
    kgen_ms = bench.time_ms(lambda: program.run(inputs))
    source = bench.randn(moved // (2 * x.element_size()))
    target = torch.empty_like(source)
    copy_ms = bench.time_ms(lambda: target.copy_(source))
    eager_ms = bench.time_ms(lambda: torch.relu(x * 2.0 + y) - 0.5 * y)
    gbps = lambda ms: moved / (ms * 1e-3) / 1e9  # noqa: E731
    fraction = ratio(gbps(kgen_ms), gbps(copy_ms))
    return {"elements": n, "kgen_tune_s": tune_s, "bytes_moved": moved, "kernels": len(program.kernels), "kgen_ms": kgen_ms,
            "copy_ms": copy_ms, "eager_ms": eager_ms, "kgen_gbps": gbps(kgen_ms), "copy_gbps": gbps(copy_ms),
            "eager_gbps": gbps(eager_ms), "fraction_of_copy": fraction,
            "pass_90pct_copy": at_least(fraction, 0.9)}


def run(bench) -> list:
    program = fused_program(bench.device)
    return [measure(bench, program, n) for n in bench.pick([1 << 24, 1 << 26], [1000])]
