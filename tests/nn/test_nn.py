"""kgen.nn against PyTorch: parameter names and shapes, forward values, and optimizer steps
(SGD with momentum, Adam) compared with torch.optim step by step."""
import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from nn_helpers import data, small_mlp, torch_mlp


def test_state_dict_names_and_shapes_are_torch_s():
    model = small_mlp()
    twin = torch_mlp(model)
    assert list(model.state_dict()) == list(twin.state_dict())
    for (name, value), (_, t) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert value.shape == tuple(t.shape), name
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(isinstance(p, kgen.SharedVariable) for p in model.parameters())


def test_default_init_is_torch_s_kaiming_uniform():
    nn.manual_seed(3)
    layer = nn.Linear(400, 50)
    bound = 1 / np.sqrt(400)
    w = layer.weight.get_value()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound and abs(w.mean()) < 0.01 * bound * 10


def test_forward_matches_torch():
    model = small_mlp()
    x, _ = data()
    got = model.predict(x)
    want = torch_mlp(model)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_optimizer_steps_match_torch(optimizer):
    model = small_mlp()
    twin = torch_mlp(model)
    if optimizer == "sgd_momentum":
        ours = nn.SGD(model.parameters(), lr=0.1, momentum=0.9)
        theirs = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    else:
        ours = nn.Adam(model.parameters(), lr=0.01)
        theirs = torch.optim.Adam(twin.parameters(), lr=0.01)
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), ours, x, y)
    for i in range(3):
        (loss,) = step(x, y)
        theirs.zero_grad()
        want = torch.nn.functional.nll_loss(twin(torch.from_numpy(x)), torch.from_numpy(y).long())
        want.backward()
        theirs.step()
        np.testing.assert_allclose(float(loss), want.item(), rtol=1e-5)
        for name, value in model.state_dict().items():
            np.testing.assert_allclose(value, twin.state_dict()[name].numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} after step {i + 1}")


def test_training_lowers_the_loss_by_a_stated_factor():
    """Three separable blobs: 40 Adam steps cut the loss at least fivefold."""
    rng = np.random.default_rng(0)
    centers = np.array([[3, 0, 0, 0, 0, 0], [0, 3, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0]], np.float32)
    y = rng.integers(0, 3, size=96).astype(np.int32)
    x = (centers[y] + rng.normal(size=(96, 6))).astype(np.float32)
    model = small_mlp()
    model.compile(nn.Adam(model.parameters(), lr=0.05), "nll", metrics=["accuracy"])
    first = model.evaluate(x, y, verbose=False)[0]
    history = model.fit(x, y, epochs=10, batch_size=24, verbose=False)
    assert len(history["loss"]) == 10
    loss, accuracy = model.evaluate(x, y, verbose=False)
    assert loss < first / 5 and accuracy > 0.9


def test_keras_style_softmax_model_with_sparse_categorical_crossentropy():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = data(24)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=False, validation_data=(x, y))
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    probs = model.predict(x)
    assert probs.shape == (24, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_load_state_dict_checks_names_and_shapes():
    model = small_mlp()
    state = model.state_dict()
    with pytest.raises(kgen.KgenError, match=r"missing \['2.bias'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "2.bias"})
    state["0.weight"] = np.zeros((6, 5), np.float32)
    with pytest.raises(kgen.ShapeError, match=r"'0.weight' has shape \[6, 5\], expected \[5, 6\]"):
        model.load_state_dict(state)


def test_fit_needs_compile_and_known_names():
    model = small_mlp()
    with pytest.raises(kgen.KgenError, match="call compile"):
        model.fit(*data())
    with pytest.raises(kgen.KgenError, match="unknown loss 'hinge'"):
        model.compile(loss="hinge")
    with pytest.raises(kgen.KgenError, match="unknown optimizer .lbfgs."):
        model.compile(optimizer="lbfgs")


def test_zoo_names_the_brief_s_models():
    assert set(nn.zoo.names()) == {"linreg", "logreg", "mlp64", "mlp128", "mlp32-dropout", "cnn", "lstm", "gru",
                                    "cifar-cnn"}
    with pytest.raises(kgen.KgenError, match="unknown model 'resnet'"):
        nn.zoo.get("resnet")


def test_mlp128_training_step_kernel_count():
    """Pinned: forward, loss, backward and the SGD-momentum update of mlp128."""
    spec = nn.zoo.get("mlp128")
    nn.manual_seed(0)
    model = spec.model()
    x = np.zeros((64, 784), np.float32)
    y = np.zeros(64, np.int32)
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)
    assert len(step.kernels) == 6  # issue target: at most 8
    # forward matmuls (bias and relu in their epilogues; the last one's epilogue holds the
    # softmax / cross-entropy rows and their gradient), then three backward launches
    assert [k.kind for k in step.kernels] == ["matmul"] * 3 + ["combo"] * 3
    assert step.kernels[2].config_rule == "matmul_rows"


def test_cnn_training_step_kernel_count():
    """Pinned: the MNIST CNN's forward, loss, backward and Adam update."""
    spec = nn.zoo.get("cnn")
    nn.manual_seed(0)
    model = spec.model()
    x = np.zeros((64, 1, 28, 28), np.float32)
    y = np.zeros(64, np.int32)
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)
    assert len(step.kernels) == 10  # issue target: at most 12
