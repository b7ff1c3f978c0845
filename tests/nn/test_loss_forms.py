"""The losses with torch's argument forms (kgen.ops and the kgen.nn loss modules): reduction,
class weight, ignore_index, label_smoothing, probability targets and extra dimensions,
values and gradients against torch in float64 on the reference, a few on the kernels in
float32 under the interpreter, and the default build unchanged."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops

REDUCTIONS = ("none", "sum", "mean")
LAYOUTS = {"NC": (4, 3), "NCd": (3, 4, 2), "NCdd": (2, 3, 2, 2), "C": (5,)}


def _target_shape(shape):
    return shape[:1] + shape[2:] if len(shape) > 1 else ()


def _reference_and_grads(build, arrays: dict, wrt: str):
    """(value, d sum(value * weights) / d wrt) on the float64 reference."""
    nodes = {name: kgen.tensor(name, a.shape, "float32" if a.dtype.kind == "f" else str(a.dtype))
             for name, a in arrays.items()}
    out = build(nodes)
    value = kgen.reference.run(kgen.Graph(list(nodes.values()), [out]), arrays)[0]
    weights = np.random.default_rng(7).uniform(0.5, 1.5, np.shape(value))
    cot = kgen.tensor("cot", out.shape, "float32")
    grad, = kgen.grad(ops.sum(out * cot), [nodes[wrt]])
    got = kgen.reference.run(kgen.Graph(list(nodes.values()) + [cot], [grad]), {**arrays, "cot": weights})[0]
    return value, got, weights


def _torch_value_and_grad(fn, arrays: dict, wrt: str, weights):
    tensors = {k: torch.tensor(v) for k, v in arrays.items()}
    tensors[wrt].requires_grad_(True)
    out = fn(tensors)
    (out * torch.tensor(weights)).sum().backward()
    return out.detach().numpy(), tensors[wrt].grad.numpy()


def _compare(build, torch_fn, arrays, wrt="x"):
    value, grad, weights = _reference_and_grads(build, arrays, wrt)
    want, want_grad = _torch_value_and_grad(torch_fn, arrays, wrt, weights)
    np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-9, atol=1e-12)


def _index_targets(rng, shape, classes, ignore):
    target = rng.integers(0, classes, size=_target_shape(shape))
    if ignore is not None and target.size:
        flat = target.reshape(-1)
        flat[::2] = ignore  # half of them ignored, the rest repeated classes
    return target.astype(np.int64)


CE_CASES = list(itertools.product(LAYOUTS, REDUCTIONS, (False, True), (None, 1), (0.0, 0.2)))


@pytest.mark.parametrize("layout,reduction,weighted,ignore,smoothing", CE_CASES)
def test_cross_entropy_index_targets_match_torch(layout, reduction, weighted, ignore, smoothing):
    rng = np.random.default_rng(hash((layout, reduction, weighted, ignore, smoothing)) % 2**32)
    shape = LAYOUTS[layout]
    classes = shape[1] if len(shape) > 1 else shape[0]
    arrays = {"x": rng.normal(size=shape), "t": _index_targets(rng, shape, classes, ignore)}
    if weighted:
        arrays["w"] = rng.uniform(0.2, 2.0, size=classes)
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=-100 if ignore is None else ignore)
    _compare(lambda n: ops.cross_entropy(n["x"], n["t"], weight=n.get("w"), **kw),
             lambda t: F.cross_entropy(t["x"], t["t"], weight=t.get("w"), **kw), arrays)


@pytest.mark.parametrize("layout,reduction,weighted,smoothing",
                         list(itertools.product(LAYOUTS, REDUCTIONS, (False, True), (0.0, 0.3))))
def test_cross_entropy_probability_targets_match_torch(layout, reduction, weighted, smoothing):
    rng = np.random.default_rng(hash((layout, reduction, weighted, smoothing)) % 2**32)
    shape = LAYOUTS[layout]
    classes = shape[1] if len(shape) > 1 else shape[0]
    arrays = {"x": rng.normal(size=shape), "p": rng.dirichlet(np.ones(classes), size=int(np.prod(shape)) // classes)}
    arrays["p"] = np.moveaxis(arrays["p"].reshape((shape[0],) + shape[2:] + (classes,)), -1, 1) if len(shape) > 1 \
        else arrays["p"].reshape(shape)
    if weighted:
        arrays["w"] = rng.uniform(0.2, 2.0, size=classes)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    for wrt in ("x", "p"):
        _compare(lambda n: ops.cross_entropy(n["x"], n["p"], weight=n.get("w"), **kw),
                 lambda t: F.cross_entropy(t["x"], t["p"], weight=t.get("w"), **kw), arrays, wrt)


@pytest.mark.parametrize("layout,reduction,weighted,ignore",
                         list(itertools.product(LAYOUTS, REDUCTIONS, (False, True), (None, 0))))
def test_nll_loss_matches_torch(layout, reduction, weighted, ignore):
    rng = np.random.default_rng(hash((layout, reduction, weighted, ignore)) % 2**32)
    shape = LAYOUTS[layout]
    classes = shape[1] if len(shape) > 1 else shape[0]
    arrays = {"x": rng.normal(size=shape), "t": _index_targets(rng, shape, classes, ignore)}
    if weighted:
        arrays["w"] = rng.uniform(0.2, 2.0, size=classes)
    kw = dict(reduction=reduction, ignore_index=-100 if ignore is None else ignore)
    _compare(lambda n: ops.nll_loss(n["x"], n["t"], weight=n.get("w"), **kw),
             lambda t: F.nll_loss(t["x"], t["t"], weight=t.get("w"), **kw), arrays)


def test_every_target_ignored_gives_nan_for_the_mean_as_torch():
    arrays = {"x": np.random.default_rng(0).normal(size=(3, 4)), "t": np.full(3, 2, np.int64)}
    x, t = kgen.tensor("x", (3, 4)), kgen.tensor("t", (3,), "int64")
    got = kgen.reference.run(kgen.Graph([x, t], [ops.cross_entropy(x, t, ignore_index=2)]), arrays)[0]
    want = F.cross_entropy(torch.tensor(arrays["x"]), torch.tensor(arrays["t"]), ignore_index=2)
    assert np.isnan(got) and torch.isnan(want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_and_bce_reductions_and_weight_match_torch(reduction):
    rng = np.random.default_rng(3)
    arrays = {"p": rng.uniform(0.05, 0.95, size=(3, 4)), "t": rng.uniform(0, 1, size=(3, 4)),
              "w": rng.uniform(0.5, 2.0, size=(4,))}
    for op in (ops.mse, ops.mse_loss):
        _compare(lambda n: op(n["p"], n["t"], reduction=reduction),
                 lambda t: F.mse_loss(t["p"], t["t"], reduction=reduction), arrays, "p")
    for wrt in ("p", "t"):
        _compare(lambda n: ops.binary_cross_entropy(n["p"], n["t"], weight=n["w"], reduction=reduction),
                 lambda t: F.binary_cross_entropy(t["p"], t["t"], weight=t["w"].expand(3, 4), reduction=reduction),
                 arrays, wrt)
        _compare(lambda n: ops.binary_cross_entropy(n["p"], n["t"], reduction=reduction, eps=None),
                 lambda t: F.binary_cross_entropy(t["p"], t["t"], reduction=reduction), arrays, wrt)


def test_bce_eps_none_clamps_each_log_at_minus_100_as_torch():
    p = np.array([0.0, 1.0, 0.5, 1e-60])
    t = np.array([1.0, 0.0, 1.0, 0.5])
    pn, tn = kgen.tensor("p", (4,)), kgen.tensor("t", (4,))
    graph = kgen.Graph([pn, tn], [ops.binary_cross_entropy(pn, tn, reduction="none", eps=None)])
    got = kgen.reference.run(graph, {"p": p, "t": t})[0]
    want = F.binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == 100.0


def test_the_default_builds_are_the_ones_before_the_new_arguments():
    """The zoo's losses build exactly what they did (the snapshot of the zoo's code checks
    the generated source; this pins the graphs)."""
    x, y = kgen.tensor("x", ("N", 10)), kgen.tensor("y", ("N",), "int32")
    p, t = kgen.tensor("p", ("N", 1)), kgen.tensor("t", ("N", 1))

    def text(out, *inputs):
        return str(kgen.Graph(list(inputs), [out]))

    old_nll = -ops.mean(ops.sum(ops.log_softmax(x, axis=-1) * ops.one_hot(y, 10, x.dtype), axis=1))
    assert text(ops.cross_entropy(x, y), x, y) == text(old_nll, x, y)
    assert text(nn.CrossEntropyLoss()(x, y), x, y) == text(old_nll, x, y)
    clipped = ops.minimum(ops.maximum(p, 1e-7), 1.0 - 1e-7)
    old_bce = -ops.mean(t * ops.log(clipped) + (1.0 - t) * ops.log(1.0 - clipped))
    assert text(ops.binary_cross_entropy(p, t), p, t) == text(old_bce, p, t)
    diff = p - t
    assert text(ops.mse(p, t), p, t) == text(ops.mean(diff * diff), p, t)


def test_loss_modules_take_torchs_keywords():
    rng = np.random.default_rng(5)
    x, t = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2])
    w = rng.uniform(0.5, 1.5, 3)
    xn, tn = kgen.tensor("x", (4, 3)), kgen.tensor("t", (4,), "int64")
    cases = [(nn.CrossEntropyLoss(weight=w, ignore_index=1, reduction="sum", label_smoothing=0.1),
              torch.nn.CrossEntropyLoss(weight=torch.tensor(w), ignore_index=1, reduction="sum", label_smoothing=0.1)),
             (nn.NLLLoss(weight=w, reduction="none"), torch.nn.NLLLoss(weight=torch.tensor(w), reduction="none"))]
    for mine, theirs in cases:
        got = kgen.reference.run(kgen.Graph([xn, tn], [mine(xn, tn)]), {"x": x, "t": t})[0]
        np.testing.assert_allclose(got, theirs(torch.tensor(x), torch.tensor(t)).numpy(), rtol=1e-6)
    p, q = rng.uniform(0.1, 0.9, (4, 3)), rng.uniform(0, 1, (4, 3))
    pn, qn = kgen.tensor("p", (4, 3)), kgen.tensor("q", (4, 3))
    for mine, theirs in ((nn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum")),
                         (nn.BCELoss(reduction="none", eps=None), torch.nn.BCELoss(reduction="none"))):
        got = kgen.reference.run(kgen.Graph([pn, qn], [mine(pn, qn)]), {"p": p, "q": q})[0]
        np.testing.assert_allclose(got, theirs(torch.tensor(p), torch.tensor(q)).numpy(), rtol=1e-6)


KERNEL_CASES = {
    "weighted-ignore-smoothing": lambda x, t, p: ops.cross_entropy(
        x, t, weight=np.array([0.5, 1.0, 2.0], np.float32), ignore_index=1, label_smoothing=0.1),
    "extra-dim-none": lambda x, t, p: ops.cross_entropy(ops.reshape(x, ("N", 3, 1)), ops.reshape(t, ("N", 1)),
                                                        reduction="none"),
    "probabilities": lambda x, t, p: ops.cross_entropy(x, p, label_smoothing=0.2, reduction="sum"),
    "nll-weighted": lambda x, t, p: ops.nll_loss(ops.log_softmax(x), t, weight=np.array([1.0, 0.0, 3.0], np.float32)),
}


@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_loss_forms_on_the_kernels(case):
    """Float32 kernels under the interpreter against the reference, symbolic batch, with the
    loss's gradients."""
    rng = np.random.default_rng(11)
    x, t, p = kgen.tensor("x", ("N", 3)), kgen.tensor("t", ("N",), "int32"), kgen.tensor("p", ("N", 3))
    loss = KERNEL_CASES[case](x, t, p)
    graph = kgen.Graph([x, t, p], [loss] + list(kgen.grad(ops.sum(loss), [x, p])))
    inputs = {"x": rng.normal(size=(5, 3)).astype(np.float32), "t": np.array([0, 1, 2, 1, 0], np.int32),
              "p": rng.dirichlet(np.ones(3), 5).astype(np.float32)}
    kgen.check(graph, inputs, strict=True)


def test_bad_loss_arguments_are_clear_errors():
    x, t = kgen.tensor("x", ("N", 3)), kgen.tensor("t", ("N",), "int32")
    with pytest.raises(kgen.errors.OptionError, match=r"cross_entropy: reduction must be one of 'none', 'sum', "
                                                      r"'mean', got 'avg'"):
        ops.cross_entropy(x, t, reduction="avg")
    for op in (ops.nll_loss, ops.mse, ops.binary_cross_entropy):
        with pytest.raises(kgen.errors.OptionError, match="reduction must be one of"):
            op(x, x if op in (ops.mse, ops.binary_cross_entropy) else t, reduction=None)
    with pytest.raises(kgen.errors.OptionError, match=r"label_smoothing must be a number in \[0, 1\], got 1.5"):
        ops.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(kgen.ShapeError, match=r"weight must be \[3\] \(one per class\), got f32\[4\]"):
        ops.cross_entropy(x, t, weight=np.ones(4, np.float32))
    with pytest.raises(kgen.ShapeError, match=r"a target of class indices for scores f32\[N,3\] must have shape "
                                              r"\[N\], got i32\[N,3\]"):
        ops.nll_loss(x, kgen.tensor("u", ("N", 3), "int32"))
    with pytest.raises(kgen.ShapeError, match=r"class probabilities .* must have shape \[N,3\]"):
        ops.cross_entropy(x, kgen.tensor("q", ("N", 2)))
    with pytest.raises(kgen.errors.OptionError, match="ignore_index must be an int, got 1.5"):
        ops.nll_loss(x, t, ignore_index=1.5)
    with pytest.raises(kgen.ShapeError, match="expected scores"):
        ops.cross_entropy(kgen.tensor("s", ()), t)


def test_targets_outside_the_classes_are_refused_even_at_torchs_ignore_index():
    """ignore_index outside [0, C) ignores nothing: such a target is refused at the call
    (docs/bad_inputs.md), as every target of the default build is."""
    x, t = kgen.tensor("x", ("N", 3)), kgen.tensor("t", ("N",), "int32")
    fn = kgen.function([x, t], ops.cross_entropy(x, t, ignore_index=-100, reduction="sum"))
    with pytest.raises(kgen.InputError, match=r"expected class labels in \[0, 3\).*got -100 at index \[1\]"):
        fn(np.zeros((2, 3), np.float32), np.array([0, -100], np.int32))


@pytest.mark.parametrize("target", ["index", "probabilities"])
def test_loss_form_gradients_by_finite_differences(target):
    rng = np.random.default_rng(2)
    arrays = {"x": rng.normal(size=(3, 4, 2)), "w": rng.uniform(0.5, 1.5, 4)}
    if target == "index":
        arrays["t"] = np.array([[0, 3], [3, 1], [2, 3]], np.int64)
        kw = dict(ignore_index=3, label_smoothing=0.2, reduction="mean")
    else:
        arrays["t"] = rng.dirichlet(np.ones(4), 6).reshape(3, 2, 4).transpose(0, 2, 1)
        kw = dict(label_smoothing=0.1, reduction="sum")
    nodes = {k: kgen.tensor(k, a.shape, "int64" if a.dtype.kind == "i" else "float32") for k, a in arrays.items()}
    loss = ops.cross_entropy(nodes["x"], nodes["t"], weight=nodes["w"], **kw)
    grads = kgen.grad(loss, [nodes["x"], nodes["w"]])
    graph, loss_graph = kgen.Graph(list(nodes.values()), list(grads)), kgen.Graph(list(nodes.values()), [loss])
    for name, analytic in zip(("x", "w"), kgen.reference.run(graph, arrays)):
        numeric = np.zeros_like(arrays[name])
        for idx in np.ndindex(numeric.shape):
            bumped = [arrays[name].copy(), arrays[name].copy()]
            bumped[0][idx] += 1e-6
            bumped[1][idx] -= 1e-6
            up, down = (kgen.reference.run(loss_graph, {**arrays, name: b})[0] for b in bumped)
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=f"d loss / d {name}")
