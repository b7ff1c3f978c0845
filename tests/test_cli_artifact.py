"""`kgen compile` and `kgen run` as a user meets them: no overwriting without --force, an
atomic replacement with it, outputs and state by the program's names, the state saved, and
bad artifacts and inputs refused in one line with nothing written."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import kgen
from kgen.artifact import manifest as mf
from kgen.cli import main

COMPILE = ["--target", "sm_90", "--batch", "8", "--workers", "1"]


def refused(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def snapshot(directory) -> dict:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def linreg(tmp_path_factory):
    """linreg's training step compiled by `kgen compile` (once for the module)."""
    out = tmp_path_factory.mktemp("compiled") / "linreg.kgen"
    assert main(["compile", "linreg", "--out", str(out), *COMPILE]) == 0
    return out


@pytest.fixture
def artifact(linreg, tmp_path):
    """A copy of it, alone in a directory of its own."""
    return shutil.copytree(linreg, tmp_path / "linreg.kgen")


def test_run_names_outputs_and_state_as_the_program_does(artifact, capsys):
    manifest = mf.read(artifact)
    assert [o["name"] for o in manifest["outputs"]] == ["loss", "new weight", "new bias"]
    assert [i["name"] for i in manifest["inputs"]] == ["x", "y", "weight", "bias", "optimizer.lr"]
    assert main(["run", str(artifact), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^step 2: loss [\d.e+-]+$", out, re.M) and re.search(r"^loss +\[\] +float32 ", out, re.M)
    assert kgen.load(artifact).get_state("weight").shape == (1, 1)


def test_run_saves_the_state_after_its_steps(artifact, tmp_path, capsys):
    """Against NumPy: linreg's MSE and gradient descent (lr 0.1) for three steps."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (6, 1)).astype(np.float32)
    y = (3 * x + 2).astype(np.float32)
    np.savez(tmp_path / "batch.npz", x=x, y=y)
    loaded = kgen.load(artifact)
    w, b = loaded.get_state("weight").astype(np.float64), loaded.get_state("bias").astype(np.float64)
    losses = []
    for _ in range(3):
        error = x @ w.T + b - y
        losses.append(np.mean(error ** 2))
        w, b = w - 0.1 * 2 * np.mean(error * x, axis=0, keepdims=True), b - 0.1 * 2 * np.mean(error, axis=0)

    save = tmp_path / "out" / "state.npz"
    assert main(["run", str(artifact), "--inputs", str(tmp_path / "batch.npz"), "--steps", "3",
                 "--save", str(save)]) == 0
    out = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"^step \d: loss (\S+)$", out, re.M)]
    np.testing.assert_allclose(printed, losses, rtol=1e-5)
    assert f"saved the state after 3 calls to {save}" in out
    with np.load(save) as state:
        assert sorted(state.files) == ["bias", "optimizer.lr", "weight"]  # the lr: a device scalar, state too
        np.testing.assert_allclose(state["weight"], w, rtol=1e-5)
        np.testing.assert_allclose(state["bias"], b, rtol=1e-5)
    assert [p.name for p in save.parent.iterdir()] == ["state.npz"]  # no temporary file left beside it


def test_compile_refuses_to_overwrite_without_force(artifact, capsys):
    before = snapshot(artifact)
    refused(capsys, ["compile", "linreg", "--out", str(artifact), *COMPILE],
            f"--out: {artifact} is already an artifact; pass --force to replace it")
    tar = artifact.with_name("new.kgen.tar")
    tar.write_bytes(b"an older archive")
    refused(capsys, ["compile", "linreg", "--out", str(artifact.with_name("new.kgen")), "--archive", *COMPILE],
            f"--archive: {tar} already exists; pass --force to replace it")
    assert snapshot(artifact) == before and tar.read_bytes() == b"an older archive"
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["linreg.kgen", "new.kgen.tar"]


def test_compile_never_touches_what_is_not_an_artifact(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    for out in ("notes", "file"):
        refused(capsys, ["compile", "linreg", "--out", str(tmp_path / out), "--force", *COMPILE],
                f"--out: expected a new or empty directory, or a kgen artifact to replace, got {tmp_path / out}",
                "that is not a kgen artifact; not touching it")
    refused(capsys, ["compile", "linreg", "--out", str(tmp_path / "file" / "a.kgen"), *COMPILE],
            "--out: expected a path in a directory", f"under the file {tmp_path / 'file'}")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes"]


def test_compile_force_replaces_atomically(artifact, capsys, monkeypatch):
    before = snapshot(artifact)
    old_weight = kgen.load(artifact).get_state("weight")

    def fail(*args, **kwargs):  # a failure half way: after the step is built, before anything is written
        raise kgen.KgenError("the compiler broke")
    with monkeypatch.context() as m:
        m.setattr("kgen.kernels.aot.compile_parallel", fail)
        refused(capsys, ["compile", "linreg", "--out", str(artifact), "--force", *COMPILE], "the compiler broke")
    assert snapshot(artifact) == before and [p.name for p in artifact.parent.iterdir()] == ["linreg.kgen"]

    assert main(["compile", "linreg", "--out", str(artifact), "--force", "--seed", "1", *COMPILE]) == 0
    assert [p.name for p in artifact.parent.iterdir()] == ["linreg.kgen"]  # nothing left beside it
    replaced = kgen.load(artifact)
    assert not np.array_equal(replaced.get_state("weight"), old_weight)  # seed 1's initial weights
    assert [o["name"] for o in replaced.outputs][0] == "loss"


def test_run_refuses_missing_and_damaged_artifacts(artifact, tmp_path, capsys):
    refused(capsys, ["run", str(tmp_path / "nothing")], f"{tmp_path / 'nothing'}: no artifact here")
    (artifact / mf.MANIFEST).write_text((artifact / mf.MANIFEST).read_text().replace('"loss"', '"lost"'))
    refused(capsys, ["run", str(artifact)], "manifest.json: checksum mismatch")
    (artifact / mf.MANIFEST).unlink()
    refused(capsys, ["run", str(artifact)], "manifest.json: missing")
    (tmp_path / "junk.tar").write_bytes(b"not a tar file")
    refused(capsys, ["run", str(tmp_path / "junk.tar")], "junk.tar: not a readable artifact archive")


def test_run_refuses_bad_inputs_and_writes_nothing(artifact, tmp_path, capsys):
    save = tmp_path / "state.npz"
    np.savez(tmp_path / "x-only.npz", x=np.ones((4, 1), np.float32))
    refused(capsys, ["run", str(artifact), "--inputs", str(tmp_path / "x-only.npz"), "--save", str(save)],
            f"--inputs {tmp_path / 'x-only.npz'}: expected arrays named x, y", "got x")
    np.savez(tmp_path / "wide.npz", x=np.ones((4, 2), np.float32), y=np.ones((4, 1), np.float32))
    refused(capsys, ["run", str(artifact), "--inputs", str(tmp_path / "wide.npz"), "--save", str(save)],
            f"--inputs {tmp_path / 'wide.npz'}: input 'x': expected shape [N,1] with N=4, got [4, 2]")
    refused(capsys, ["run", str(artifact), "--inputs", str(tmp_path / "none.npz")],
            f"--inputs {tmp_path / 'none.npz'}: cannot read it as an .npz file")
    refused(capsys, ["run", str(artifact), "--inputs", str(tmp_path / "wide.npz"), "--batch", "4"],
            "--batch: sizes random inputs, but --inputs", "expected one of the two, got both")
    refused(capsys, ["run", str(artifact), "--save", str(tmp_path)],
            f"--save: expected a file to write, got {tmp_path}, a directory")
    assert not save.exists()


def test_save_needs_state(tmp_path, capsys):
    x = kgen.tensor("x", ("N",))
    kgen.compile_artifact(kgen.function([x], x * 2.0), tmp_path / "double.kgen", targets=["sm_90"], sizes={"N": 8})
    refused(capsys, ["run", str(tmp_path / "double.kgen"), "--save", str(tmp_path / "s.npz")],
            "--save: ", "has no state to save")
    assert not (tmp_path / "s.npz").exists()
