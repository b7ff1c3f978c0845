"""kgen.from_torch on torch models kgen has never seen in its own API (tests/frontends/
torch_zoo.py): forward values and every parameter's gradient equal torch's (the reference
interpreter in float64 against torch in float64, rtol 1e-6; the generated kernels in
float32 under the interpreter, rtol 2e-4), and five SGD steps through `nn.train_step`
follow torch's own trajectory, batch norm's running statistics included."""
import copy

import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from kgen.nn.train import _inputs
from torch_zoo import CASES, build, torch_loss

KGEN_LOSS = {"cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "mse": nn.MSELoss, "bce": nn.BCELoss}
FLOAT64 = dict(rtol=1e-6, atol=1e-9)
KERNELS = dict(rtol=2e-4, atol=2e-5)


def _numpy(t):
    return t.detach().numpy()


def _feed(fn, x, y) -> dict:
    return {"x": _numpy(x), "y": _numpy(y), **{s.name: s.get_value() for s in fn.shared}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_torch(name):
    case = CASES[name]
    tm, x, y = build(name)
    training = not case.dropout  # dropout's masks are kgen's own: compare those models in eval mode
    model = kgen.from_torch(tm, x).train(training)
    xs, ys = _inputs(_numpy(x), _numpy(y))
    out = model(xs)
    loss = KGEN_LOSS[case.loss]()(out, ys)
    names, params = zip(*model.named_parameters())
    fn = kgen.function([xs, ys], [out, loss, *kgen.grad(loss, list(params))])

    twin = copy.deepcopy(tm).double().train(training)
    out_t = twin(x.double() if x.is_floating_point() else x)
    loss_t = torch_loss(case, out_t, y.double() if y.is_floating_point() else y)
    loss_t.backward()
    grads_t = dict(twin.named_parameters())
    expected = [out_t, loss_t] + [grads_t[n].grad for n in names]

    reference = kgen.reference.run(fn.graph, _feed(fn, x, y))
    kernels = [np.asarray(v) for v in fn(_numpy(x), _numpy(y))]
    for what, e, r, k in zip(["output", "loss", *names], expected, reference, kernels):
        np.testing.assert_allclose(r, _numpy(e), **FLOAT64, err_msg=f"{name}: {what}, reference vs torch")
        np.testing.assert_allclose(k, _numpy(e), **KERNELS, err_msg=f"{name}: {what}, kernels vs torch")


TORCH_SGD_LR = 0.1


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c.dropout))
def test_five_sgd_steps_follow_torch(name):
    case = CASES[name]
    tm, x, y = build(name, batch=8)
    model = kgen.from_torch(tm, x)
    step = nn.train_step(model, KGEN_LOSS[case.loss](), nn.SGD(model.parameters(), TORCH_SGD_LR), _numpy(x),
                         _numpy(y))
    tm.train()
    opt = torch.optim.SGD(tm.parameters(), TORCH_SGD_LR)
    for i in range(5):
        loss = float(np.asarray(step(_numpy(x), _numpy(y))[0]))
        opt.zero_grad()
        loss_t = torch_loss(case, tm(x), y)
        loss_t.backward()
        opt.step()
        assert loss == pytest.approx(float(loss_t), rel=1e-4, abs=1e-6), f"{name}: step {i}"
    mine, theirs = model.state_dict(), tm.state_dict()
    assert list(mine) == list(theirs)
    for key in theirs:
        np.testing.assert_allclose(mine[key], _numpy(theirs[key]), rtol=1e-3, atol=1e-5, err_msg=f"{name}: {key}")


def test_dropout_model_trains_with_kgen_masks():
    """A dropout model's training graph draws kgen's masks (not torch's): a step zeroes some
    of the hidden units, draws a new mask every step, and the parameters move."""
    tm, x, y = build("mlp32-dropout", batch=8)
    model = kgen.from_torch(tm, x)
    before = model.state_dict()
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), 0.1), _numpy(x), _numpy(y))
    losses = [float(np.asarray(step(_numpy(x), _numpy(y))[0])) for _ in range(3)]
    assert len(set(losses)) == 3  # a fresh mask each step
    after = model.state_dict()
    assert all(not np.array_equal(before[k], after[k]) for k in before)
