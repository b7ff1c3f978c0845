"""Tuning spread over processes (kgen.autotune.workers): compiles over K processes decide
and cache exactly what one process does; timings spread over device workers (here torch
device names on the interpreter, as the GPU's CUDA indices would be) decide what one
device does; several processes writing one cache lose no entry; --devices without a GPU
is refused."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from kgen.autotune import tuner, workers
from kgen.autotune.cache import TuneCache
from kgen.cli import main

from cache_writers import run_writers, strict
from tune_programs import counting_launcher, program, programs_timer

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _tree(directory) -> dict:
    """Every file under `directory` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class Counting:
    """A progress that records its lines and counts ticks (kgen.autotune.progress's protocol)."""

    def __init__(self):
        self.lines, self.ticks, self.totals = [], 0, []

    def __call__(self, message):
        self.lines.append(message)

    def count(self, total, what):
        self.totals.append(total)

        def tick():
            self.ticks += 1
        return tick


def _square_where(x):
    return x * x, os.getpid(), workers.pinned_device()


def test_workers_return_results_in_job_order_from_other_processes():
    with workers.Workers(2) as pool:
        found = pool.map(_square_where, range(7))
    assert [r[0] for r in found] == [x * x for x in range(7)]
    assert os.getpid() not in {r[1] for r in found}
    assert workers.Workers(1).map(_square_where, [3]) == [(9, os.getpid(), None)]  # one worker: here


def test_device_workers_are_pinned_one_device_each():
    with workers.Workers(devices=["cpu", "meta"]) as pool:
        found = pool.map(_square_where, range(4))
    assert [r[0] for r in found] == [0, 1, 4, 9]
    pinned = {}
    for _, pid, device in found:
        assert pinned.setdefault(pid, device) == device  # a worker keeps its device
    assert set(pinned.values()) <= {"cpu", "meta"} and len(set(pinned.values())) == len(pinned)


def test_compiles_spread_over_processes_decide_and_cache_what_one_process_does(tmp_path):
    prog, sizes = program("matmul_fp32"), {"N": 64}
    runs = {}
    for jobs in (1, 2):
        progress = Counting()
        results = tuner.tune_program(prog, sizes, ["sm_90", "sm_80"], cache=TuneCache(tmp_path / f"jobs{jobs}"),
                                     workers=jobs, progress=progress)
        runs[jobs] = results, progress
    (one, p1), (two, p2) = runs[1], runs[2]
    assert [(r.kernel, r.target, r.config, r.source, r.predicted_us) for r in one] == \
           [(r.kernel, r.target, r.config, r.source, r.predicted_us) for r in two]
    assert all(r.source == "cost model" and r.compiled >= 2 for r in one)
    assert _tree(tmp_path / "jobs1") == _tree(tmp_path / "jobs2")  # tune entries and compile facts, byte for byte
    assert p1.lines == p2.lines and p1.totals == p2.totals
    assert p2.ticks == sum(p2.totals) == sum(r.compiled for r in two)  # a tick per compile


def test_timings_spread_over_device_workers_decide_what_one_device_does(tmp_path, rng):
    prog, sizes = program("pointwise"), {"N": 37}
    x = rng.uniform(-2, 2, size=(37, 40)).astype(np.float32)
    runs = {}
    for devices in (None, ["cpu", "cpu"]):
        bench = tuner.Bench(prog, {"x": x}, sizes, launcher=counting_launcher, timer=programs_timer, device="cpu",
                            devices=devices)
        progress = Counting()
        [result] = tuner.tune_program(prog, sizes, ["sm_90"], cache=TuneCache(tmp_path / str(bool(devices))),
                                      bench=bench, workers=1, progress=progress)
        runs[bool(devices)] = result, progress
    (here, _), (spread, progress) = runs[False], runs[True]
    assert spread.source == here.source == "measured"
    assert spread.config == here.config and spread.measured_us == here.measured_us
    assert spread.record["timings"] == here.record["timings"]
    assert all(math.isfinite(t["us"]) and t["problem"] == "" for t in spread.record["timings"])
    assert progress.ticks == len(spread.record["timings"]) == spread.compiled
    assert any("timing" in line for line in progress.lines)


# --- several processes writing one cache ---------------------------------------------------------------
OWN_KEYS, SHARED_KEYS, WRITERS = 5, 3, 4


def _writer(cache, worker, kernel):
    for rounds in range(20):
        for i in range(OWN_KEYS):  # keys only this writer writes
            n = 1 << (SHARED_KEYS + worker * OWN_KEYS + i)
            cache.store(kernel, {"N": n}, "sm_90", {"XBLOCK": 128, "num_warps": 4}, {"worker": worker, "round": rounds})
        for i in range(SHARED_KEYS):  # keys every writer writes
            cache.store(kernel, {"N": 1 << i}, "sm_90", {"XBLOCK": 32 << worker, "num_warps": 1}, {"worker": worker})
            cache.lookup(kernel, {"N": 1 << i}, "sm_90")
        cache.facts.put("source", "sm_90", {"XBLOCK": 32 << worker}, {"registers": worker})


def test_writers_of_one_cache_at_once_lose_no_entry(tmp_path):
    kernel = program("pointwise").kernels[0]
    run_writers(_writer, tmp_path, WRITERS, kernel)
    cache = TuneCache(tmp_path)
    with strict():
        assert len(cache.entries()) == WRITERS * OWN_KEYS + SHARED_KEYS
        for worker in range(WRITERS):
            for i in range(OWN_KEYS):
                sizes = {"N": 1 << (SHARED_KEYS + worker * OWN_KEYS + i)}
                assert cache.lookup(kernel, sizes, "sm_90") == {"XBLOCK": 128, "num_warps": 4}
                assert cache.record(kernel, sizes, "sm_90") == {"worker": worker, "round": 19, "kernel": kernel.name}
        for i in range(SHARED_KEYS):  # one writer's whole entry: its config with its record
            config = cache.lookup(kernel, {"N": 1 << i}, "sm_90")
            assert config["XBLOCK"] == 32 << cache.record(kernel, {"N": 1 << i}, "sm_90")["worker"]
        for worker in range(WRITERS):
            assert cache.facts.get("source", "sm_90", {"XBLOCK": 32 << worker}) == {"registers": worker}


# --- the command -----------------------------------------------------------------------------------------
def test_tune_jobs_fill_the_cache_as_one_process_does(tmp_path, capsys):
    tables = {}
    for jobs in ("1", "2"):
        args = ["tune", "linreg", "--target", "sm_90", "--batch", "8", "--cache", str(tmp_path / jobs), "--jobs", jobs]
        assert main(args) == 0
        out = capsys.readouterr()
        tables[jobs] = out.out.replace(str(tmp_path / jobs), "CACHE")
        assert "compiling" in out.err
    assert tables["1"] == tables["2"]
    assert _tree(tmp_path / "1") == _tree(tmp_path / "2")
    assert main(["tune", "linreg", "--target", "sm_90", "--batch", "8", "--cache", str(tmp_path / "1"),
                 "--workers", "2"]) == 0  # the old name of --jobs
    assert " cache " in capsys.readouterr().out


def test_devices_without_a_gpu_are_refused(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here; also on a machine with GPUs
    assert main(["tune", "linreg", "--devices", "0,1", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--devices 0,1: no CUDA device is visible" in err and "--jobs K" in err
    assert not list(tmp_path.iterdir())  # refused before any work
    assert main(["tune", "linreg", "--devices", "one", "--cache", str(tmp_path)]) == 2
    assert "--devices: expected a comma-separated list, got 'one'" in capsys.readouterr().err
    assert main(["tune", "linreg", "--devices", "-1", "--cache", str(tmp_path)]) == 2
    assert "got '-1'" in capsys.readouterr().err
