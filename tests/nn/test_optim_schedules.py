"""kgen.nn's optimizers and learning-rate schedules against torch.optim: five training steps
from the same weights for each optimizer setting (weight decay, Nesterov, centered RMSprop,
Adagrad's lr decay, global-norm clipping), hyper-parameters changed between steps with no
new trace or compile (kgen.counters), and each schedule's lr sequence step by step."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import kgen
from kgen import counters, nn
from nn_helpers import data, small_mlp, torch_mlp


OPTIMIZERS = {  # name -> (kgen class, torch class, keywords both take, clip_grad_norm or None)
    "sgd_nesterov_wd": (nn.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05), None),
    "sgd_wd": (nn.SGD, torch.optim.SGD, dict(lr=0.2, weight_decay=0.1), None),
    "sgd_clipped": (nn.SGD, torch.optim.SGD, dict(lr=0.5, momentum=0.5), 0.3),
    "adam_wd_clipped": (nn.Adam, torch.optim.Adam, dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1), 0.5),
    "adamw": (nn.AdamW, torch.optim.AdamW, dict(lr=0.02, weight_decay=0.2), None),
    "rmsprop": (nn.RMSprop, torch.optim.RMSprop, dict(lr=0.01), None),
    "rmsprop_centered_momentum_wd": (nn.RMSprop, torch.optim.RMSprop,
                                     dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1), None),
    "adagrad": (nn.Adagrad, torch.optim.Adagrad,
                dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.1), None),
}


def _torch_step(twin, optimizer, x, y, clip):
    optimizer.zero_grad()
    loss = torch.nn.functional.nll_loss(twin(torch.from_numpy(x)), torch.from_numpy(y).long())
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(twin.parameters(), clip)
    optimizer.step()
    return loss.item()


def _assert_same_weights(model, twin, what):
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, twin.state_dict()[name].numpy(), rtol=2e-5, atol=2e-6,
                                   err_msg=f"{name} {what}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_five_steps_match_torch(name):
    ours_cls, theirs_cls, keywords, clip = OPTIMIZERS[name]
    model = small_mlp()
    twin = torch_mlp(model)
    ours = ours_cls(model.parameters(), clip_grad_norm=clip, **keywords)
    theirs = theirs_cls(twin.parameters(), **keywords)
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), ours, x, y)
    for i in range(5):
        (loss,) = step(x, y)
        want = _torch_step(twin, theirs, x, y, clip)
        np.testing.assert_allclose(float(loss), want, rtol=1e-5)
        _assert_same_weights(model, twin, f"after step {i + 1} ({name})")


def test_clipping_scale_is_torch_s():
    """The clipped case above clips for real: the norm of the first step's gradients is above max_norm."""
    model = small_mlp()
    twin = torch_mlp(model)
    x, y = data()
    torch.nn.functional.nll_loss(twin(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
    assert torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.3) > 0.3


def test_hyper_parameters_change_without_a_new_trace_or_compile():
    """lr, betas and weight decay changed between steps (as torch's param_groups are) take
    effect in the next step; the compiled step is the same one: no counter moves."""
    model = small_mlp()
    twin = torch_mlp(model)
    ours = nn.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    theirs = torch.optim.Adam(twin.parameters(), lr=0.01, weight_decay=0.01)
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), ours, x, y)
    counters.watch_triton()  # on a GPU, a Triton JIT compile would count too
    changes = [dict(lr=0.05), dict(betas=(0.5, 0.9)), dict(weight_decay=0.3, lr=0.002), {}]
    for i, change in enumerate(changes):
        step(x, y)
        _torch_step(twin, theirs, x, y, None)
        _assert_same_weights(model, twin, f"after step {i + 1}")
        if i == 0:
            before = counters.snapshot()  # after the first call, which may compile lazily
        for key, value in change.items():
            setattr(ours, key, value)
            theirs.param_groups[0][key] = value
    assert counters.since(before) == {}
    assert ours.lr == 0.002 and ours.betas == (0.5, 0.9)
    assert ours.scalar("lr").get_value() == np.float32(0.002)


def test_a_schedule_drives_a_compiled_step_without_recompiling():
    model = small_mlp()
    twin = torch_mlp(model)
    ours = nn.SGD(model.parameters(), lr=0.2, momentum=0.9)
    theirs = torch.optim.SGD(twin.parameters(), lr=0.2, momentum=0.9)
    ours_schedule = nn.schedules.StepLR(ours, step_size=2, gamma=0.3)
    theirs_schedule = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.3)
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), ours, x, y)
    counters.watch_triton()
    for i in range(5):
        step(x, y)
        _torch_step(twin, theirs, x, y, None)
        ours_schedule.step()
        theirs_schedule.step()
        if i == 0:
            before = counters.snapshot()
    _assert_same_weights(model, twin, "after 5 scheduled steps")
    assert counters.since(before) == {}


def test_turning_on_a_term_built_off_is_refused():
    params = small_mlp().parameters()
    sgd = nn.SGD(params, lr=0.1)
    with pytest.raises(kgen.OptionError, match="built with momentum=0.0.*build it with momentum set"):
        sgd.momentum = 0.9
    sgd.momentum = 0  # unchanged: fine
    with pytest.raises(kgen.OptionError, match="built with clip_grad_norm=None"):
        sgd.clip_grad_norm = 1.0
    with pytest.raises(kgen.OptionError, match="SGD: lr must be a number >= 0, got -1"):
        sgd.lr = -1
    with pytest.raises(kgen.OptionError, match="Adam: beta1 must be a number in \\[0, 1\\), got 1.0"):
        nn.Adam(params, betas=(1.0, 0.9))
    with pytest.raises(kgen.OptionError, match="nesterov needs a momentum"):
        nn.SGD(params, nesterov=True)
    with pytest.raises(kgen.OptionError, match="clip_grad_norm must be a number > 0, got 0"):
        nn.SGD(params, clip_grad_norm=0)


def test_optimizers_by_keras_name():
    params = small_mlp().parameters()
    for name, cls in [("sgd", nn.SGD), ("adam", nn.Adam), ("adamw", nn.AdamW), ("RMSprop", nn.RMSprop),
                      ("adagrad", nn.Adagrad)]:
        assert type(nn.optim.get(name, params)) is cls


# --- schedules: the lr sequence against torch's scheduler on a torch optimizer ---------------
def _pair(optimizer="sgd", lr=0.1, **keywords):
    weight = torch.nn.Parameter(torch.zeros(2))
    param = kgen.shared(np.zeros(2, np.float32), name="w")
    if optimizer == "sgd":
        return nn.SGD([param], lr=lr, **keywords), torch.optim.SGD([weight], lr=lr, **keywords)
    return nn.Adam([param], lr=lr, **keywords), torch.optim.Adam([weight], lr=lr, **keywords)


def _same_sequence(ours, theirs, ours_opt, theirs_opt, steps, metric=None, momentum=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: stepping a scheduler with no optimizer step before
        for i in range(steps):
            assert abs(ours_opt.lr - theirs_opt.param_groups[0]["lr"]) <= 1e-12, f"lr at step {i}"
            if momentum:
                want = theirs_opt.param_groups[0]["betas"][0] if momentum == "beta1" else \
                    theirs_opt.param_groups[0]["momentum"]
                assert abs(getattr(ours_opt, momentum) - want) <= 1e-12, f"{momentum} at step {i}"
            if i == steps - 1:
                break
            if metric is None:
                ours.step(), theirs.step()
            else:
                ours.step(metric[i]), theirs.step(metric[i])


S, T = nn.schedules, torch.optim.lr_scheduler


@pytest.mark.parametrize("make", [
    lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    lambda m, o: m.ExponentialLR(o, gamma=0.8),
    lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
], ids=["step", "multistep", "exponential", "cosine"])
def test_epoch_schedules_match_torch(make):
    ours_opt, theirs_opt = _pair()
    _same_sequence(make(S, ours_opt), make(T, theirs_opt), ours_opt, theirs_opt, steps=20)


@pytest.mark.parametrize("start_factor", [1.0 / 3, 0.01])
def test_cosine_with_warmup_is_torch_s_linear_then_cosine(start_factor):
    ours_opt, theirs_opt = _pair()
    ours = S.CosineAnnealingLR(ours_opt, T_max=10, eta_min=0.001, warmup=4, warmup_start_factor=start_factor)
    theirs = T.SequentialLR(theirs_opt, [T.LinearLR(theirs_opt, start_factor=start_factor, total_iters=4),
                                         T.CosineAnnealingLR(theirs_opt, T_max=10, eta_min=0.001)], milestones=[4])
    _same_sequence(ours, theirs, ours_opt, theirs_opt, steps=25)


@pytest.mark.parametrize("optimizer, keywords, momentum", [
    ("sgd", dict(total_steps=23), "momentum"),
    ("adam", dict(epochs=4, steps_per_epoch=5, anneal_strategy="linear", pct_start=0.25), "beta1"),
    ("sgd", dict(total_steps=30, three_phase=True, div_factor=10.0, final_div_factor=100.0), "momentum"),
])
def test_one_cycle_matches_torch_with_its_momentum(optimizer, keywords, momentum):
    ours_opt, theirs_opt = _pair(optimizer, **({"momentum": 0.9} if optimizer == "sgd" else {}))
    ours, theirs = S.OneCycleLR(ours_opt, max_lr=0.5, **keywords), T.OneCycleLR(theirs_opt, max_lr=0.5, **keywords)
    assert ours.interval == "batch"
    _same_sequence(ours, theirs, ours_opt, theirs_opt, steps=ours.total_steps, momentum=momentum)
    ours.last_epoch = ours.total_steps
    with pytest.raises(kgen.OptionError, match="more than its total_steps"):
        ours.step()


@pytest.mark.parametrize("keywords", [
    dict(patience=2),
    dict(mode="max", factor=0.5, patience=1, cooldown=2, threshold=0.05),
    dict(threshold_mode="abs", threshold=0.1, patience=0, min_lr=0.004),
    dict(mode="max", threshold_mode="abs", factor=0.2, patience=1, cooldown=1, min_lr=0.01),
])
def test_reduce_on_plateau_matches_torch(keywords):
    rng = np.random.default_rng(0)
    metric = list(np.round(1.0 + np.cumsum(rng.normal(0.0, 0.1, size=40)), 2))
    ours_opt, theirs_opt = _pair()
    _same_sequence(S.ReduceLROnPlateau(ours_opt, **keywords), T.ReduceLROnPlateau(theirs_opt, **keywords),
                   ours_opt, theirs_opt, steps=40, metric=metric)
    assert ours_opt.lr < 0.1  # the sequence did reduce


def test_schedule_options_are_checked():
    opt, _ = _pair()
    with pytest.raises(kgen.OptionError, match="StepLR: step_size must be a positive integer, got 0"):
        S.StepLR(opt, step_size=0)
    with pytest.raises(kgen.OptionError, match="OneCycleLR: give total_steps, or epochs and steps_per_epoch"):
        S.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(kgen.OptionError, match="cycle_momentum needs an optimizer with a momentum"):
        S.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with pytest.raises(kgen.OptionError, match="ReduceLROnPlateau: mode must be 'min' or 'max'"):
        S.ReduceLROnPlateau(opt, mode="lowest")
