"""kgen.nn's BCEWithLogitsLoss, HuberLoss, SmoothL1Loss and cross-entropy's label smoothing
against torch (values and gradients: float64 on the reference, float32 on the kernels), and
the metrics (accuracy, top-k accuracy, binary accuracy) against NumPy, by name in
compile/fit/evaluate too."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops

RNG = np.random.default_rng(0)
X = RNG.normal(0.0, 2.0, size=(6, 4))
Y01 = RNG.integers(0, 2, size=(6, 4)).astype(np.float64)
YSOFT = RNG.uniform(0.0, 1.0, size=(6, 4))
YREAL = X + RNG.choice([-1.0, 1.0], size=(6, 4)) * RNG.uniform(0.05, 2.5, size=(6, 4))  # clear of the kinks
POS_WEIGHT = np.array([0.5, 1.0, 2.0, 3.0])
WEIGHT = RNG.uniform(0.5, 1.5, size=(4,)).astype(np.float32).astype(np.float64)  # kgen's constants are float32

CASES = {  # name -> (kgen loss, torch loss, target)
    "bce_logits": (nn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(), Y01),
    "bce_logits_soft_none": (nn.BCEWithLogitsLoss(reduction="none"), torch.nn.BCEWithLogitsLoss(reduction="none"),
                             YSOFT),
    "bce_logits_pos_weight": (nn.BCEWithLogitsLoss(pos_weight=POS_WEIGHT),
                              torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(POS_WEIGHT)), Y01),
    "bce_logits_weights_sum": (nn.BCEWithLogitsLoss(WEIGHT, "sum", POS_WEIGHT),
                               torch.nn.BCEWithLogitsLoss(torch.tensor(WEIGHT), reduction="sum",
                                                          pos_weight=torch.tensor(POS_WEIGHT)), YSOFT),
    "huber": (nn.HuberLoss(), torch.nn.HuberLoss(), YREAL),
    "huber_delta_none": (nn.HuberLoss("none", delta=0.5), torch.nn.HuberLoss("none", delta=0.5), YREAL),
    "smooth_l1": (nn.SmoothL1Loss(), torch.nn.SmoothL1Loss(), YREAL),
    "smooth_l1_beta_sum": (nn.SmoothL1Loss("sum", beta=0.7), torch.nn.SmoothL1Loss(reduction="sum", beta=0.7), YREAL),
    "smooth_l1_beta0": (nn.SmoothL1Loss(beta=0.0), torch.nn.SmoothL1Loss(beta=0.0), YREAL),
}


def _reference(loss, x, target):
    """(value, d sum(value * weights) / dx) on kgen's float64 reference, and the weights."""
    xs = kgen.tensor("x", x.shape, "float32")
    ys = kgen.tensor("y", target.shape, "float32" if target.dtype.kind == "f" else "int64")
    out = loss(xs, ys)
    arrays = {"x": x, "y": target}
    value = kgen.reference.run(kgen.Graph([xs, ys], [out]), arrays)[0]
    weights = np.random.default_rng(7).uniform(0.5, 1.5, np.shape(value))
    cot = kgen.tensor("cot", out.shape, "float32")
    (grad,) = kgen.grad(ops.sum(out * cot), [xs])
    got = kgen.reference.run(kgen.Graph([xs, ys, cot], [grad]), {**arrays, "cot": weights})[0]
    return value, got, weights


def _torch(loss, x, target, weights):
    xt = torch.tensor(x, requires_grad=True)
    out = loss(xt, torch.tensor(target))
    (out * torch.tensor(weights)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_values_and_gradients_match_torch(name):
    ours, theirs, target = CASES[name]
    value, grad, weights = _reference(ours, X, target)
    want, want_grad = _torch(theirs, X, target, weights)
    np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


def test_label_smoothing_in_cross_entropy_matches_torch():
    labels = RNG.integers(0, 4, size=6)
    value, grad, weights = _reference(nn.CrossEntropyLoss(label_smoothing=0.2), X, labels)
    want, want_grad = _torch(lambda x, y: F.cross_entropy(x, y, label_smoothing=0.2), X, labels, weights)
    np.testing.assert_allclose(value, want, rtol=1e-10)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


def test_bce_with_logits_is_finite_for_large_logits():
    x = np.array([[-100.0, -30.0, 0.0, 30.0, 100.0]])
    y = np.array([[1.0, 0.0, 1.0, 1.0, 0.0]])
    value, grad, weights = _reference(nn.BCEWithLogitsLoss(reduction="none"), x, y)
    want, want_grad = _torch(torch.nn.BCEWithLogitsLoss(reduction="none"), x, y, weights)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ["bce_logits_weights_sum", "huber_delta_none", "smooth_l1_beta_sum"])
def test_losses_on_the_kernels_in_float32(name):
    ours, theirs, target = CASES[name]
    x32, y32 = X.astype(np.float32), target.astype(np.float32)
    xs, ys = kgen.tensor("x", x32.shape), kgen.tensor("y", y32.shape)
    out = ours(xs, ys)
    (grad,) = kgen.grad(ops.sum(out), [xs])
    value, got = kgen.function([xs, ys], [out, grad])(x32, y32)
    xt = torch.tensor(x32, requires_grad=True)
    want = theirs.float()(xt, torch.tensor(y32)) if hasattr(theirs, "float") else theirs(xt, torch.tensor(y32))
    want.sum().backward()
    np.testing.assert_allclose(value.cpu().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.cpu().numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_loss_names_and_options():
    assert type(nn.losses.get("huber")) is nn.HuberLoss
    assert type(nn.losses.get("smooth_l1")) is nn.SmoothL1Loss
    assert type(nn.losses.get("bce_with_logits")) is nn.BCEWithLogitsLoss
    with pytest.raises(kgen.OptionError, match="HuberLoss: delta must be a number > 0, got 0"):
        nn.HuberLoss(delta=0)
    with pytest.raises(kgen.OptionError, match="SmoothL1Loss: beta must be a number >= 0, got -1"):
        nn.SmoothL1Loss(beta=-1)
    with pytest.raises(kgen.OptionError, match="HuberLoss: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        nn.HuberLoss(reduction="avg")(kgen.tensor("p", (2,)), kgen.tensor("t", (2,)))


# --- metrics -----------------------------------------------------------------------------
SCORES = RNG.normal(size=(20, 7)).astype(np.float32)
LABELS = RNG.integers(0, 7, size=20).astype(np.int32)


def _metric(fn, scores, labels):
    s = kgen.tensor("s", scores.shape)
    lab = kgen.tensor("l", labels.shape, "float32" if labels.dtype.kind == "f" else "int32")
    return float(kgen.function([s, lab], fn(s, lab))(scores, labels))


def _numpy_top_k(scores, labels, k):
    return float(np.mean([label in np.argsort(-row)[:k] for row, label in zip(scores, labels)]))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_accuracy_matches_numpy(k):
    want = _numpy_top_k(SCORES, LABELS, k)
    assert 0 < want < 1
    assert _metric(nn.metrics.get(f"top{k}"), SCORES, LABELS) == pytest.approx(want)
    one_hot = np.eye(7, dtype=np.float32)[LABELS]
    assert _metric(lambda s, lab: nn.metrics.top_k_accuracy(s, lab, k), SCORES, one_hot) == pytest.approx(want)


def test_accuracy_and_binary_accuracy_match_numpy():
    assert nn.metrics.get("top_k_accuracy") is not None
    want = float(np.mean(SCORES.argmax(1) == LABELS))
    assert _metric(nn.metrics.get("accuracy"), SCORES, LABELS) == pytest.approx(want)
    probs = RNG.uniform(size=(20, 3)).astype(np.float32)
    targets = RNG.integers(0, 2, size=(20, 3)).astype(np.float32)
    want = float(np.mean((probs > 0.5) == (targets > 0.5)))
    assert _metric(nn.metrics.get("binary_accuracy"), probs, targets) == pytest.approx(want)
    want = float(np.mean((probs > 0.7) == (targets > 0.5)))
    assert _metric(lambda p, t: nn.metrics.binary_accuracy(p, t, 0.7), probs, targets) == pytest.approx(want)


def test_metrics_by_name_in_compile_fit_and_evaluate():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 7))
    model.compile(nn.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
                  metrics=["accuracy", "top3", "top_k_accuracy"])
    history = model.fit(SCORES, LABELS, epochs=1, batch_size=8, verbose=False)
    assert list(history) == ["loss", "accuracy", "top3", "top_k_accuracy"]
    loss, acc, top3, top5 = model.evaluate(SCORES, LABELS, verbose=False)
    out = model.predict(SCORES)
    assert acc == pytest.approx(np.mean(out.argmax(1) == LABELS))
    assert top3 == pytest.approx(_numpy_top_k(out, LABELS, 3))
    assert top5 == pytest.approx(_numpy_top_k(out, LABELS, 5))
    with pytest.raises(kgen.KgenError, match="unknown metric 'f1'"):
        model.compile(metrics=["f1"])
