"""The activations and rounding ops of kgen.ops (composites, and the primitives erf, floor,
fmod, remainder and trunc_div beneath them) on the float64 reference interpreter: values and
gradients against torch in float64 at edge values (0, -0.0, the kinks and bounds, huge
values, inf, NaN) and at random points, and gradients against finite differences.
The float32 kernels: tests/kernels/test_activation_kernels.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen import nn, ops

from activation_cases import BINARY, EDGES, UNARY, binary_arrays, torch_values_and_grads, values_and_grads

def assert_same(got, want, what, rtol=1e-10, atol=1e-300, zero_sign=True):
    """Within tolerance, NaN where torch has NaN, and (for values) zeros of torch's sign."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    close = np.isclose(got, want, rtol=rtol, atol=atol) | (np.isnan(got) & np.isnan(want))
    if zero_sign:
        close &= (want != 0) | (np.signbit(got) == np.signbit(want))
    assert close.all(), f"{what}: got {got[~close][:6]}, torch {want[~close][:6]} ({(~close).sum()} differ)"


# torch's tanh gelu, 0.5x(1 + tanh(u)), cancels for x < -5 even in float64 (4e-6 relative at
# x = -6); kgen's x * sigmoid(2u) does not, so values and gradients agree there to an
# absolute 1e-14 only. At x = +-inf torch's gradient is NaN (inf * 0), kgen's that of
# x * sigmoid(2u) with u held at its value for x = +-1e4: 1 and 0.
ATOL = {"gelu_tanh": 1e-14}
INFINITE_GRADIENT_DIFFERS = {"gelu_tanh"}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_matches_torch_at_the_edges(name):
    build, fn = UNARY[name]
    got, cot = values_and_grads(build, [EDGES])
    want = torch_values_and_grads(fn, [EDGES], cot)
    assert_same(got[0], want[0], f"{name} value", atol=ATOL.get(name, 1e-300))
    where = ~np.isinf(EDGES) if name in INFINITE_GRADIENT_DIFFERS else np.ones(EDGES.shape, bool)
    assert_same(got[1][where], want[1][where], f"{name} gradient", atol=ATOL.get(name, 1e-300), zero_sign=False)
    if name in INFINITE_GRADIENT_DIFFERS:
        np.testing.assert_array_equal(got[1][np.isinf(EDGES)] / cot[np.isinf(EDGES)], [1.0, 0.0])


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_matches_torch_at_the_edges(name):
    build, fn = BINARY[name]
    arrays = binary_arrays(name)
    got, cot = values_and_grads(build, list(arrays))
    want = torch_values_and_grads(fn, list(arrays), cot)
    # torch's clamp by a tensor bound returns the bound on a tie (clamp(0.0, min=-0.0) is
    # -0.0), by a scalar bound x (clamp(-0.0, min=0.0) is -0.0); kgen returns x on both
    assert_same(got[0], want[0], f"{name} value", zero_sign=name != "clamp_tensor_bounds")
    for i in (1, 2):
        assert_same(got[i], want[i], f"{name} gradient of operand {i}", zero_sign=False)


def _smooth_points(rng, shape, name):
    """Random points away from each op's kinks and jumps (finite differences step over them)."""
    x = rng.uniform(-4.0, 4.0, shape)
    x[np.abs(x) < 0.05] += 0.2
    if name in ("floor", "trunc"):
        x = np.floor(x) + rng.uniform(0.1, 0.9, shape)
    for bound in (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 6.0):
        near = np.abs(x - bound) < 1e-3
        x[near] += 0.01
    return x


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradient_matches_finite_differences(name, rng):
    build, _ = UNARY[name]
    x = _smooth_points(rng, (23,), name)
    (_, grad), cot = values_and_grads(build, [x])
    eps = 1e-6
    (up, _), _ = values_and_grads(build, [x + eps])
    (down, _), _ = values_and_grads(build, [x - eps])
    np.testing.assert_allclose(grad, cot * (up - down) / (2 * eps), rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("name", ["fmod", "remainder", "div_floor", "div_trunc", "clamp_tensor_bounds"])
def test_binary_gradient_matches_finite_differences(name, rng):
    build, _ = BINARY[name]
    a = rng.uniform(0.3, 9.0, 17) * rng.choice([-1.0, 1.0], 17)
    b = rng.uniform(0.4, 3.0, 17) * rng.choice([-1.0, 1.0], 17)
    (_, ga, gb), cot = values_and_grads(build, [a, b])
    eps = 1e-6
    for grad, bump in ((ga, lambda e: (a + e, b)), (gb, lambda e: (a, b + e))):
        (up, *_), _ = values_and_grads(build, list(bump(eps)))
        (down, *_), _ = values_and_grads(build, list(bump(-eps)))
        np.testing.assert_allclose(grad, cot * (up - down) / (2 * eps), rtol=1e-6, atol=1e-8, err_msg=name)


def test_remainder_gradient_is_torchs_where_the_quotient_rounds():
    """1 / 0.1 rounds to 10 in float64, 1 // 0.1 is 9: remainder's gradient for b is
    -floor_divide(a, b) (-9), fmod's -trunc(a / b) (-10), each as torch's."""
    for build, fn in (BINARY["remainder"], BINARY["fmod"]):
        got, cot = values_and_grads(build, [np.array([1.0, -1.0, 2.5]), np.array([0.1, 0.1, -0.1])])
        want = torch_values_and_grads(fn, [np.array([1.0, -1.0, 2.5]), np.array([0.1, 0.1, -0.1])], cot)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_division_keeps_integers(dtype):
    a = np.array([7, -7, 7, -7, 0, 6, -6, 5], dtype)
    b = np.array([2, 2, -2, -2, 3, -3, 3, 7], dtype)
    x, y = kgen.tensor("a", a.shape, dtype), kgen.tensor("b", b.shape, dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cases = {"trunc": (ops.div(x, y, rounding_mode="trunc"), torch.div(ta, tb, rounding_mode="trunc")),
             "floor": (ops.div(x, y, rounding_mode="floor"), torch.div(ta, tb, rounding_mode="floor")),
             "floor_divide": (ops.floor_divide(x, y), torch.floor_divide(ta, tb)),
             "fmod": (ops.fmod(x, y), torch.fmod(ta, tb)), "remainder": (ops.remainder(x, y), torch.remainder(ta, tb)),
             "remainder_scalar": (ops.remainder(x, 3), torch.remainder(ta, 3)),
             "clamp": (ops.clamp(x, -3, 4), torch.clamp(ta, -3, 4)), "floor_id": (ops.floor(x), torch.floor(ta)),
             "true_div": (ops.div(x, y), torch.div(ta, tb).float())}  # reference: float64 for float32
    for name, (node, want) in cases.items():
        assert node.dtype.name == str(want.dtype).replace("torch.", ""), name
        (got,) = kgen.reference.run(kgen.Graph([x, y], [node]), [a, b])
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-7, err_msg=name)


def test_div_without_rounding_mode_builds_what_it_did():
    a, b = kgen.tensor("a", (3,)), kgen.tensor("b", (3,))
    assert ops.div(a, b).op == "div" and (a / b).op == "div"
    assert ops.div(a, b, rounding_mode=None).inputs == (a, b)


def test_activation_graphs_use_primitives_only():
    """The activations are composites: one elementwise primitive per step, gelu through erf."""
    x = kgen.tensor("x", (4,))
    assert "erf" in {n.op for n in kgen.Graph([x], [ops.gelu(x)]).nodes}
    assert "erf" not in {n.op for n in kgen.Graph([x], [ops.gelu(x, approximate="tanh")]).nodes}


@pytest.mark.parametrize("call, match", [
    (lambda x: ops.gelu(x, approximate="exact"), "approximate"),
    (lambda x: ops.div(x, 2.0, rounding_mode="round"), "rounding_mode"),
    (lambda x: ops.hardtanh(x, 1.0, -1.0), "min_val"),
    (lambda x: ops.clamp(x), "at least one"),
    (lambda x: ops.softplus(x, beta=0.0), "beta"),
])
def test_bad_options_are_refused(call, match):
    with pytest.raises(kgen.errors.OptionError, match=match):
        call(kgen.tensor("x", (3,)))


def test_bad_dtypes_are_refused():
    flags, x = kgen.tensor("b", (3,), "bool"), kgen.tensor("x", (3,))
    with pytest.raises(kgen.DTypeError, match="bool"):
        ops.div(flags, flags, rounding_mode="floor")
    with pytest.raises(kgen.DTypeError, match="bool"):
        ops.remainder(flags, flags)
    with pytest.raises(kgen.DTypeError, match="trunc_div divides integers"):
        kgen.Node("trunc_div", (x, x))
    with pytest.raises(kgen.errors.ArgumentError, match="negative_slop"):
        ops.leaky_relu(x, negative_slop=0.1)


# --- kgen.nn layers ---------------------------------------------------------------------------------
LAYERS = [
    (nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.SiLU(), torch.nn.SiLU()),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)), (nn.ELU(alpha=0.5), torch.nn.ELU(alpha=0.5)),
    (nn.Softplus(beta=2.0, threshold=5.0), torch.nn.Softplus(beta=2.0, threshold=5.0)),
    (nn.Hardtanh(-0.5, 2.0), torch.nn.Hardtanh(-0.5, 2.0)), (nn.ReLU6(), torch.nn.ReLU6()),
    (nn.Identity(), torch.nn.Identity()),
]


@pytest.mark.parametrize("layer, twin", LAYERS, ids=lambda v: repr(v))
def test_layers_match_torch(layer, twin):
    x = kgen.tensor("x", EDGES.shape)
    (got,) = kgen.reference.run(kgen.Graph([x], [layer(x)]), [EDGES])
    assert_same(got, twin(torch.tensor(EDGES)).numpy(), repr(layer), atol=1e-14)


def test_layers_take_torchs_arguments_and_are_exported():
    assert nn.GELU().approximate == "none" and nn.LeakyReLU().negative_slope == 0.01
    assert nn.ELU().alpha == 1.0 and (nn.Softplus().beta, nn.Softplus().threshold) == (1.0, 20.0)
    assert (nn.Hardtanh().min_val, nn.Hardtanh().max_val) == (-1.0, 1.0)
    assert (nn.ReLU6().min_val, nn.ReLU6().max_val) == (0.0, 6.0)
    assert "negative_slope=0.2" in repr(nn.LeakyReLU(0.2))
    assert {"GELU", "SiLU", "LeakyReLU", "ELU", "Softplus", "Hardtanh", "ReLU6", "Identity"} <= set(nn.__all__)
    with pytest.raises(kgen.errors.OptionError, match="min_val"):
        nn.Hardtanh(2.0, 1.0)
