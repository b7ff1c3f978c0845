"""torch twins of the kgen ops that torch does not spell the same way (the oracle's `T.`).

Each is built from torch's own ops (autograd differentiates them), in float64. `rand` and
`dropout` draw from kgen's NumPy copy of Triton's generator (kgen.ir.ops_random.uniform),
which kgen's tests pin to tl.rand bit for bit, so the oracle sees the same random numbers
as the kernels.
"""
from __future__ import annotations

import math

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


def pad(x, widths, value=0.0):
    shape = [d + b + a for d, (b, a) in zip(x.shape, widths)]
    out = pad_strided(x, [b for b, _ in widths], [1] * x.dim(), shape)
    if value != 0 or math.copysign(1.0, value) < 0:  # -0.0 fills too, as in torch
        inside = pad_strided(torch.ones(x.shape, dtype=torch.bool), [b for b, _ in widths], [1] * x.dim(), shape)
        out = torch.where(inside, out, torch.tensor(value, dtype=out.dtype))
    return out


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


def _pooled_length(size, k, s, p, d, ceil):
    reach = size + 2 * p - d * (k - 1) - 1
    out = (-(-reach // s) if ceil else reach // s) + 1
    return out - 1 if ceil and (out - 1) * s >= size + p else out


def _pooled_empty(x, kernel_size, stride, padding, dilation=1, ceil_mode=False, return_indices=False):
    """The (empty) result of pooling an empty x, which torch refuses when it has no channels;
    kernel_size and the rest as the 2-D pools take them."""
    k, p, d = _pair(kernel_size), _pair(padding), _pair(dilation)
    s = k if stride is None else _pair(stride)
    hw = [_pooled_length(x.shape[-2 + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(2)]
    out = torch.zeros(tuple(x.shape[:-2]) + tuple(hw), dtype=x.dtype) + 0 * x.sum()
    return (out, out.to(torch.int64)) if return_indices else out


def _indices_only(result, return_indices):
    """kgen's fuzz programs take the indices alone where they ask for them."""
    return result[1] if return_indices else result


def max_pool2d(x, kernel_size, stride, padding, dilation=1, ceil_mode=False, return_indices=False):
    if x.numel() == 0:
        out = _pooled_empty(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    else:
        out = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    return _indices_only(out, return_indices)


def avg_pool2d(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True, divisor_override=None):
    if x.numel() == 0:
        return _pooled_empty(x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _one_d(pool, x, kernel_size, stride, padding, **options):
    """A 1-D pool as the 2-D twin over x[..., None, :], as kgen.ops composes it."""
    if "dilation" in options:
        options["dilation"] = (1, options["dilation"])
    out = pool(x.unsqueeze(-2), (1, kernel_size), None if stride is None else (1, stride), (0, padding), **options)
    return out.squeeze(-2)


def max_pool1d(x, kernel_size, stride, padding, dilation=1, ceil_mode=False, return_indices=False):
    if x.numel() == 0:
        return _one_d(max_pool2d, x, kernel_size, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                      return_indices=return_indices)
    return _indices_only(F.max_pool1d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices),
                         return_indices)


def avg_pool1d(x, kernel_size, stride, padding, ceil_mode=False, count_include_pad=True):
    if x.numel() == 0:
        return _one_d(avg_pool2d, x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    return F.avg_pool1d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def adaptive_avg_pool2d(x, output_size):
    if x.numel() == 0:
        sizes = _pair(output_size)
        shape = tuple(x.shape[:-2]) + tuple(x.shape[-2 + i] if o is None else o for i, o in enumerate(sizes))
        return torch.zeros(shape, dtype=x.dtype) + 0 * x.sum()
    return F.adaptive_avg_pool2d(x, output_size)


def adaptive_avg_pool1d(x, output_size):
    if x.numel() == 0:
        return adaptive_avg_pool2d(x.unsqueeze(-2), (1, output_size)).squeeze(-2)
    return F.adaptive_avg_pool1d(x, output_size)


def mse(pred, target, reduction="mean"):
    loss = (pred - target) ** 2
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def binary_cross_entropy(prob, target, weight=None, reduction="mean"):
    prob, target = torch.broadcast_tensors(prob, target)
    if weight is not None:
        weight = weight.to(prob.dtype).expand_as(prob)
    return F.binary_cross_entropy(prob, target, weight=weight, reduction=reduction)


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


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked):
    """F.batch_norm, whose running statistics take no gradient (torch refuses them one), so
    where they are differentiable inputs here: evaluation spelled out, and in training the
    new statistics computed beside it (the unbiased variance, as torch's update), detached
    from x. The gradient of a new statistic is then (1 - momentum) for its old value, as kgen's."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    axes = [0] + list(range(2, x.dim()))

    def normalised(mean, var):
        y = (x - mean.reshape(view)) / torch.sqrt(var.reshape(view) + eps)
        y = y if weight is None else y * weight.reshape(view)
        return y if bias is None else y + bias.reshape(view)
    if not training:
        return normalised(running_mean, running_var)
    if x.shape[1] == 0:  # torch refuses x without channels; y is as empty as x
        y = normalised(x.mean(axes), ((x - x.mean(axes, keepdim=True)) ** 2).mean(axes))
    else:
        y = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    if running_mean is None:
        return y, None, None
    factor = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    seen = x.detach()
    count = int(np.prod([x.shape[a] for a in axes]))
    unbiased = ((seen - seen.mean(axes, keepdim=True)) ** 2).sum(axes) / (count - 1)
    return y, (1 - factor) * running_mean + factor * seen.mean(axes), (1 - factor) * running_var + factor * unbiased


def scan_tanh(xs, a, reverse):
    """kgen.scan(lambda c, t: (tanh(c * a + t), c), xs[0] * 0, xs, reverse)'s stacked ys."""
    c, ys = xs[0] * 0.0, [None] * len(xs)
    for t in (reversed(range(len(xs))) if reverse else range(len(xs))):
        ys[t] = c
        c = torch.tanh(c * a + xs[t])
    return torch.stack(ys)
