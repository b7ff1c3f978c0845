"""What the GPU benchmark sections (benchmarks/gpu_*.py, run by gpu_suite.py) share: the
run's settings and timers, random device tensors, the precision both sides compute in,
target checks, and the printed table.

Each section module has TITLE, COLUMNS ((row key, header, format) triples for the table),
TARGETS ((row key, target) pairs: the issue's targets, and checks such as agreeing losses;
the key holds True/False/None per row), CASE (the row keys that name a case in the target
summary) and run(bench) -> list of rows (dicts that go into the JSON as they are).
"""
from __future__ import annotations

import contextlib
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_io import device_name  # noqa: E402


def device_slug() -> str:
    """The device name for a result file: torch's GPU name (or the CPU's), filename-safe."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", device_name()).strip("-")


@dataclass
class Bench:
    """One run's settings. A smoke run takes tiny sizes, one timed call, and no torch.compile,
    to exercise every section's code on a CPU (kgen under Triton's interpreter)."""
    smoke: bool
    device: torch.device
    compile_modes: tuple = ()
    tune_tier: str = None  # kgen's autotuner tier on a GPU ("quick", "thorough"), or None: defaults

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def events(self) -> bool:
        """Device timing (CUDA events) rather than the wall clock."""
        return self.cuda and not self.smoke

    @property
    def timer(self) -> str:
        return "CUDA events, median (triton.testing.do_bench)" if self.events else "wall clock, median"

    def pick(self, full, smoke):
        return smoke if self.smoke else full

    def time_ms(self, fn) -> float:
        """Median milliseconds of one call of `fn` (a kernel or a few): do_bench on a GPU,
        which flushes L2 between calls; the wall clock otherwise."""
        if self.events:
            from triton.testing import do_bench
            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        return _wall_ms(fn, calls=1, repeats=self.pick(5, 1), sync=self.cuda, warm_up=True)

    def time_steps_ms(self, step, steps: int = 20, repeats: int = 5) -> float:
        """Milliseconds per call of `step` in a loop of `steps` calls, median of `repeats`
        loops: the steady rate a training loop sees, host and launch overhead included.
        The caller warms `step` up first (compiles, captures)."""
        steps, repeats = self.pick(steps, 1), self.pick(repeats, 1)
        if not self.events:
            return _wall_ms(step, calls=steps, repeats=repeats, sync=self.cuda, warm_up=False)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / steps)
        return statistics.median(times)

    def tune(self, tunable, *inputs):
        """Tune kgen's kernels on this GPU at the shapes of `inputs` with the run's tier, as
        torch.compile's max-autotune tunes its own; `tunable` is a Program (inputs: one
        dict, as `run` takes it) or a compiled step / kgen.Function (its inputs, in order).
        Seconds spent, or None where nothing was tuned (no GPU, or --tune none)."""
        if not self.cuda or not self.tune_tier:
            return None
        start = time.perf_counter()
        tunable.tune(*inputs, tier=self.tune_tier, progress=lambda message: print(f"  tune {message}", flush=True))
        return time.perf_counter() - start

    def seconds(self, fn):
        """(fn's result, wall seconds it took, the device's work included)."""
        self.synchronize()
        start = time.perf_counter()
        result = fn()
        self.synchronize()
        return result, time.perf_counter() - start

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def randn(self, *shape, dtype=torch.float32) -> torch.Tensor:
        return torch.randn(*shape, device=self.device).to(dtype)


def _wall_ms(fn, calls: int, repeats: int, sync: bool, warm_up: bool) -> float:
    if warm_up:
        fn()  # compiles, and on the interpreter decorates the kernels
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3 / calls)
    return statistics.median(times)


# --- inputs ---------------------------------------------------------------------------------
EXAMPLE_SHAPES = {"mlp128": (784,), "cnn": (1, 28, 28), "linreg": (1,)}  # one example, as the zoo's data


def example_batch(name: str, batch: int):
    """Random (x, y) NumPy arrays shaped and typed like a batch of a zoo model's data
    (integer class labels, or float targets for linreg): timing needs no real digits."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + EXAMPLE_SHAPES[name]).astype(np.float32)
    y = rng.standard_normal((batch, 1)).astype(np.float32) if name == "linreg" else \
        rng.integers(0, 10, batch).astype(np.int32)
    return x, y


def bind(program, **tensors) -> dict:
    """A program's inputs by name, as Program.run takes them."""
    return {node: tensors[node.name] for node in program.graph.inputs}


# --- precision --------------------------------------------------------------------------------
def kgen_precision(program) -> str:
    """How kgen's float32 dots multiply: 'ieee' (exact products) or Triton's default, tf32."""
    return "ieee" if 'input_precision="ieee"' in program.source else "tf32"


@contextlib.contextmanager
def torch_tf32(on: bool):
    """torch's float32 matmuls and cuDNN convolutions with TF32 on or off, restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def at_least(value, threshold):
    """A target check: True/False, or None where the figure is missing."""
    return None if value is None else bool(value >= threshold)


def ratio(numerator, denominator):
    return None if not numerator or not denominator else numerator / denominator


# --- the table --------------------------------------------------------------------------------
def format_cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return str(value)


def table(columns, rows) -> str:
    """The rows as an aligned text table (one column per (key, header, format))."""
    cells = [[header for _, header, _ in columns]]
    cells += [[format_cell(row.get(key), fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])
