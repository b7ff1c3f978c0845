"""kgen.tensor / kgen.shared / kgen.function: Theano semantics on generated kernels."""
import importlib.util

import numpy as np
import pytest
import torch

import kgen
from conftest import random_array


def test_outputs_and_updates_in_one_program(rng):
    x = kgen.tensor("x", ("N", 3))
    w = kgen.shared(random_array(rng, (3,)), name="w")
    start = w.get_value()
    loss = kgen.ops.sum((x * w) ** 2)
    gw = kgen.grad(loss, w)
    step = kgen.function([x], [loss, gw], updates=[(w, w - 0.1 * gw)])
    xs = random_array(rng, (7, 3))
    got_loss, got_grad = step(xs)
    assert isinstance(got_loss, torch.Tensor) and got_loss.shape == ()
    np.testing.assert_allclose(got_loss.item(), np.sum((xs * start) ** 2), rtol=1e-5)
    want_grad = 2 * np.sum(xs * xs * start, axis=0)
    np.testing.assert_allclose(got_grad.numpy(), want_grad, rtol=1e-5)
    np.testing.assert_allclose(w.get_value(), start - 0.1 * want_grad, rtol=1e-5)


def test_updates_see_values_from_before_the_call():
    counter = kgen.shared(np.float32(1.0), name="counter")
    bump = kgen.function([], counter, updates={counter: counter + 1.0})
    assert bump().item() == 1.0
    assert bump().item() == 2.0
    assert counter.get_value() == 3.0


def test_two_updates_read_old_values():
    a = kgen.shared(np.float32(1.0), name="a")
    b = kgen.shared(np.float32(10.0), name="b")
    swap = kgen.function([], None, updates=[(a, b), (b, a)])
    assert swap() is None
    assert (a.get_value(), b.get_value()) == (10.0, 1.0)


def test_symbolic_batch_size_binds_per_call(rng):
    x = kgen.tensor("x", ("N", 4))
    f = kgen.function([x], kgen.ops.softmax(x, axis=1))
    for n in (1, 7, 13):
        xs = random_array(rng, (n, 4))
        e = np.exp(xs - xs.max(axis=1, keepdims=True))
        np.testing.assert_allclose(f(xs).numpy(), e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_numpy_and_torch_inputs_give_the_same_result(rng):
    x = kgen.tensor("x", (5,))
    f = kgen.function([x], kgen.ops.exp(x) + 1.0)
    xs = random_array(rng, (5,))
    np.testing.assert_array_equal(f(xs).numpy(), f(torch.from_numpy(xs)).numpy())


def test_inputs_views_and_shared_as_outputs(rng):
    x = kgen.tensor("x", (2, 3))
    s = kgen.shared(random_array(rng, (3,)), name="s")
    f = kgen.function([x], [x, x.T, s])
    xs = random_array(rng, (2, 3))
    same, transposed, shared = f(xs)
    np.testing.assert_array_equal(same.numpy(), xs)
    np.testing.assert_array_equal(transposed.numpy(), xs.T)
    np.testing.assert_array_equal(shared.numpy(), s.get_value())
    shared += 1  # outputs are copies: the shared value is untouched
    assert not np.array_equal(shared.numpy(), s.get_value())


def test_integer_and_bool_programs(rng):
    labels = kgen.tensor("labels", ("N",), "int32")
    hits = kgen.function([labels], [kgen.ops.one_hot(labels, 4), labels * 2 + 1, labels > 1])
    ls = np.array([0, 3, 1, 2, 3], np.int32)
    onehot, odd, big = hits(ls)
    np.testing.assert_array_equal(onehot.numpy(), np.eye(4, dtype=np.float32)[ls])
    np.testing.assert_array_equal(odd.numpy(), ls * 2 + 1)
    assert big.dtype == torch.bool and big.tolist() == [False, True, False, True, True]


def test_shared_values_round_trip():
    w = kgen.shared(np.arange(6, dtype=np.float64).reshape(2, 3), name="w6")
    assert w.dtype is kgen.float32 and w.get_value().dtype == np.float32
    w.set_value(np.ones((2, 3)))
    np.testing.assert_array_equal(w.get_value(), np.ones((2, 3), np.float32))
    h = kgen.shared(np.zeros(2), name="h", dtype="float16")
    assert h.value.dtype == torch.float16


def test_dumped_module_is_readable_and_imports(tmp_path, rng):
    x = kgen.tensor("x", ("N", 3))
    f = kgen.function([x], kgen.ops.relu(x).sum(axis=0))
    path = f.dump(tmp_path / "kernels.py")
    text = path.read_text()
    assert text == f.source and "@triton.jit" in text and "sum[axes=(0,)" in text
    spec = importlib.util.spec_from_file_location("dumped_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for kernel in f.kernels:
        assert hasattr(module, kernel.name)


def test_check_reports_every_kernel_of_a_function(rng):
    x = kgen.tensor("x", ("N", 5))
    w = kgen.shared(random_array(rng, (5, 2)), name="wc")
    labels = kgen.tensor("labels", ("N",), "int32")
    loss = kgen.ops.cross_entropy(x @ w, labels)
    f = kgen.function([x, labels], [loss, kgen.grad(loss, w)])
    report = kgen.check(f, [random_array(rng, (13, 5)), np.arange(13, dtype=np.int32) % 2])
    assert report.ok, str(report)
    assert [r.kernel for r in report.rows] == [k.name for k in f.kernels]
    assert "kernels within tolerance" in str(report)


def test_permute_and_bool_counting(rng):
    x = kgen.tensor("x", (2, 3, 4))
    flags = kgen.tensor("flags", (5,), "bool")
    f = kgen.function([x, flags], [kgen.ops.permute(x, 2, 0, 1), (flags + 1).sum()])
    xs = random_array(rng, (2, 3, 4))
    fs = np.array([True, False, True, True, False])
    permuted, count = f(xs, fs)
    np.testing.assert_array_equal(permuted.numpy(), np.transpose(xs, (2, 0, 1)))
    assert count.dtype == torch.int64 and count.item() == int((fs + 1).sum())
