"""The GPU benchmark suite (benchmarks/gpu_suite.py) on a machine without a GPU: it refuses
to measure with a clear message, and --smoke runs every section on CPU and writes a
complete JSON result. Timing itself belongs in benchmarks/, so only the code paths and the
result's shape are checked here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_suite  # noqa: E402
from gpu_common import at_least, table  # noqa: E402


def run_suite(*args, timeout=300):
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    done = run_suite("--smoke", "--out", str(out))
    return done, out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_with_a_message(tmp_path):
    done = run_suite("--out", str(tmp_path))
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr and "--smoke" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_writes_every_section(smoke):
    done, out = smoke
    assert done.returncode == 0, done.stderr[-3000:]
    files = list(out.glob("*-gpu_suite.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert result["smoke"] is True and result["timer"].startswith("wall clock")
    assert list(result["sections"]) == list(gpu_suite.SECTIONS)
    for name, section in result["sections"].items():
        module = gpu_suite.SECTIONS[name]
        assert section["error"] is None, f"{name}: {section['error']}"
        assert section["rows"], name
        for row in section["rows"]:
            missing = {key for key, _, _ in module.COLUMNS} - set(row)
            assert not missing or name == "train_step" and all(k.startswith("compile_") for k in missing), \
                f"{name} row lacks {missing}"
            assert all(k in row for k in module.CASE)
    targets = {t["target"] for t in result["targets"]}
    assert {"fused pointwise >= 90% of copy bandwidth", "matmul >= 90% of torch.matmul",
            "training step >= 1.3x faster than torch eager",
            "training step no slower than torch.compile max-autotune"} <= targets
    assert all(t["pass"] in (True, False, None) for t in result["targets"])


def test_smoke_checks_kgen_against_torch(smoke):
    done, out = smoke
    result = json.loads(next(out.glob("*-gpu_suite.json")).read_text())
    steps = result["sections"]["train_step"]["rows"]
    assert {r["model"] for r in steps} == {"mlp128", "cnn"}
    assert all(r["losses_agree"] for r in steps), [(r["loss_kgen"], r["loss_torch"]) for r in steps]
    assert all(r["kernels"] >= 1 and r["compile_first_call_s"] == {} for r in steps)  # no torch.compile in smoke
    assert "gpu_suite on" in done.stdout and "targets" in done.stdout


def test_unknown_section_is_refused():
    done = run_suite("--only", "pointwise,nonsense", timeout=120)
    assert done.returncode == 2 and "nonsense" in done.stderr


def test_table_and_target_checks():
    text = table([("a", "name", "{}"), ("x", "value", "{:.1f}"), ("ok", "result", "{}")],
                 [{"a": "one", "x": 1.26, "ok": True}, {"a": "two", "x": None, "ok": False}])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "value", "result"]
    assert lines[2].split() == ["one", "1.3", "pass"] and lines[3].split() == ["two", "-", "FAIL"]
    assert at_least(0.95, 0.9) is True and at_least(0.5, 0.9) is False and at_least(None, 0.9) is None


def test_a_suite_run_in_parts_ends_in_one_result(tmp_path):
    """Sections measured by an earlier run (same day, device, versions) are kept."""
    for only in ("pointwise", "epilogue"):
        done = run_suite("--smoke", "--only", only, "--out", str(tmp_path))
        assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("*-gpu_suite.json")
    result = json.loads(path.read_text())
    assert set(result["sections"]) == {"pointwise", "epilogue"} and len(result["runs"]) == 2
    assert "kept from an earlier run today: pointwise" in done.stdout
    assert {t["section"] for t in result["targets"]} == {"pointwise"}  # (epilogue states no target)
