"""kgen.nn's BatchNorm1d/2d and LayerNorm, and Module buffers: torch's names, dtypes, order and
initialisation; state_dict both ways with torch; training steps that update the running
statistics as torch's twin does, and evaluation with them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import nn

tn = torch.nn


def _pair(kgen_model, torch_model):
    """torch's twin (float64) with kgen's initial state."""
    torch_model = torch_model.double()
    torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in kgen_model.state_dict().items()})
    return torch_model


def _bn_cnn():
    nn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5, momentum=None), nn.LayerNorm(5), nn.Linear(5, 3))


def _bn_cnn_torch():
    return tn.Sequential(tn.Conv2d(2, 3, 3, padding=1), tn.BatchNorm2d(3), tn.ReLU(), tn.Flatten(),
                         tn.Linear(3 * 4 * 4, 5), tn.BatchNorm1d(5, momentum=None), tn.LayerNorm(5), tn.Linear(5, 3))


def _assert_same_state(kgen_model, torch_model, atol=2e-6):
    want = torch_model.state_dict()
    got = kgen_model.state_dict()
    assert list(got) == list(want)
    for name, value in got.items():
        w = want[name].numpy()
        if w.dtype.kind == "i":
            assert value.dtype == np.int64 and value.shape == () and value == w, name
        else:
            np.testing.assert_allclose(value, w, rtol=1e-5, atol=atol, err_msg=name)


# --- buffers -------------------------------------------------------------------------------------
def test_register_buffer_keeps_its_dtype_and_stays_out_of_the_parameters():
    m = nn.Module()
    count = m.register_buffer("count", np.array(0, np.int64))
    m.register_buffer("scale", np.ones(3))  # float64: kgen's widest float, float32
    m.register_buffer("absent", None)
    m.add_parameter("weight", np.zeros(2))
    assert isinstance(count, kgen.SharedVariable) and m.count is count
    assert count.dtype is kgen.int64 and count.shape == () and m.scale.dtype is kgen.float32
    assert [n for n, _ in m.named_buffers()] == ["count", "scale"] and m.buffers() == [m.count, m.scale]
    assert m.parameters() == [m.weight] and m.absent is None
    assert list(m.state_dict()) == ["weight", "count", "scale"]
    assert m.state_dict()["count"].dtype == np.int64


def test_assigning_to_a_buffer_s_name_replaces_the_buffer():
    m = nn.Module()
    m.register_buffer("stat", np.zeros(2, np.float32))
    m.stat = kgen.shared(np.ones(2, np.float32))
    assert m.buffers() == [m.stat] and m.parameters() == []
    with pytest.raises(kgen.KgenError, match="stat is a buffer: assign a kgen.shared value or None, got ndarray"):
        m.stat = np.zeros(2)


def test_register_buffer_refuses_bad_names():
    m = nn.Linear(2, 2)
    with pytest.raises(kgen.KgenError, match="already has a parameter or module 'weight'"):
        m.register_buffer("weight", np.zeros(2))
    with pytest.raises(kgen.KgenError, match="must be an identifier, got 'a.b'"):
        m.register_buffer("a.b", np.zeros(2))


def test_non_persistent_buffers_stay_out_of_the_state_dict():
    m = nn.Module()
    m.register_buffer("kept", np.zeros(1, np.float32))
    m.register_buffer("scratch", np.zeros(1, np.float32), persistent=False)
    assert list(m.state_dict()) == ["kept"] and len(m.buffers()) == 2


def test_state_dict_names_order_and_dtypes_match_torch_both_ways():
    model = _bn_cnn()
    twin = _bn_cnn_torch()
    assert list(model.state_dict()) == list(twin.state_dict())
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in twin.named_buffers()]
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]
    _assert_same_state(model, _pair(model, twin), atol=0)  # kgen's into torch
    with torch.no_grad():  # torch's into kgen, with a count of batches and statistics of its own
        twin[1].running_mean.uniform_(-1, 1)
        twin[1].running_var.uniform_(0.5, 2)
        twin[1].num_batches_tracked.fill_(7)
    model.load_state_dict(twin.state_dict())
    _assert_same_state(model, twin, atol=0)
    assert model[1].num_batches_tracked.dtype is kgen.int64


def test_load_state_dict_refuses_missing_unexpected_and_misshapen_buffers():
    model = _bn_cnn()
    state = model.state_dict()
    with pytest.raises(kgen.KgenError, match=r"missing \['1.num_batches_tracked'\], unexpected \[\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "1.num_batches_tracked"})
    with pytest.raises(kgen.KgenError, match=r"missing \[\], unexpected \['1.running_std'\]"):
        model.load_state_dict({**state, "1.running_std": np.ones(3)})
    before = model.state_dict()
    with pytest.raises(kgen.ShapeError, match=r"'1.running_var' has shape \[4\], expected \[3\]"):
        model.load_state_dict({**{k: v + 1 for k, v in state.items()}, "1.running_var": np.ones(4)})
    for name, value in model.state_dict().items():  # refused: nothing was set
        np.testing.assert_array_equal(value, before[name])


# --- the layers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["BatchNorm1d", "BatchNorm2d", "LayerNorm"])
def test_layers_take_torch_s_arguments_and_initialisation(layer):
    args = ((4, 5),) if layer == "LayerNorm" else (4,)
    ours, theirs = getattr(nn, layer)(*args), getattr(tn, layer)(*args)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[name], value.numpy())
        assert ours.state_dict()[name].dtype == value.numpy().dtype, name


def test_layer_options_drop_parameters_and_buffers_as_torch_does():
    cases = [("BatchNorm1d", (3,), dict(affine=False)), ("BatchNorm2d", (3,), dict(track_running_stats=False)),
             ("LayerNorm", (3,), dict(elementwise_affine=False)), ("LayerNorm", (3,), dict(bias=False))]
    for layer, args, kwargs in cases:
        ours, theirs = getattr(nn, layer)(*args, **kwargs), getattr(tn, layer)(*args, **kwargs)
        assert list(ours.state_dict()) == list(theirs.state_dict()), (layer, kwargs)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


def test_batch_norm_layers_refuse_inputs_of_the_wrong_rank():
    with pytest.raises(kgen.ShapeError, match=r"BatchNorm2d: expected 4D input, got f32\[N,3\]"):
        nn.BatchNorm2d(3)(kgen.tensor("x", ("N", 3)))
    with pytest.raises(kgen.ShapeError, match=r"BatchNorm1d: expected 2D or 3D input"):
        nn.BatchNorm1d(3)(kgen.tensor("x", ("N", 3, 2, 2)))


def test_training_matches_torch_in_loss_parameters_and_running_statistics(rng):
    """Three SGD steps of a CNN with BatchNorm2d, BatchNorm1d (momentum=None: the cumulative
    average) and LayerNorm: the same losses and the same state_dict as torch's twin, then
    the same evaluation (running statistics) loss; the step checks against the reference."""
    model = _bn_cnn()
    twin = _pair(model, _bn_cnn_torch())
    x = rng.normal(size=(6, 2, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), lr=0.2, momentum=0.5), x, y)
    assert len(step.kernels) == 20  # pinned: forward, loss, backward, SGD-momentum and 6 buffer updates
    opt = torch.optim.SGD(twin.parameters(), lr=0.2, momentum=0.5)
    for _ in range(3):
        (loss,) = step(x, y)
        opt.zero_grad()
        want = tn.functional.cross_entropy(twin(torch.from_numpy(x).double()), torch.from_numpy(y).long())
        want.backward()
        opt.step()
        assert float(loss) == pytest.approx(want.item(), rel=1e-5)
    _assert_same_state(model, twin)
    assert int(model[1].num_batches_tracked.get_value()) == 3
    (loss,) = nn.eval_step(model, nn.CrossEntropyLoss(), x, y)(x, y)
    twin.eval()
    want = tn.functional.cross_entropy(twin(torch.from_numpy(x).double()), torch.from_numpy(y).long())
    assert float(loss) == pytest.approx(want.item(), rel=1e-5)
    before = model.state_dict()
    assert kgen.check(step, [x, y], strict=True).ok
    assert model.state_dict()["1.num_batches_tracked"] == before["1.num_batches_tracked"]  # check runs no step


def test_evaluation_without_running_statistics_uses_the_batch(rng):
    model = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False))
    x = rng.normal(size=(5, 3)).astype(np.float32)
    got = nn.predict_step(model, x)(x).cpu().numpy()
    want = tn.BatchNorm1d(3, track_running_stats=False).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_batch_norm_training_step_compiles_for_sm80_and_sm90(rng):
    from kgen.kernels import aot
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4),
                          nn.LayerNorm(4))
    x, y = np.zeros((4, 1, 4, 4), np.float32), np.zeros(4, np.int32)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.Adam(model.parameters()), x, y)
    binaries = aot.compile_program(step.program, targets=("sm_80", "sm_90"))
    assert len(binaries) == 2 * len(step.kernels) and all(b.cubin[:4] == b"\x7fELF" for b in binaries)
