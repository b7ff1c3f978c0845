"""`kgen --help` answers without importing torch or triton (which take seconds): in a fresh
process, as the `kgen` entry point runs it."""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import contextlib, io, json, sys
from kgen import cli
codes = {}
for argv in (["--help"], ["train", "--help"], ["check", "--help"], ["stats", "--help"], ["models", "--help"],
             ["tune", "--help"], ["compile", "--help"], ["run", "--help"], ["train", "mlp64", "--epochs", "0"],
             ["compile", "cnn"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes[" ".join(argv)] = cli.main(argv)
print(json.dumps({"codes": codes, "loaded": sorted(m for m in ("torch", "triton", "numpy", "sympy")
                                                      if m in sys.modules)}))
"""


def test_help_and_usage_errors_import_neither_torch_nor_triton():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    assert result["codes"] == {**{k: 0 for k in list(result["codes"])[:8]},
                               "train mlp64 --epochs 0": 2, "compile cnn": 2}
