"""Ahead-of-time artifacts: kgen.compile_artifact writes one for sm_80 and sm_90 on a
machine with no GPU; kgen.load runs it in a fresh process with no tracing, lowering,
tuning or compiling (counted, not timed), and gives the reference's / the original
program's outputs; a damaged artifact is a clear error naming the file."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from kgen.artifact import gpu, manifest as mf
from kgen.artifact.expr import SizeExpr
from kgen.cli import main

TARGETS = ("sm_80", "sm_90")

# Loads an artifact in a fresh interpreter and runs it; prints what it did as JSON. Node and
# Graph constructions are probed too: loading must build no IR at all.
FRESH = r"""
import json, sys
import numpy as np
import kgen
from kgen import counters
from kgen.ir.graph import Graph
from kgen.ir.node import Node

made = {"nodes": 0, "graphs": 0}
def probe(cls, key):
    init = cls.__init__
    def counted(self, *args, **kwargs):
        made[key] += 1
        init(self, *args, **kwargs)
    cls.__init__ = counted
probe(Node, "nodes")
probe(Graph, "graphs")

path, data_path, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = dict(np.load(data_path))
before = counters.snapshot()
artifact = kgen.load(path)
result = {"mode": artifact.mode, "calls": [], "runs": []}
for i in range(calls):
    outputs = artifact(*[data[n] for n in artifact.arguments])
    outputs = outputs if isinstance(outputs, list) else [outputs]
    result["calls"].append([o.numpy().tolist() for o in outputs])
result["state"] = {k: artifact.get_state(k).tolist() for k in artifact.state}
for n in (37, 100):  # a size between the buckets, and one on a bucket
    if "x" in data and not calls:
        rows = {k: (v[:n] if k == "x" else v) for k, v in data.items()}
        result["runs"].append([o.numpy().tolist() for o in artifact.run(rows)])
result["counters"] = counters.since(before)
result["made"] = made
print(json.dumps(result))
"""


def run_fresh(path, data: dict, calls: int, tmp_path) -> dict:
    data_path = tmp_path / "inputs.npz"
    np.savez(data_path, **data)
    done = subprocess.run([sys.executable, "-c", FRESH, str(path), str(data_path), str(calls)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- a hand-made graph ------------------------------------------------------------------------
def small_graph():
    x = kgen.tensor("x", ("N", 13))
    w = kgen.tensor("w", (13, 5))
    b = kgen.tensor("b", (5,))
    scale = kgen.ops.constant(np.linspace(0.5, 1.5, 5).astype(np.float32))  # an array constant
    y = kgen.ops.relu(kgen.ops.matmul(x, w) + b) * scale
    return kgen.Graph([x, w, b], [y, kgen.ops.sum(y, axis=1)])


@pytest.fixture(scope="module")
def graph_artifact(tmp_path_factory):
    graph = small_graph()
    path = kgen.compile_artifact(graph, tmp_path_factory.mktemp("graph") / "art", targets=TARGETS,
                                 sizes=[{"N": 100}, {"N": 8}])
    return graph, path


def graph_inputs(n=100):
    rng = np.random.default_rng(7)
    return {"x": rng.standard_normal((n, 13)).astype(np.float32),
            "w": rng.standard_normal((13, 5)).astype(np.float32),
            "b": rng.standard_normal(5).astype(np.float32)}


def test_graph_artifact_round_trip_in_a_fresh_process(graph_artifact, tmp_path):
    graph, path = graph_artifact
    data = graph_inputs()
    result = run_fresh(path, data, calls=0, tmp_path=tmp_path)
    assert result["mode"] == "interpreter"
    assert result["counters"] == {}  # no lowering, tuning or compiling (AOT or Triton JIT)
    assert result["made"] == {"nodes": 0, "graphs": 0}  # no tracing: not one IR node built
    for n, outputs in zip((37, 100), result["runs"]):
        rows = dict(data, x=data["x"][:n])
        for got, want in zip(outputs, kgen.reference.run(graph, rows)):
            np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-5)


def test_manifest_records_the_plan_and_a_binary_per_target_and_config(graph_artifact):
    _, path = graph_artifact
    m = json.loads((path / mf.MANIFEST).read_text())
    assert m["targets"] == list(TARGETS) and m["kind"] == "program"
    assert m["buckets"] == [{"N": 8}, {"N": 100}]  # sorted
    assert [i["name"] for i in m["inputs"]] == ["x", "w", "b"]
    assert m["buffers"]["in0"]["shape"] == ["N", 13] and m["buffers"]["in0"]["dtype"] == "float32"
    assert any(b["kind"] == "constant" for b in m["buffers"].values())
    assert m["launch_order"] == [k["name"] for k in m["kernels"]]
    for kernel in m["kernels"]:
        for target in TARGETS:
            assert [c["bucket"] for c in kernel["configs"][target]] == [0, 1]
            for c in kernel["configs"][target]:
                binary = m["binaries"][c["binary"]]
                assert binary["target"] == target and binary["config"] == c["config"]
                for kind in ("ptx", "cubin", "metadata"):
                    assert binary[kind] in m["files"]
    listed = set(m["files"])
    on_disk = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {mf.MANIFEST}
    assert listed == on_disk  # every file is hash-checked
    assert (path / mf.SOURCE).read_text().count("@triton.jit") == len(m["kernels"])


def test_stored_cubin_becomes_a_triton_kernel_without_compiling(graph_artifact):
    """The GPU path up to the driver: a CompiledKernel from the stored metadata and cubin."""
    _, path = graph_artifact
    m = mf.read(path)
    files = mf.check_files(path, m)
    before = kgen.counters.snapshot()
    kgen.counters.watch_triton()
    for kernel in m["kernels"]:
        chosen = kernel["configs"]["sm_90"][0]
        binary = m["binaries"][chosen["binary"]]
        constexprs = {k: v for k, v in chosen["config"].items() if k not in ("num_warps", "num_stages")}
        compiled = gpu.load_cubin(path, binary, kernel["params"], constexprs, files[binary["cubin"]])
        assert compiled.name == kernel["name"] and compiled.metadata.target.arch == 90
        assert compiled.metadata.num_warps == chosen["config"]["num_warps"]
        assert compiled.src.fn.arg_names == [p["name"] for p in kernel["params"]]
    assert kgen.counters.since(before) == {}


def test_wrong_inputs_are_clear_errors(graph_artifact):
    _, path = graph_artifact
    artifact = kgen.load(path)
    data = graph_inputs(10)
    with pytest.raises(kgen.ShapeError, match=r"input 'w': expected shape \[13,5\] with N=10, got \[13, 4\]"):
        artifact(data["x"], data["w"][:, :4], data["b"])
    with pytest.raises(kgen.InputError, match="takes 3 inputs"):
        artifact(data["x"])
    with pytest.raises(kgen.InputError, match="input 'x': expected float32, got float64"):
        artifact(data["x"].astype(np.float64), data["w"], data["b"])


def test_artifact_embeds_the_tuned_config_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("kgen.autotune.tuner")
    from kgen.autotune.cache import TuneCache
    from kgen.kernels.launch import default_config
    monkeypatch.setenv("KGEN_CACHE_DIR", str(tmp_path / "cache"))
    program = kgen.compile(small_graph())
    kernel = program.kernels[0]
    tuned = dict(default_config(kernel, {"N": 64}, interpreted=False), num_warps=8)
    TuneCache().store(kernel, {"N": 64}, "sm_90", tuned, {"how": "test"})
    path = kgen.compile_artifact(program, tmp_path / "art", targets=("sm_90",), sizes={"N": 64})
    m = json.loads((path / mf.MANIFEST).read_text())
    first, *rest = [k["configs"]["sm_90"][0] for k in m["kernels"]]
    assert first["source"] == "tuned" and first["config"] == tuned
    assert m["binaries"][first["binary"]]["num_warps"] == 8
    assert all(c["source"] == "default" for c in rest)


# --- a zoo model's training step -----------------------------------------------------------------
@pytest.fixture(scope="module")
def step_artifact(tmp_path_factory):
    """logreg's training step (random data of MNIST's shape), its artifact, and what the
    original step returns and leaves in its state over two calls."""
    spec = nn.zoo.get("logreg")
    nn.manual_seed(3)
    model = spec.model()
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (16, 784)).astype(np.float32)
    y = (rng.uniform(size=(16, 1)) < 0.5).astype(np.float32)
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)
    path = kgen.compile_artifact(step, tmp_path_factory.mktemp("step") / "art", targets=TARGETS, sizes={"N": 16})
    calls = [[o.numpy().copy() for o in step(x, y)] for _ in range(2)]
    state = [v.get_value() for v in step.shared]
    return path, {"x": x, "y": y}, calls, state, step


def test_training_step_round_trip_in_a_fresh_process(step_artifact, tmp_path):
    path, data, calls, state, _ = step_artifact
    result = run_fresh(path, data, calls=2, tmp_path=tmp_path)
    assert result["counters"] == {} and result["made"] == {"nodes": 0, "graphs": 0}
    for got, want in zip(result["calls"], calls):  # the loaded step updates its state like the original
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.array(g), w, rtol=1e-6, atol=1e-7)
    assert len(result["state"]) == len(state)
    for got, want in zip(result["state"].values(), state):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-6, atol=1e-7)


def test_training_step_manifest_pairs_updates_with_state(step_artifact):
    path, *_, step = step_artifact
    artifact = kgen.load(path)
    m = artifact.manifest
    state = [i for i in m["inputs"] if i["role"] == "state"]
    updates = [o for o in m["outputs"] if o["role"] == "update"]
    assert artifact.arguments == ["x", "y"] and len(updates) > 0
    assert {u["updates"] for u in updates} <= {s["buffer"] for s in state}
    read_only = [s for s in state if s["buffer"] not in {u["updates"] for u in updates}]
    assert all(s["name"].endswith("_lr") for s in read_only)  # the optimizer's lr: a device scalar
    plan = getattr(step.program, "buffers", None)  # the program's buffer plan, replayed by the loader
    allocated = [b for b in m["buffers"].values() if b["kind"] == "allocated"]
    assert sum("inplace" in b for b in allocated) == len(getattr(plan, "inplace", {}))
    assert sum("slot" in b for b in allocated) == len(getattr(plan, "slot_of", {}))
    assert len(m["slots"]) == len(getattr(plan, "slots", []))
    assert set(artifact.updates.values()) <= set(artifact.state)
    name = next(iter(artifact.state))
    artifact.set_state(name, np.zeros_like(artifact.get_state(name)))
    assert not artifact.get_state(name).any()


def test_theano_style_function_with_scalar_state(tmp_path):
    """The README's linear regression: 0-d shared state, updated by each call, in process."""
    x, y = kgen.tensor("x", ("N",)), kgen.tensor("y", ("N",))
    w, b = kgen.shared(0.0, name="w"), kgen.shared(0.0, name="b")
    cost = kgen.ops.mse(w * x + b, y)
    gw, gb = kgen.grad(cost, [w, b])
    train = kgen.function([x, y], cost, updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)])
    path = kgen.compile_artifact(train, tmp_path / "linreg", targets=("sm_90",), sizes={"N": 32})
    xs = np.random.default_rng(0).random(20).astype(np.float32)
    before = kgen.counters.snapshot()
    loaded = kgen.load(path)
    assert loaded.updates == {"new w": "w", "new b": "b"}
    for _ in range(3):
        got, want = loaded(xs, 3 * xs + 2), train(xs, 3 * xs + 2)  # single output, as the original
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert kgen.counters.since(before) == {}
    assert loaded.get_state("w").shape == () and float(loaded.get_state("w")) == float(w.get_value())
    assert float(loaded.get_state("b")) == float(b.get_value()) != 0.0


# --- damaged artifacts ---------------------------------------------------------------------------------
@pytest.fixture
def damaged(graph_artifact, tmp_path):
    """A fresh copy of the graph artifact to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(graph_artifact[1], copy)
    return copy


def a_cubin(path: Path) -> Path:
    return sorted(path.glob("sm_90/*.cubin"))[0]


def reseal(path: Path, **changes) -> None:
    m = json.loads((path / mf.MANIFEST).read_text())
    m.update(changes)
    (path / mf.MANIFEST).write_text(mf.seal(m))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / mf.MANIFEST).write_text((p / mf.MANIFEST).read_text()[:300]),
     r"manifest\.json: not valid JSON"),
    (lambda p: (p / mf.MANIFEST).write_text((p / mf.MANIFEST).read_text().replace('"N",\n    13', '"N",\n    14')),
     r"manifest\.json: checksum mismatch"),
    (lambda p: (p / mf.MANIFEST).unlink(), r"manifest\.json: missing"),
    (lambda p: a_cubin(p).write_bytes(a_cubin(p).read_bytes()[:1000]),
     r"sm_90/k\w+\.0\.cubin: 1000 bytes, expected \d+ \(truncated"),
    (lambda p: a_cubin(p).write_bytes(bytes([a_cubin(p).read_bytes()[0] ^ 1]) + a_cubin(p).read_bytes()[1:]),
     r"sm_90/k\w+\.0\.cubin: sha256 mismatch"),
    (lambda p: (p / mf.SOURCE).unlink(), r"kernels\.py: missing \(listed in manifest\.json\)"),
    (lambda p: reseal(p, kgen_version="0.0.1"), r"manifest\.json: made by kgen 0\.0\.1, this is kgen .*kgen compile"),
    (lambda p: reseal(p, triton_version="2.0.0"), r"manifest\.json: made by triton 2\.0\.0, this is triton"),
    (lambda p: reseal(p, files={"../x": {"sha256": "0", "bytes": 0}}), r"points outside the artifact"),
])
def test_damaged_artifact_is_a_clear_error_naming_the_file(damaged, damage, message):
    damage(damaged)
    with pytest.raises(kgen.ArtifactError, match=message):
        kgen.load(damaged)


def test_malformed_but_sealed_manifest_is_an_error_not_a_crash(damaged):
    m = json.loads((damaged / mf.MANIFEST).read_text())
    del m["kernels"][0]["grid"]
    reseal(damaged, kernels=m["kernels"])
    with pytest.raises(kgen.ArtifactError, match=r"manifest\.json: malformed"):
        kgen.load(damaged)


def test_writing_is_atomic(tmp_path, monkeypatch):
    from kgen.kernels import aot
    out = tmp_path / "art"

    def fail(*args, **kwargs):
        raise RuntimeError("compile failed")
    monkeypatch.setattr(aot, "compile_parallel", fail)
    with pytest.raises(RuntimeError, match="compile failed"):
        kgen.compile_artifact(small_graph(), out, targets=("sm_90",))
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary left behind
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(kgen.KgenError, match="not a kgen artifact"):
        kgen.compile_artifact(small_graph(), out, targets=("sm_90",))
    assert (out / "notes.txt").read_text() == "mine"


def test_parallel_compile_keeps_order_and_compiles_equal_jobs_once():
    from kgen.kernels import aot
    from kgen.kernels.launch import default_config
    program = kgen.compile(small_graph())
    jobs = [aot.kernel_job(program.source, k, t, default_config(k, {"N": 64}, interpreted=False))
            for t in ("sm_80", "sm_90") for k in program.kernels]
    before = kgen.counters.snapshot()
    with aot.CompilePool(2) as pool:  # started ahead, as `kgen compile` does
        binaries = aot.compile_parallel(jobs + jobs[:1], pool=pool)
    assert [(b.kernel, b.target) for b in binaries] == [(j.kernel, j.target) for j in jobs + jobs[:1]]
    assert binaries[0].cubin == binaries[-1].cubin and binaries[0].metadata["name"] == jobs[0].kernel
    assert kgen.counters.since(before) == {"compiles": len(jobs)}


# --- the stored size expressions ---------------------------------------------------------------------
def test_size_expressions_evaluate_exactly_and_run_no_code():
    assert SizeExpr("676*N").evaluate({"N": 3}) == 2028
    assert SizeExpr("ceiling(676*N/p0_BLOCK_M)*ceiling(32/p0_BLOCK_N) + floor(N/3)").evaluate(
        {"N": 64, "p0_BLOCK_M": 128, "p0_BLOCK_N": 32}) == 338 + 21
    assert SizeExpr("Mod(N, 7) + N**2 - Max(N, 5)").evaluate({"N": 10}) == 3 + 100 - 10
    for bad in ("__import__('os').system('true')", "N.real", "(lambda: 1)()", "N**1000", "1.5*N"):
        with pytest.raises(kgen.KgenError, match="not allowed"):
            SizeExpr(bad)
    with pytest.raises(kgen.KgenError, match="not an integer"):
        SizeExpr("N/2").evaluate({"N": 3})


# --- the command ---------------------------------------------------------------------------------------
def test_kgen_compile_and_run(tmp_path, capsys):
    out = tmp_path / "linreg"
    assert main(["compile", "linreg", "--target", "sm_90", "--out", str(out), "--batch", "32"]) == 0
    assert "a function of" in capsys.readouterr().out
    assert main(["run", str(out), "--steps", "3", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "step 3:" in text and "interpreter" in text and "loss" in text
    np.savez(tmp_path / "in.npz", x=np.ones((5, 1), np.float32), y=np.ones((5, 1), np.float32))
    assert main(["run", str(out), "--inputs", str(tmp_path / "in.npz")]) == 0
    assert "[]" in capsys.readouterr().out  # the loss: a scalar
    (out / mf.SOURCE).write_text("damaged")
    assert main(["run", str(out)]) == 2
    assert "kernels.py" in capsys.readouterr().err


# --- one file -------------------------------------------------------------------------------
def test_archive_round_trip_in_a_fresh_process(graph_artifact, tmp_path):
    graph, path = graph_artifact
    tar = kgen.artifact.pack(path, tmp_path / "art.tar")
    result = run_fresh(tar, graph_inputs(), calls=0, tmp_path=tmp_path)
    assert result["counters"] == {}
    rows = dict(graph_inputs(), x=graph_inputs()["x"][:37])
    for got, want in zip(result["runs"][0], kgen.reference.run(graph, rows)):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-5)


def test_damaged_archives_are_clear_errors(graph_artifact, tmp_path):
    import tarfile
    _, path = graph_artifact
    tar = kgen.artifact.pack(path, tmp_path / "art.tar")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(tar.read_bytes()[:5000])
    with pytest.raises(kgen.ArtifactError, match="truncated"):
        kgen.load(truncated)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        t.add(path / "manifest.json", arcname="../manifest.json")
    with pytest.raises(kgen.ArtifactError, match="not a plain file inside"):
        kgen.load(evil)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(kgen.ArtifactError, match="garbage.tar"):
        kgen.load(garbage)


def test_a_misaligned_input_is_copied_before_the_binaries_see_it(tmp_path):
    """Binaries assume 16-byte aligned buffers (kgen.kernels.aot.aligned_params): an input
    that is a view 4 bytes into its storage is copied first, and the result is right."""
    x = kgen.tensor("x", ("N", 16))
    graph = kgen.Graph([x], [kgen.ops.relu(x) * 2.0])
    kgen.compile_artifact(kgen.compile(graph), tmp_path / "a", targets=("sm_90",), sizes={"N": 4})
    artifact = kgen.load(tmp_path / "a")
    storage = torch.arange(65, dtype=torch.float32) - 32.0
    view = storage[1:].view(4, 16)
    assert view.data_ptr() % 16 == 4
    tensor = artifact.as_tensor(view, artifact.inputs[0])
    assert tensor.data_ptr() % 16 == 0 and torch.equal(tensor, view)
    (out,) = artifact.run({"x": view})
    np.testing.assert_array_equal(out.numpy(), np.maximum(view.numpy(), 0) * 2.0)
