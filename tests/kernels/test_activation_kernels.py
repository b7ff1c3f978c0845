"""The activations and rounding ops as float32 kernels (Triton's interpreter here): values and
gradients against torch in float64 at edge values and random points, and each activation
after a matmul computed in the matmul's epilogue (one kernel, rule E1).

torch's own float32 gelu loses digits where 1 + erf(x) cancels (gelu(-3): 1.3e-4 relative),
so the activations' oracle is torch in float64, rounded to float32. The rounding ops' is
torch in float32: their results (and fmod's gradient, -trunc(a / b)) depend on how a / b
rounds in the dtype. torch's gradient at NaN differs between its vectorised and scalar loops
(elu, hardtanh: NaN or 1, 0 or 1); kgen's is the scalar loop's, which tests/ir checks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kgen
from kgen import ops

from activation_cases import BINARY, EDGES, UNARY, binary_arrays, torch_values_and_grads, values_and_grads

INFINITE_GRADIENT_DIFFERS = {"gelu_tanh"}  # torch's is NaN there (tests/ir/test_activations.py)

RTOL, ATOL = 2e-6, 1e-7  # a few float32 ulps; atol for results that cancel to near 0 (gelu(-3))
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-6


def _close(got, want, what, rtol, atol, zero_sign):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float32).astype(np.float64)
    ok = np.isclose(got, want, rtol=rtol, atol=atol) | (np.isnan(got) & np.isnan(want))
    if zero_sign:
        ok &= (want != 0) | (np.signbit(got) == np.signbit(want))
    assert ok.all(), f"{what}: got {got[~ok][:6]}, torch {want[~ok][:6]} ({(~ok).sum()} differ)"


def _points(rng):
    """The edges (their float32 values) and random points of either sign."""
    return np.concatenate([EDGES.astype(np.float32), rng.uniform(-8, 8, 40).astype(np.float32)]).astype(np.float64)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_kernel_matches_torch(name, rng):
    build, fn = UNARY[name]
    x = _points(rng)
    got, cot = values_and_grads(build, [x], "float32")
    want = torch_values_and_grads(fn, [x], cot.astype(np.float32).astype(np.float64))
    _close(got[0], want[0], f"{name} value", RTOL, ATOL, zero_sign=True)
    number = ~np.isnan(x) & ~(np.isinf(x) & (name in INFINITE_GRADIENT_DIFFERS))
    _close(got[1][number], want[1][number], f"{name} gradient", GRAD_RTOL, GRAD_ATOL, zero_sign=False)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_kernel_matches_torch(name):
    build, fn = BINARY[name]
    a, b = (v.astype(np.float32).astype(np.float64) for v in binary_arrays(name))
    got, cot = values_and_grads(build, [a, b], "float32")
    want = torch_values_and_grads(fn, [a, b], cot.astype(np.float32), torch.float32)
    _close(got[0], want[0], f"{name} value", RTOL, ATOL, zero_sign=name != "clamp_tensor_bounds")
    for i in (1, 2):
        _close(got[i], want[i], f"{name} gradient {i}", GRAD_RTOL, GRAD_ATOL, zero_sign=False)


def test_fmod_is_exact_where_the_float32_quotient_rounds():
    """fmod(1, 0.1f) is 0.09999999 (1 - 9 * 0.1f), though 1 / 0.1f rounds to 10 in float32."""
    a = np.array([1.0, -1.0, 2.5, 100.0, 7.0], np.float32)
    b = np.array([0.1, 0.1, -0.1, 0.3, 0.7], np.float32)
    x, y = kgen.tensor("a", (5,)), kgen.tensor("b", (5,))
    got = kgen.function([x, y], [ops.fmod(x, y), ops.remainder(x, y), ops.floor_divide(x, y)])(a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for g, want in zip(got, (torch.fmod(ta, tb), torch.remainder(ta, tb), torch.floor_divide(ta, tb))):
        np.testing.assert_array_equal(g.numpy(), want.numpy())


ACTIVATIONS = ["gelu", "gelu_tanh", "silu", "leaky_relu", "elu", "softplus", "hardtanh", "relu6", "clamp", "erf"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_after_a_matmul_runs_in_its_epilogue(name, rng):
    x, w, b = kgen.tensor("x", ("N", 24)), kgen.tensor("w", (24, 16)), kgen.tensor("b", (16,))
    out = UNARY[name][0](x @ w + b)
    f = kgen.function([x, w, b], [out])
    assert len(f.kernels) == 1, f.source
    values = {"x": rng.standard_normal((5, 24)).astype(np.float32),
              "w": rng.standard_normal((24, 16)).astype(np.float32),
              "b": rng.standard_normal(16).astype(np.float32)}
    (got,) = f(values["x"], values["w"], values["b"])
    t = {k: torch.from_numpy(v).double() for k, v in values.items()}
    want = UNARY[name][1](t["x"] @ t["w"] + t["b"]).numpy()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    kgen.check(f, [values["x"], values["w"], values["b"]], strict=True)
