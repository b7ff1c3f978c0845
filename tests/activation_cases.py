"""The cases the activation and rounding tests share (tests/ir/test_activations.py on the
reference, tests/kernels/test_activation_kernels.py on kernels): each op's kgen builder and
torch twin, the edge values, and kgen's and torch's values and gradients."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

import kgen
from kgen import ops

EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-4, -1e-4, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 3.0, -3.0,
                  6.0, -6.0, 10.0, 20.0, 25.0, -25.0, 90.0, -90.0, 1e30, -1e30, np.inf, -np.inf, np.nan])

# name -> (kgen builder, torch twin); the kgen builders are what the kernels tests run too
UNARY = {
    "gelu": (ops.gelu, F.gelu),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (ops.silu, F.silu),
    "leaky_relu": (ops.leaky_relu, F.leaky_relu),
    "leaky_relu_0.2": (lambda x: ops.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2)),
    "elu": (ops.elu, F.elu),
    "elu_0.5": (lambda x: ops.elu(x, alpha=0.5), lambda x: F.elu(x, alpha=0.5)),
    "softplus": (ops.softplus, F.softplus),
    "softplus_beta2_threshold10": (lambda x: ops.softplus(x, 2.0, 10.0), lambda x: F.softplus(x, 2.0, 10.0)),
    "softplus_beta_half": (lambda x: ops.softplus(x, beta=0.5), lambda x: F.softplus(x, beta=0.5)),
    "hardtanh": (ops.hardtanh, F.hardtanh),
    "hardtanh_-2_0.5": (lambda x: ops.hardtanh(x, -2.0, 0.5), lambda x: F.hardtanh(x, -2.0, 0.5)),
    "relu6": (ops.relu6, F.relu6),
    "clamp": (lambda x: ops.clamp(x, -1.0, 1.5), lambda x: torch.clamp(x, -1.0, 1.5)),
    "clamp_at_zero": (lambda x: ops.clamp(x, 0.0), lambda x: torch.clamp(x, 0.0)),
    "clamp_max": (lambda x: ops.clamp(x, max=0.5), lambda x: torch.clamp(x, max=0.5)),
    "clamp_min_above_max": (lambda x: ops.clamp(x, 2.0, 1.0), lambda x: torch.clamp(x, 2.0, 1.0)),
    "clip": (lambda x: ops.clip(x, -0.5, 0.5), lambda x: torch.clip(x, -0.5, 0.5)),
    "erf": (ops.erf, torch.erf),
    "floor": (ops.floor, torch.floor),
    "trunc": (ops.trunc, torch.trunc),
}
BINARY = {
    "div_trunc": (lambda a, b: ops.div(a, b, rounding_mode="trunc"), lambda a, b: torch.div(a, b, rounding_mode="trunc")),
    "div_floor": (lambda a, b: ops.div(a, b, rounding_mode="floor"), lambda a, b: torch.div(a, b, rounding_mode="floor")),
    "floor_divide": (ops.floor_divide, lambda a, b: torch.div(a, b, rounding_mode="floor")),  # torch's has no grad
    "fmod": (ops.fmod, torch.fmod),
    "remainder": (ops.remainder, torch.remainder),
    "clamp_tensor_bounds": (lambda x, b: ops.clamp(x, b, 0.25 * b + 1.0),
                            lambda x, b: torch.clamp(x, b, 0.25 * b + 1.0)),
}
DIVISION_VALUES = np.array([0.0, -0.0, 0.1, -0.1, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 7.0, -7.0, 1e-3, 1e6,
                            np.inf, -np.inf, np.nan])


def values_and_grads(build, arrays, dtype="float64"):
    """kgen's value of build(*arrays) and its gradients for a cotangent that is not 1 (the
    reference interpreter, or with dtype="float32" the compiled kernels)."""
    inputs = [kgen.tensor(f"x{i}", a.shape) for i, a in enumerate(arrays)]
    out = build(*inputs)
    cot = kgen.tensor("cot", out.shape)
    cotangent = np.linspace(0.5, 1.5, int(np.prod(out.shape, dtype=np.int64))).reshape(out.shape)
    grads = kgen.grad(ops.sum(out * cot), inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if dtype == "float64":
            return kgen.reference.run(kgen.Graph([*inputs, cot], [out, *grads]), [*arrays, cotangent]), cotangent
        got = kgen.function([*inputs, cot], [out, *grads])(*[a.astype(np.float32) for a in arrays],
                                                           cotangent.astype(np.float32))
        return [g.numpy() for g in got], cotangent


def torch_values_and_grads(fn, arrays, cotangent, dtype=torch.float64):
    tensors = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * torch.tensor(cotangent, dtype=dtype)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() if t.grad is not None else np.zeros_like(a)
                                     for t, a in zip(tensors, arrays)]


def pairs(values):
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.ravel(), b.ravel()


def binary_arrays(name):
    if name == "clamp_tensor_bounds":
        return pairs(EDGES[:-3])  # finite bounds (torch's clamp of an infinite bound takes no gradient)
    return pairs(DIVISION_VALUES)
