"""torch twins of the kgen ops that torch does not spell the same way (the oracle's `T.`).

Each is built from torch's own ops (autograd differentiates them), in float64. `rand` and
`dropout` draw from kgen's NumPy copy of Triton's generator (kgen.ir.ops_random.uniform),
which kgen's tests pin to tl.rand bit for bit, so the oracle sees the same random numbers
as the kernels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kgen.ir.ops_random import uniform

_DTYPES = {"float32": torch.float64, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def _slices(origin, step, count):
    return tuple(slice(b, b + s * (n - 1) + 1 if n else b, s) for b, s, n in zip(origin, step, count))


def slice_strided(x, start, step, shape):
    return x[_slices(start, step, shape)]


def pad_strided(x, low, step, shape):
    out = torch.zeros(tuple(shape), dtype=x.dtype)
    out[_slices(low, step, x.shape)] = x
    return out


def pad(x, widths):
    shape = [d + b + a for d, (b, a) in zip(x.shape, widths)]
    return pad_strided(x, [b for b, _ in widths], [1] * x.dim(), shape)


def sum_to(x, shape):
    lead = x.dim() - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1]
    out = torch.sum(x, dim=axes, keepdim=True) if axes else x
    return out.reshape(tuple(shape))


def conv2d(x, w, bias, stride, padding, dilation, layout, groups=1):
    if x.dim() == 3:  # unbatched
        return conv2d(x.unsqueeze(0), w, bias, stride, padding, dilation, layout, groups).squeeze(0)
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] == 0 or w.shape[0] == 0:  # torch refuses no channels or no filters; a sum over none is 0
        probe = F.conv2d(torch.zeros(x.shape[:1] + (1,) + x.shape[2:], dtype=x.dtype),
                         torch.zeros((1, 1) + w.shape[2:], dtype=w.dtype),
                         stride=stride, padding=padding, dilation=dilation)
        out = probe.expand(-1, w.shape[0], -1, -1) + 0 * (x.sum() + w.sum())
        if bias is not None:
            out = out + bias.reshape(1, -1, 1, 1)
    else:
        out = F.conv2d(x, w, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return out.permute(0, 2, 3, 1) if layout == "NHWC" else out


def conv1d(x, w, bias, stride, padding, dilation, groups):
    if x.shape[-2] == 0 or w.shape[0] == 0:  # as conv2d's: an image one row high
        pad = padding if isinstance(padding, str) else (0, padding)
        return conv2d(x.unsqueeze(-2), w.unsqueeze(-2), bias, (1, stride), pad, (1, dilation), "NCHW",
                      groups).squeeze(-2)
    return F.conv1d(x, w, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pooled_empty(x, kernel_size, stride, padding):
    """The (empty) result of pooling an empty x, which torch refuses when it has no channels."""
    k, p = _pair(kernel_size), _pair(padding)
    s = k if stride is None else _pair(stride)
    hw = [(x.shape[2 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)]
    return torch.zeros(tuple(x.shape[:2]) + tuple(hw), dtype=x.dtype) + 0 * x.sum()


def max_pool2d(x, kernel_size, stride, padding):
    if x.numel() == 0:
        return _pooled_empty(x, kernel_size, stride, padding)
    return F.max_pool2d(x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride, padding):
    if x.numel() == 0:
        return _pooled_empty(x, kernel_size, stride, padding)
    return F.avg_pool2d(x, kernel_size, stride, padding)


def mse(pred, target):
    return ((pred - target) ** 2).mean()


def binary_cross_entropy(prob, target):
    prob, target = torch.broadcast_tensors(prob, target)
    return F.binary_cross_entropy(prob, target)


def rand(shape, seed):
    return torch.from_numpy(uniform(seed, tuple(int(d) for d in shape)).astype(np.float64))


def dropout(x, p, seed, training):
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = rand(tuple(x.shape), seed) >= p
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype))


def iota(shape, axis, dtype):
    shape = tuple(int(d) for d in shape)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return torch.arange(shape[axis], dtype=_DTYPES[dtype]).reshape(view).expand(shape).contiguous()


def grad(loss, wrt):
    """torch.autograd.grad of `loss` for each of `wrt`, zeros where it does not depend on one."""
    if not wrt:
        return []
    if not loss.requires_grad:
        return [torch.zeros_like(w) for w in wrt]
    got = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, got)]
