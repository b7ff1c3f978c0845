"""kgen.nn.save / kgen.nn.load and Module.save_weights / load_weights: safetensors files under
torch's state_dict names. A round trip restores parameters, buffers, optimizer state and the
dropout seed exactly (the next step is bit-identical to a run that never saved); the files
move both ways with torch; a checkpoint that does not fit raises and changes nothing; a
failed write leaves the old file and no temporary."""
from __future__ import annotations

import os

import numpy as np
import pytest
import safetensors.torch as st
import torch

import kgen
from kgen import nn
from kgen.errors import InputError, OptionError, ShapeError

tn = torch.nn
X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])


def _model(seed, dropout=True):
    nn.manual_seed(seed)
    middle = [nn.Dropout(0.25)] if dropout else [nn.Identity()]
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), *middle, nn.Linear(8, 3))


def _torch_twin():
    return tn.Sequential(tn.Linear(4, 8), tn.BatchNorm1d(8), tn.ReLU(), tn.Identity(), tn.Linear(8, 3))


OPTIMIZERS = {"sgd-momentum": lambda params: nn.SGD(params, lr=0.1, momentum=0.9),
              "adam": lambda params: nn.Adam(params, lr=0.01)}


def _optimizer_state(optimizer) -> list:
    """The optimizer's device state, read from its attributes (kgen.nn.optim)."""
    if isinstance(optimizer, nn.Adam):
        return [optimizer.step, *optimizer.m, *optimizer.v]
    return list(optimizer.velocity)


def _snapshot(model, optimizer=None) -> list:
    seeds = [m.seed for m in model.modules() if isinstance(m, nn.Dropout)]
    state = [*model.parameters(), *model.buffers(), *seeds, *(_optimizer_state(optimizer) if optimizer else [])]
    return [var.value.clone() for var in state]


def _assert_same(got: list, want: list):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and torch.equal(g, w), f"state value {i} differs"


def _trained(make_optimizer, steps=3, dropout=True):
    model = _model(0, dropout)
    optimizer = make_optimizer(model.parameters())
    step = nn.train_step(model, nn.CrossEntropyLoss(), optimizer, X, Y)
    for i in range(steps):
        step(X[i % 2::2], Y[i % 2::2])
    return model, optimizer, step


# --- round trip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_round_trip_restores_everything_and_the_next_step_is_bit_identical(tmp_path, kind):
    model, optimizer, step = _trained(OPTIMIZERS[kind])
    nn.save(tmp_path / "ckpt.safetensors", model, optimizer, epoch=3, note="after three steps")

    fresh = _model(1)
    fresh_optimizer = OPTIMIZERS[kind](fresh.parameters())
    assert not torch.equal(fresh[0].weight.value, model[0].weight.value)
    meta = nn.load(tmp_path / "ckpt.safetensors", fresh, fresh_optimizer)

    assert meta == {"epoch": 3, "note": "after three steps"}
    _assert_same(_snapshot(fresh, fresh_optimizer), _snapshot(model, optimizer))
    assert int(fresh[1].num_batches_tracked.get_value()) == 3
    if kind == "adam":
        assert float(fresh_optimizer.step.get_value()) == 3.0
    fresh_step = nn.train_step(fresh, nn.CrossEntropyLoss(), fresh_optimizer, X, Y)
    step(X, Y)  # the run that never saved
    fresh_step(X, Y)
    _assert_same(_snapshot(fresh, fresh_optimizer), _snapshot(model, optimizer))


def test_optimizer_state_is_under_torchs_names(tmp_path):
    """The names say what torch's optimizers call the same values: Adam's exp_avg and
    exp_avg_sq after two steps match torch.optim.Adam's on the twin."""
    model, optimizer, _ = _trained(OPTIMIZERS["adam"], steps=2, dropout=False)
    nn.save(tmp_path / "adam.safetensors", model, optimizer)
    saved = st.load_file(tmp_path / "adam.safetensors")

    twin = _torch_twin()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in _model(0, dropout=False).state_dict().items()})
    torch_optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
    for i in range(2):
        torch_optimizer.zero_grad()
        tn.functional.cross_entropy(twin(torch.from_numpy(X[i::2])), torch.from_numpy(Y[i::2])).backward()
        torch_optimizer.step()

    assert float(saved["optimizer.step"]) == 2.0
    for name, p in twin.named_parameters():
        for state in ("exp_avg", "exp_avg_sq"):
            want = torch_optimizer.state[p][state]
            torch.testing.assert_close(saved[f"optimizer.{name}.{state}"], want, rtol=1e-4, atol=1e-7)
    model, optimizer, _ = _trained(OPTIMIZERS["sgd-momentum"], steps=1, dropout=False)
    nn.save(tmp_path / "sgd.safetensors", model, optimizer)
    assert sorted(n for n in st.load_file(tmp_path / "sgd.safetensors") if n.startswith("optimizer.")) == \
        sorted(f"optimizer.{name}.momentum_buffer" for name, _ in model.named_parameters())


def test_a_layer_used_twice_is_saved_under_both_names(tmp_path):
    nn.manual_seed(0)
    shared_layer = nn.Linear(3, 3)
    model = nn.Sequential(shared_layer, nn.ReLU(), shared_layer)
    nn.save(tmp_path / "tied.safetensors", model)
    assert sorted(st.load_file(tmp_path / "tied.safetensors")) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    nn.manual_seed(1)
    other = nn.Linear(3, 3)
    nn.load(tmp_path / "tied.safetensors", nn.Sequential(other, nn.ReLU(), other))
    assert torch.equal(other.weight.value, shared_layer.weight.value)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_parameters_round_trip_exactly(tmp_path, dtype):
    def half_linear(seed):
        values = np.random.default_rng(seed).standard_normal((3, 4)).astype(np.float32)
        layer = nn.Linear(4, 3)
        layer.weight = kgen.shared(values, name=f"w{seed}", dtype=dtype)
        return layer

    saved = half_linear(0)
    nn.save(tmp_path / "half.safetensors", saved)
    assert st.load_file(tmp_path / "half.safetensors")["weight"].dtype == getattr(torch, dtype)
    loaded = half_linear(1)
    nn.load(tmp_path / "half.safetensors", loaded)
    assert loaded.weight.value.dtype == getattr(torch, dtype)
    assert torch.equal(loaded.weight.value, saved.weight.value)

    nn.save(tmp_path / "float32.safetensors", nn.Linear(4, 3))
    before = _snapshot(loaded)
    with pytest.raises(InputError, match=f"weight is float32, expected {dtype}"):
        nn.load(tmp_path / "float32.safetensors", loaded)
    _assert_same(_snapshot(loaded), before)


# --- with torch ----------------------------------------------------------------------------------
def test_torch_reads_a_kgen_checkpoint(tmp_path):
    model, optimizer, _ = _trained(OPTIMIZERS["adam"], steps=2, dropout=False)
    nn.save(tmp_path / "ckpt.safetensors", model, optimizer, epoch=2)
    twin = _torch_twin()
    result = twin.load_state_dict(st.load_file(tmp_path / "ckpt.safetensors"), strict=False)

    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith("optimizer.") for k in result.unexpected_keys)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[name].numpy(), value, err_msg=name)
    assert int(twin[1].num_batches_tracked) == 2
    np.testing.assert_allclose(model.predict(X), twin.eval()(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_torch_state_dict_saved_by_safetensors_loads_into_the_kgen_twin(tmp_path):
    torch.manual_seed(0)
    twin = _torch_twin()
    for _ in range(3):  # moves the batch norm's running statistics and its count
        twin(torch.randn(5, 4))
    st.save_file(twin.state_dict(), tmp_path / "torch.safetensors")

    model = _model(0)
    seed = model[3].seed.value.clone()
    assert nn.load(tmp_path / "torch.safetensors", model) == {}
    for name, value in twin.state_dict().items():
        got = model.state_dict()[name]
        assert got.dtype == value.numpy().dtype and np.array_equal(got, value.numpy()), name
    assert torch.equal(model[3].seed.value, seed)  # torch has no seed: kgen's is kept
    np.testing.assert_allclose(model.eval().predict(X), twin.eval()(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


# --- checkpoints that do not fit -----------------------------------------------------------------
def _edited(tensors: dict, case: str) -> dict:
    tensors = dict(tensors)
    if case == "missing":
        del tensors["0.bias"]
    elif case == "extra":
        tensors["5.weight"] = torch.zeros(3, 3)
    elif case == "shape":
        tensors["0.weight"] = torch.zeros(8, 5)
    elif case == "dtype":
        tensors["1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)
    elif case == "optimizer state":
        del tensors["optimizer.4.weight.exp_avg_sq"]
    return tensors


MISMATCHES = [("missing", InputError, "missing from the file: 0.bias"),
              ("extra", InputError, "in the file but not the model: 5.weight"),
              ("shape", ShapeError, r"0.weight has shape \[8, 5\], expected \[8, 4\]"),
              ("dtype", InputError, "1.num_batches_tracked is int32, expected int64"),
              ("optimizer state", InputError, "missing from the file: optimizer.4.weight.exp_avg_sq")]


@pytest.mark.parametrize("case,error,message", MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_a_checkpoint_that_does_not_fit_raises_and_changes_nothing(tmp_path, case, error, message):
    source, source_optimizer, _ = _trained(OPTIMIZERS["adam"], steps=1)
    nn.save(tmp_path / "good.safetensors", source, source_optimizer)
    st.save_file(_edited(st.load_file(tmp_path / "good.safetensors"), case), tmp_path / "bad.safetensors")

    model = _model(1)
    optimizer = OPTIMIZERS["adam"](model.parameters())
    before = _snapshot(model, optimizer)
    with pytest.raises(error, match=message):
        nn.load(tmp_path / "bad.safetensors", model, optimizer)
    _assert_same(_snapshot(model, optimizer), before)


def test_optimizer_state_of_another_kind_changes_nothing(tmp_path):
    """The model's part fits, the optimizer's does not: the model keeps its values too."""
    source, source_optimizer, _ = _trained(OPTIMIZERS["adam"], steps=1)
    nn.save(tmp_path / "adam.safetensors", source, source_optimizer)
    model = _model(1)
    optimizer = OPTIMIZERS["sgd-momentum"](model.parameters())
    before = _snapshot(model, optimizer)
    with pytest.raises(InputError, match="missing from the file: optimizer.0.weight.momentum_buffer"):
        nn.load(tmp_path / "adam.safetensors", model, optimizer)
    _assert_same(_snapshot(model, optimizer), before)

    nn.save(tmp_path / "weights.safetensors", source)
    with pytest.raises(InputError, match="missing from the file: optimizer.0.weight.momentum_buffer"):
        nn.load(tmp_path / "weights.safetensors", model, optimizer)
    _assert_same(_snapshot(model, optimizer), before)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None], ids=["empty", "text", "torch.save"])
def test_a_file_that_is_no_safetensors_file_is_refused(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save(_torch_twin().state_dict(), path)  # a pickle, which kgen never reads
    else:
        path.write_bytes(content)
    model = _model(0)
    before = _snapshot(model)
    with pytest.raises(InputError, match="is not a safetensors file"):
        nn.load(path, model)
    with pytest.raises(InputError, match="no such file"):
        nn.load(tmp_path / "absent.safetensors", model)
    _assert_same(_snapshot(model), before)


def test_bad_arguments_to_save(tmp_path):
    model = _model(0)
    with pytest.raises(OptionError, match="meta must be JSON values"):
        nn.save(tmp_path / "ckpt.safetensors", model, epoch=np.int64(3))
    with pytest.raises(OptionError, match="is a directory"):
        nn.save(tmp_path, model)
    with pytest.raises(OptionError, match="expected a kgen.nn optimizer"):
        nn.save(tmp_path / "ckpt.safetensors", model, torch.optim.SGD(_torch_twin().parameters(), lr=0.1))
    with pytest.raises(InputError, match="not parameters of the model"):
        nn.save(tmp_path / "ckpt.safetensors", model, nn.SGD(_model(1).parameters(), momentum=0.9))
    assert os.listdir(tmp_path) == []


# --- atomic writes -------------------------------------------------------------------------------
class _HalfWriter:
    """A file that writes half of what it is given, then fails (a full disk)."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[:len(data) // 2])
        raise OSError("no space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.mark.parametrize("failure", ["while writing", "at the rename"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    model, optimizer, _ = _trained(OPTIMIZERS["adam"], steps=1)
    path = tmp_path / "ckpt.safetensors"
    nn.save(path, model, optimizer, epoch=1)
    old = path.read_bytes()

    if failure == "while writing":
        fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _HalfWriter(fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError):
        nn.save(path, model, optimizer, epoch=2)
    with pytest.raises(OSError):
        nn.save(tmp_path / "new.safetensors", model)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["ckpt.safetensors"] and path.read_bytes() == old
    assert nn.load(path, _model(1)) == {"epoch": 1}


# --- Keras's save_weights / load_weights ---------------------------------------------------------
def test_save_weights_and_load_weights(tmp_path):
    model, optimizer, _ = _trained(OPTIMIZERS["sgd-momentum"], steps=2)
    assert model.save_weights(tmp_path / "model.weights.safetensors") is None
    saved = st.load_file(tmp_path / "model.weights.safetensors")
    assert not any(name.startswith("optimizer.") for name in saved)  # weights only, as in Keras
    assert set(model.state_dict()) <= set(saved)

    fresh = _model(1)
    assert fresh.load_weights(tmp_path / "model.weights.safetensors") is None
    _assert_same(_snapshot(fresh), _snapshot(model))

    nn.save(tmp_path / "full.safetensors", model, optimizer)  # a full checkpoint: its weights
    other = _model(2)
    other.load_weights(tmp_path / "full.safetensors")
    _assert_same(_snapshot(other), _snapshot(model))

    nn.Sequential(nn.Linear(4, 5)).save_weights(tmp_path / "narrow.safetensors")
    wide = nn.Sequential(nn.Linear(4, 8))
    before = _snapshot(wide)
    with pytest.raises(ShapeError, match=r"0.weight has shape \[5, 4\], expected \[8, 4\]"):
        wide.load_weights(tmp_path / "narrow.safetensors")
    _assert_same(_snapshot(wide), before)


# --- resume: a run that stops and continues in a new process is the run that never stopped ------
_RESUME = """
import sys
from kgen.cli import main
sys.exit(main(["train", "mlp64", "--epochs", sys.argv[1], "--batch", "1024", "--checkpoint", sys.argv[2]]
              + (["--resume"] if sys.argv[3] == "1" else [])))
"""


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    import subprocess
    import sys
    from safetensors.numpy import load_file
    script = tmp_path / "run.py"
    script.write_text(_RESUME)

    def run(epochs, where, resume):
        result = subprocess.run([sys.executable, str(script), str(epochs), str(tmp_path / where), str(int(resume))],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    run(2, "straight", False)
    run(1, "stopped", False)
    out = run(2, "stopped", True)  # a new process: load after epoch 1, train epoch 2
    assert "resumed from" in out and "after epoch 1" in out
    straight = load_file(str(tmp_path / "straight" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "stopped" / "last.safetensors"))
    assert sorted(straight) == sorted(resumed)
    for name in straight:  # weights, Adam's moments and step: bit for bit
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
