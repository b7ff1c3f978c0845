"""The persistent autotune cache (kgen.autotune.cache): round trips, keys, concurrent
writers, corrupt entries and explained misses."""
from __future__ import annotations

import json
import warnings

import pytest

import kgen
from kgen import ops
from kgen.autotune import cache as tune_cache, tuner
from kgen.autotune.cache import TuneCache, TuneCacheWarning
from kgen.errors import KgenError
from kgen.kernels.launch import default_config

from cache_writers import run_writers, strict
from tune_programs import program

CONFIG = {"XBLOCK": 256, "num_warps": 2}


def _pointwise():
    return program("pointwise").kernels[0]


def test_round_trip_and_shape_buckets(tmp_path):
    kernel, cache = _pointwise(), TuneCache(tmp_path)
    assert cache.lookup(kernel, {"N": 64}, "sm_90") is None
    path = cache.store(kernel, {"N": 64}, "sm_90", CONFIG, {"source": "cost model", "predicted_us": 3.5})
    assert path.parent == tmp_path / f"v{tune_cache.FORMAT}"
    assert json.loads(path.read_text())["format"] == tune_cache.FORMAT
    assert cache.lookup(kernel, {"N": 64}, "sm_90") == CONFIG
    # 40 elements a row: 64 rows and 100 rows fall in the bucket of 4096 elements, 51 rows in 2048's
    assert TuneCache(tmp_path).lookup(kernel, {"N": 100}, "sm_90") == CONFIG
    assert cache.lookup(kernel, {"N": 51}, "sm_90") is None
    assert cache.lookup(kernel, {"N": 64}, "sm_80") is None
    assert cache.record(kernel, {"N": 64}, "sm_90")["predicted_us"] == 3.5
    assert tuner.config_for(kernel, {"N": 64}, "sm_90", cache) == CONFIG
    assert tuner.config_for(kernel, {"N": 64}, "sm_80", cache) == default_config(kernel, {"N": 64}, False)


def test_equal_kernels_of_different_programs_share_a_key():
    def build(name, scale):
        x = kgen.tensor(name, ("N", 40))
        return kgen.compile(kgen.Graph([x], [ops.relu(x) * scale + 1.0]), device="cpu").kernels[0]
    a, b, c = build("x", 2.0), build("images", 2.0), build("x", 3.0)
    assert a.text != b.text  # the docstrings quote the graph
    assert tune_cache.kernel_hash(a) == tune_cache.kernel_hash(b) != tune_cache.kernel_hash(c)


def test_store_refuses_a_config_the_kernel_cannot_take(tmp_path):
    with pytest.raises(KgenError, match="constexprs"):
        TuneCache(tmp_path).store(_pointwise(), {"N": 8}, "sm_90", {"BLOCK_M": 16}, {})
    with pytest.raises(KgenError, match="XBLOCK must be a positive power of two, got 100"):
        TuneCache(tmp_path).store(_pointwise(), {"N": 8}, "sm_90", {"XBLOCK": 100, "num_warps": 4}, {})


# --- several processes at once -------------------------------------------------------------------------
def _writer(cache, worker, kernel, rounds):
    for i in range(rounds):
        n = 1 << (i % 6)  # six keys, written by both processes over and over
        cache.store(kernel, {"N": n}, "sm_90", {"XBLOCK": 32 << worker, "num_warps": 1}, {"worker": worker, "i": i})
        cache.lookup(kernel, {"N": n}, "sm_90")


def test_two_processes_writing_at_once_leave_a_valid_cache(tmp_path):
    kernel = _pointwise()
    run_writers(_writer, tmp_path, 2, kernel, 120, timeout_s=60)
    cache = TuneCache(tmp_path)
    files = sorted((tmp_path / f"v{tune_cache.FORMAT}").iterdir())
    assert len(files) == 6 and all(f.suffix == ".json" for f in files)
    with strict():
        assert len(cache.entries()) == 6
        for i in range(6):
            config = cache.lookup(kernel, {"N": 1 << i}, "sm_90")
            assert config in ({"XBLOCK": 32, "num_warps": 1}, {"XBLOCK": 64, "num_warps": 1})
            assert config["XBLOCK"] == 32 << cache.record(kernel, {"N": 1 << i}, "sm_90")["worker"]


# --- corrupt entries -----------------------------------------------------------------------------------
def _damage_truncate(path):
    path.write_text(path.read_text()[:40])


def _damage_edit_config(path):
    path.write_text(path.read_text().replace('"XBLOCK": 256', '"XBLOCK": 512'))


def _damage_wrong_format(path):
    body = json.loads(path.read_text())
    body["format"] = 99
    path.write_text(json.dumps(body))


def _damage_bad_config_with_valid_checksum(path):
    body = json.loads(path.read_text())
    body.pop("checksum"), body.pop("format")
    body["config"] = {"XBLOCK": 256, "YBLOCK": 4, "num_warps": 2}
    tune_cache.write_entry(path, body)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_edit_config, _damage_wrong_format,
                                    _damage_bad_config_with_valid_checksum])
def test_a_corrupt_entry_is_reported_ignored_and_rebuilt(damage, tmp_path):
    prog, sizes = program("pointwise"), {"N": 64}
    kernel, cache = prog.kernels[0], TuneCache(tmp_path)
    path = cache.store(kernel, sizes, "sm_90", CONFIG, {"source": "test"})
    damage(path)
    with pytest.warns(TuneCacheWarning, match="ignored, and the next tuning of this kernel rebuilds it"):
        assert cache.lookup(kernel, sizes, "sm_90") is None
    assert str(path) in cache.problems[-1]
    assert "is unusable" in cache.explain(kernel, sizes, "sm_90")
    with pytest.warns(TuneCacheWarning):
        [result] = tuner.tune_program(prog, sizes, ["sm_90"], cache=cache, workers=1)
    assert result.source == "cost model"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuneCacheWarning)
        assert cache.lookup(kernel, sizes, "sm_90") == result.config  # rebuilt, and trusted again


# --- explained misses ----------------------------------------------------------------------------------
def test_explain_names_the_key_part_that_differs(tmp_path, monkeypatch):
    kernel, cache = _pointwise(), TuneCache(tmp_path)
    assert "has no entries" in cache.explain(kernel, {"N": 64}, "sm_90")
    cache.store(kernel, {"N": 64}, "sm_90", CONFIG, {"source": "cost model"})
    assert cache.explain(kernel, {"N": 64}, "sm_90").startswith("hit: k0_pointwise on sm_90")
    assert "target: cache has sm_90, running sm_80" in cache.explain(kernel, {"N": 64}, "sm_80")
    assert "shape bucket: cache has {x<=4096}, running {x<=65536}" in cache.explain(kernel, {"N": 1000}, "sm_90")
    real = tune_cache.versions()
    monkeypatch.setattr(tune_cache, "versions", lambda: dict(real, triton="9.9.9"))
    assert cache.lookup(kernel, {"N": 64}, "sm_90") is None
    explained = cache.explain(kernel, {"N": 64}, "sm_90")
    assert explained.startswith("miss:") and f"triton version: cache has {real['triton']}, running 9.9.9" in explained
    monkeypatch.setattr(tune_cache, "versions", lambda: dict(real, kgen="0.0.1"))
    assert f"kgen version: cache has {real['kgen']}, running 0.0.1" in cache.explain(kernel, {"N": 64}, "sm_90")


def test_explain_for_a_kernel_the_cache_has_never_seen(tmp_path):
    cache = TuneCache(tmp_path)
    cache.store(_pointwise(), {"N": 64}, "sm_90", CONFIG, {"source": "cost model"})
    other = program("row_sum").kernels[0]
    explained = cache.explain(other, {"N": 64}, "sm_90")
    assert "kernel source: no entry for this source" in explained and "k0_pointwise" in explained
