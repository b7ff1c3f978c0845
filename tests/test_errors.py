"""Bad input gets a specific kgen error naming what was expected, what was given and where;
the process stays usable afterwards."""
import numpy as np
import pytest

import kgen
from kgen.ir.node import Node


@pytest.fixture
def affine():
    x = kgen.tensor("x", ("N", 3))
    y = kgen.tensor("y", ("N",))
    w = kgen.shared(np.ones(3, np.float32), name="w_err")
    return kgen.function([x, y], kgen.ops.mse(x @ w, y)), x, y


def good_inputs(n=4):
    return np.ones((n, 3), np.float32), np.ones(n, np.float32)


def test_wrong_shape_names_the_input(affine):
    f, _, _ = affine
    with pytest.raises(kgen.ShapeError, match=r"input 'x'.*expected shape \[N,3\].*\[4, 2\]"):
        f(np.ones((4, 2), np.float32), np.ones(4, np.float32))
    with pytest.raises(kgen.ShapeError, match=r"input 'y'.*rank"):
        f(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32))
    assert np.isfinite(f(*good_inputs()).item())  # still usable


def test_inconsistent_symbolic_size(affine):
    f, _, _ = affine
    with pytest.raises(kgen.ShapeError, match=r"input 'y'.*N = 5"):
        f(np.ones((5, 3), np.float32), np.ones(4, np.float32))


def test_wrong_dtype(affine):
    f, _, _ = affine
    with pytest.raises(kgen.InputError, match=r"input 'x'.*float32.*float64.*astype"):
        f(np.ones((4, 3)), np.ones(4, np.float32))
    with pytest.raises(kgen.InputError, match=r"input 'y'.*expected dtype float32, got int64"):
        f(np.ones((4, 3), np.float32), np.ones(4, np.int64))
    assert np.isfinite(f(*good_inputs()).item())


def test_wrong_input_count(affine):
    f, _, _ = affine
    with pytest.raises(kgen.InputError, match=r"takes 2 inputs \(x, y\), got 1"):
        f(np.ones((4, 3), np.float32))


def test_unknown_op():
    with pytest.raises(kgen.UnknownOpError, match=r"unknown op 'softplus'.*the op table has .*add"):
        Node("softplus", ())


def test_shapes_that_do_not_broadcast():
    a = kgen.tensor("a", ("N", 3))
    b = kgen.tensor("b", (4,))
    with pytest.raises(kgen.ShapeError, match=r"add\(f32\[N,3\], f32\[4\]\).*do not broadcast.*3 and 4"):
        a + b


def test_matmul_inner_dims():
    a = kgen.tensor("a", (2, 3))
    b = kgen.tensor("b", (4, 5))
    with pytest.raises(kgen.ShapeError, match=r"inner dims differ"):
        a @ b


def test_grad_of_non_scalar_needs_a_seed():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.GradError, match=r"not a scalar.*seed"):
        kgen.grad(x * 2.0, x)
    g = kgen.grad(x * 2.0, x, seed=np.ones(3, np.float32))  # with a seed it works
    np.testing.assert_allclose(kgen.reference.run(kgen.Graph([x], [g]), {"x": np.ones(3)})[0], 2.0)


def test_function_input_errors():
    x = kgen.tensor("x", (3,))
    z = kgen.tensor("z", (3,))
    s = kgen.shared(np.ones(3, np.float32), name="s_err")
    with pytest.raises(kgen.InputError, match=r"depend on input 'z'.*not among the function's inputs \(x\)"):
        kgen.function([x], x + z)
    with pytest.raises(kgen.KgenError, match=r"shared variable 's_err'.*implicitly"):
        kgen.function([x, s], x + s)
    with pytest.raises(kgen.KgenError, match=r"update of 's_err' has dtype float16, expected float32"):
        kgen.function([x], None, updates=[(s, kgen.ops.cast(s, "float16"))])
    with pytest.raises(kgen.ShapeError, match=r"update of 's_err' has shape \[\], expected \[3\]"):
        kgen.function([x], None, updates=[(s, s.sum())])
    with pytest.raises(kgen.KgenError, match=r"must target a kgen.shared"):
        kgen.function([x], None, updates=[(x, x + 1.0)])


def test_bad_dtype_for_an_op():
    labels = kgen.tensor("labels", (3,), "int32")
    with pytest.raises(kgen.DTypeError, match=r"one_hot: labels must be integers, got f32\[3\]"):
        kgen.ops.one_hot(kgen.tensor("f", (3,)), 4)
    with pytest.raises(kgen.DTypeError, match=r"cast it first"):
        kgen.ops.sum(labels > 0)


def test_shared_set_value_checks_shape():
    s = kgen.shared(np.ones(3, np.float32), name="s_shape")
    with pytest.raises(kgen.ShapeError, match=r"shared 's_shape': expected shape \[3\], got \[4\]"):
        s.set_value(np.ones(4, np.float32))
    np.testing.assert_array_equal(s.get_value(), np.ones(3))
