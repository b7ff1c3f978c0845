"""Where a benchmark's result goes: benchmarks/results/DATE-DEVICE-NAME.json (DESIGN.md,
"Tests and CI"), named by the day and the device it was measured on. The scripts that print
a table and write one JSON result end with `write_result`, so every result file is named,
written and announced the same way.
"""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def device_name() -> str:
    """The device in a result's name: the CUDA GPU's, else the CPU's machine and torch's threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name().replace(" ", "-")
    return f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"


def write_result(name: str, payload: dict, indent: int = 2, device: str = None) -> Path:
    """Write `payload` as benchmarks/results/DATE-DEVICE-`name`.json (DEVICE: `device`, else
    device_name()) and print its path."""
    out = RESULTS / f"{datetime.date.today()}-{device or device_name()}-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=indent) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return out
