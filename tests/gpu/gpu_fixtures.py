"""GPU correctness tests: the generated kernels, split-K, artifacts loaded as cubins, CUDA
graphs, timed tuning and the zoo's training steps on a CUDA GPU, against the reference.

    python -m pytest tests/gpu -q                      on a machine with a CUDA GPU
    KGEN_TEST_DEVICE=cpu python -m pytest tests/gpu -q  the same checks on Triton's
                                                        interpreter, at small sizes

Without a GPU (and without KGEN_TEST_DEVICE) every test here is skipped: CI has no GPU.
The interpreter run checks the tests themselves; what only a GPU has (cubins, CUDA graphs,
timing, memory ordering across programs) is checked where `on_gpu` holds.

The fixtures live here rather than in a conftest.py, which would shadow tests/conftest.py
for the test modules that import from it; each test module imports them."""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    wanted = os.environ.get("KGEN_TEST_DEVICE")
    if wanted:
        return torch.device(wanted)
    if not torch.cuda.is_available():
        pytest.skip("a GPU test: no CUDA GPU here (KGEN_TEST_DEVICE=cpu runs it on the interpreter)")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def on_gpu(device) -> bool:
    return device.type == "cuda"


@pytest.fixture(scope="session")
def size(on_gpu):
    """size(on a GPU, on the interpreter): realistic sizes on a GPU, small ones otherwise."""
    return lambda gpu, interpreter: gpu if on_gpu else interpreter
