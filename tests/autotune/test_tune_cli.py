"""`kgen tune` on a small zoo model: tables, the cache it fills, and --explain."""
from __future__ import annotations

import re

import pytest

from kgen.autotune import cache as tune_cache
from kgen.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _kernel_rows(text: str) -> list:
    return [line for line in text.splitlines() if re.match(r"\s+k\d+_", line)]


def test_tune_fills_the_cache_then_hits_and_explains_misses(tmp_path, capsys, monkeypatch):
    args = ["tune", "linreg", "--target", "sm_90", "--batch", "8,64", "--cache", str(tmp_path), "--workers", "1"]
    assert main(args) == 0
    out = capsys.readouterr()
    tables = out.out.split("linreg training step, batch ")
    assert len(tables) == 3 and tables[1].startswith("8, on sm_90") and tables[2].startswith("64, on sm_90")
    kernel_rows = _kernel_rows(out.out)
    assert kernel_rows and all("cost model" in row or "default" in row or "parts tuned alone" in row
                                 for row in kernel_rows)
    assert "tuning" in out.err  # progress
    entries = list((tmp_path / f"v{tune_cache.FORMAT}").glob("*.json"))
    assert len(entries) == len(kernel_rows)

    assert main(args + ["--explain"]) == 0
    out = capsys.readouterr().out
    explained = [line for line in out.splitlines() if line.startswith("batch ")]
    assert len(explained) == len(kernel_rows) and all(": hit: " in line for line in explained)
    assert all(" cache " in row for row in _kernel_rows(out))

    assert main(["tune", "linreg", "--target", "sm_80", "--batch", "8", "--cache", str(tmp_path), "--explain",
                 "--workers", "1"]) == 0
    assert "target: cache has sm_90, running sm_80" in capsys.readouterr().out

    real = tune_cache.versions()
    monkeypatch.setattr(tune_cache, "versions", lambda: dict(real, triton="99.0.0"))
    assert main(args[:4] + ["--batch", "8", "--cache", str(tmp_path), "--explain", "--workers", "1"]) == 0
    assert f"triton version: cache has {real['triton']}, running 99.0.0" in capsys.readouterr().out


def test_tune_rejects_bad_options(tmp_path, capsys):
    assert main(["tune", "linreg", "--target", "sm_61", "--cache", str(tmp_path)]) == 2
    assert "expected one of sm_80, sm_90" in capsys.readouterr().err
    assert main(["tune", "linreg", "--batch", "eight", "--cache", str(tmp_path)]) == 2
    assert "--batch: expected a comma-separated list, got 'eight'" in capsys.readouterr().err
