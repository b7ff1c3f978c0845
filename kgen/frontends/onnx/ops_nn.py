"""ONNX neural-network layers onto kgen.ops: Conv, MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool, BatchNormalization, LayerNormalization.

kgen's convolutions and pools take torch's arguments: 1-D and 2-D, the same padding before
and after, torch's output size. ONNX's geometry (pads per side, auto_pad, ceil_mode, its
output size) is worked out here on attributes alone; a window that torch's form cannot
express runs over an explicitly padded input with no padding of the op's own: for the max
pool the padding reads -inf, so it never wins, and the average pool sums there and divides
by a count of the cells each window may count, a constant known from shapes alone. 3-D
pools are separable (a window is a product of per-axis windows): a 2-D pool over H and W,
then one over D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kgen import ops
from kgen.frontends.onnx.table import onnx_op
from kgen.ir import dtypes


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of an ONNX window op: input size, kernel, stride, dilation, padding
    before and after, and output size."""
    size: int
    kernel: int
    stride: int
    dilation: int
    before: int
    after: int
    out: int

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    @property
    def reach(self) -> int:
        """How far into the padded axis the last window reaches."""
        return (self.out - 1) * self.stride + self.span

    def torch_out(self, ceil_mode: bool) -> int:
        """The output size torch (and kgen) give with padding `before` on both sides."""
        reach = self.size + 2 * self.before - self.span
        if not ceil_mode:
            return reach // self.stride + 1
        out = -(-reach // self.stride) + 1
        return out - 1 if (out - 1) * self.stride >= self.size + self.before else out


def _geometry(node, spatial, kernel, ceil_mode=False) -> list:
    """Each spatial axis's _Axis from the node's strides, dilations, pads and auto_pad, with
    ONNX's output size (ceil_mode: rounded up, less a last window starting past the input
    and its leading padding)."""
    n = len(spatial)
    strides, dilations = _per_axis(node, "strides", n), _per_axis(node, "dilations", n)
    auto_pad = node.attr("auto_pad", "NOTSET")
    pads = [int(p) for p in node.attr("pads", [0] * 2 * n)]
    if auto_pad == "NOTSET" and len(pads) != 2 * n:
        raise node.refuse(f"pads must hold {2 * n} values (before and after each spatial axis), got {pads}")
    axes = []
    for i, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations)):
        span = d * (k - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
            total = max(0, (out - 1) * s + span - size)
            before = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            axes.append(_Axis(size, k, s, d, before, total - before, out))
        elif auto_pad == "VALID":
            axes.append(_Axis(size, k, s, d, 0, 0, (size - span) // s + 1))
        elif auto_pad == "NOTSET":
            before, after = pads[i], pads[n + i]
            reach = size + before + after - span
            out = (-(-reach // s) if ceil_mode else reach // s) + 1
            if ceil_mode and (out - 1) * s >= size + before:
                out -= 1
            axes.append(_Axis(size, k, s, d, before, after, out))
        else:
            raise node.refuse(f"auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {auto_pad!r}")
        if axes[-1].out < 1:
            raise node.refuse(f"the window {kernel} (dilations {dilations}) does not fit the input {list(spatial)} "
                              f"with pads {pads}")
    return axes


def _per_axis(node, name: str, n: int) -> list:
    values = [int(v) for v in node.attr(name, [1] * n)]
    if len(values) != n or min(values) < 1:
        raise node.refuse(f"{name} must be {n} ints >= 1 (one per spatial axis), got {values}")
    return values


def _static_spatial(node, x) -> list:
    spatial = list(x.shape[2:])
    if not all(isinstance(d, int) for d in spatial):
        raise node.refuse(f"the spatial sizes of the input must be static, got {x.type_str()}")
    return spatial


def _padded(x, axes, value):
    """x over exactly the extent the windows read: each axis padded before with `value`, and
    after up to the last window's reach (cut short where the windows stop before its end)."""
    keep = [min(a.size, a.reach - a.before) for a in axes]
    if any(k < a.size for k, a in zip(keep, axes)):
        x = ops.getitem(x, (slice(None), slice(None)) + tuple(slice(0, k) for k in keep))
    widths = [(0, 0), (0, 0)] + [(a.before, a.reach - a.before - k) for a, k in zip(axes, keep)]
    return ops.pad(x, widths, value)


# --- Conv ------------------------------------------------------------------------------------
@onnx_op("Conv")
def _conv(node):
    """Conv 1-D and 2-D; padding unequal before and after is a zero pad of x (a view)."""
    x, w = node.tensor(0), node.tensor(1)
    bias = node.tensor(2, None)
    if x.ndim not in (3, 4):
        raise node.refuse(f"kgen has 1-D and 2-D convolutions; the input is {x.type_str()}")
    kernel = list(w.shape[2:])
    if list(node.attr("kernel_shape", kernel)) != kernel:
        raise node.refuse(f"kernel_shape {list(node.attr('kernel_shape'))} differs from the weight's {w.type_str()}")
    axes = _geometry(node, _static_spatial(node, x), kernel)
    padding = [a.before for a in axes]
    if any(a.before != a.after for a in axes):
        x = ops.pad(x, [(0, 0), (0, 0)] + [(a.before, a.after) for a in axes])
        padding = [0] * len(axes)
    strides, dilations = [a.stride for a in axes], [a.dilation for a in axes]
    groups = int(node.attr("group", 1))
    if x.ndim == 3:
        return ops.conv1d(x, w, bias, strides[0], padding[0], dilations[0], groups=groups)
    return ops.conv2d(x, w, bias, tuple(strides), tuple(padding), tuple(dilations), groups=groups)


# --- MaxPool, AveragePool ----------------------------------------------------------------------
def _pool_setup(node):
    x = node.tensor(0)
    if x.ndim not in (3, 4, 5):
        raise node.refuse(f"kgen pools 1-D, 2-D and 3-D inputs [N, C, ...]; the input is {x.type_str()}")
    kernel = [int(k) for k in node.attr("kernel_shape")]
    if len(kernel) != x.ndim - 2:
        raise node.refuse(f"kernel_shape {kernel} does not match the input {x.type_str()}")
    ceil_mode = bool(node.attr("ceil_mode", 0))
    return x, _geometry(node, _static_spatial(node, x), kernel, ceil_mode), ceil_mode


def _torch_form(axes, ceil_mode: bool) -> bool:
    """Whether kgen's own pool (torch's padding and output size) computes these windows."""
    return len(axes) <= 2 and all(a.before == a.after and 2 * a.before <= a.kernel and a.torch_out(ceil_mode) == a.out
                                  for a in axes)


def _as_2d(x, axes):
    """A 1-D pool's input and axes as a 2-D pool's, windows one row high."""
    if len(axes) == 2:
        return x, axes
    return ops.expand_dims(x, 2), [_Axis(1, 1, 1, 1, 0, 0, 1)] + list(axes)


def _pairs(axes, field: str) -> tuple:
    return tuple(getattr(a, field) for a in axes)


@onnx_op("MaxPool")
def _max_pool(node):
    x, axes, ceil_mode = _pool_setup(node)
    if _wants(node, 1):
        return _max_pool_with_indices(node, x, axes, ceil_mode)
    if _torch_form(axes, ceil_mode):
        x2, axes2 = _as_2d(x, axes)
        y = ops.max_pool2d(x2, _pairs(axes2, "kernel"), _pairs(axes2, "stride"), _pairs(axes2, "before"),
                           _pairs(axes2, "dilation"), ceil_mode)
        return ops.squeeze(y, 2) if len(axes) == 1 else y
    return _separable(_padded(x, axes, float("-inf")), axes, _max_window)


def _max_pool_with_indices(node, x, axes, ceil_mode):
    """Values and ONNX's indices: flat into the whole input (batch and channel included),
    row-major, or column-major over H and W with storage_order 1."""
    if not _torch_form(axes, ceil_mode):
        raise node.refuse("the Indices output needs a 1-D or 2-D pool with the same pads before and after each "
                          f"axis and torch's output size; got pads {[(a.before, a.after) for a in axes]}")
    batch, channels = x.shape[0], x.shape[1]
    if not isinstance(batch, int):
        raise node.refuse(f"the Indices output needs a static batch size, got {x.type_str()}")
    x2, axes2 = _as_2d(x, axes)
    y, plane = ops.max_pool2d(x2, _pairs(axes2, "kernel"), _pairs(axes2, "stride"), _pairs(axes2, "before"),
                              _pairs(axes2, "dilation"), ceil_mode, return_indices=True)
    height, width = axes2[0].size, axes2[1].size
    if node.attr("storage_order", 0):
        plane = ops.add(ops.mul(ops.remainder(plane, width), height), ops.floor_divide(plane, width))
    offsets = np.arange(batch * channels, dtype=np.int64).reshape(batch, channels, 1, 1) * (height * width)
    indices = ops.add(plane, ops.constant(offsets, dtypes.int64))
    if len(axes) == 1:
        y, indices = ops.squeeze(y, 2), ops.squeeze(indices, 2)
    return y, indices


@onnx_op("AveragePool")
def _average_pool(node):
    x, axes, ceil_mode = _pool_setup(node)
    include_pad = bool(node.attr("count_include_pad", 0))
    if _torch_form(axes, ceil_mode) and all(a.dilation == 1 for a in axes):
        x2, axes2 = _as_2d(x, axes)
        y = ops.avg_pool2d(x2, _pairs(axes2, "kernel"), _pairs(axes2, "stride"), _pairs(axes2, "before"),
                           ceil_mode, include_pad)
        return ops.squeeze(y, 2) if len(axes) == 1 else y
    total = _separable(_padded(x, axes, 0.0), axes, _sum_window)
    counts = _window_counts(axes, include_pad)
    return ops.div(total, ops.constant(counts, x.dtype))


def _window_counts(axes, include_pad: bool) -> np.ndarray:
    """How many cells each window averages over: those of the input, and with include_pad
    those of the padding too, never those past the padding (ONNX's and torch's rule)."""
    counts = np.ones(())
    for a in axes:
        taps = np.arange(a.out)[:, None] * a.stride + np.arange(a.kernel)[None, :] * a.dilation
        first, end = (0, a.size + a.before + a.after) if include_pad else (a.before, a.before + a.size)
        inside = (taps >= first) & (taps < end)
        counts = np.multiply.outer(counts, inside.sum(axis=1))
    return counts.astype(np.float32)


def _max_window(x, kernel, stride, dilation):
    return ops.max_pool2d(x, kernel, stride, 0, dilation)


def _sum_window(x, kernel, stride, dilation):
    """Each window's sum: a pool dividing by 1, or with dilation a depthwise convolution with
    ones (kgen's average pool has no dilation)."""
    if dilation == (1, 1):
        return ops.avg_pool2d(x, kernel, stride, 0, divisor_override=1)
    channels = x.shape[1]
    ones = ops.constant(np.ones((channels, 1) + tuple(kernel), np.float32), x.dtype)
    return ops.conv2d(x, ones, None, stride, 0, dilation, groups=channels)


def _separable(x, axes, window):
    """`window` (a 2-D pool with no padding) over x already padded to the windows' extent: a
    1-D pool as windows one row high; a 3-D one over H and W, then over D."""
    if len(axes) == 1:
        (a,) = axes
        return ops.squeeze(window(ops.expand_dims(x, 2), (1, a.kernel), (1, a.stride), (1, a.dilation)), 2)
    if len(axes) == 2:
        return window(x, _pairs(axes, "kernel"), _pairs(axes, "stride"), _pairs(axes, "dilation"))
    batch, channels, depth = x.shape[0], x.shape[1], x.shape[2]
    d, h, w = axes
    planes = ops.reshape(x, (batch, channels * depth) + tuple(x.shape[3:]))
    planes = window(planes, (h.kernel, w.kernel), (h.stride, w.stride), (h.dilation, w.dilation))
    columns = ops.reshape(planes, (batch, channels, depth, h.out * w.out))
    columns = window(columns, (d.kernel, 1), (d.stride, 1), (d.dilation, 1))
    return ops.reshape(columns, (batch, channels, d.out, h.out, w.out))


# --- global pools -----------------------------------------------------------------------------
@onnx_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node):
    x = node.tensor(0)
    if x.ndim < 3:
        raise node.refuse(f"the input must be [N, C, spatial...], got {x.type_str()}")
    reduce = ops.mean if node.op == "GlobalAveragePool" else ops.max
    return reduce(x, tuple(range(2, x.ndim)), keepdims=True)


# --- normalisation ----------------------------------------------------------------------------
def _wants(node, i: int) -> bool:
    return i < len(node.proto.output) and node.proto.output[i] != ""


@onnx_op("BatchNormalization", state=(3, 4))
def _batch_norm(node):
    """Inference normalises with the given mean and var. training_mode=1 (opset 14+)
    normalises with the batch's mean and biased variance and also returns the running
    statistics as ONNX updates them: input * momentum + batch statistic * (1 - momentum)."""
    x, scale, bias, mean, var = (node.tensor(i) for i in range(5))
    eps = float(node.attr("epsilon", 1e-5))
    if not node.attr("spatial", 1):
        raise node.refuse("spatial=0 (statistics per element, not per channel) is not supported")
    training = bool(node.attr("training_mode", 0)) if node.opset >= 14 else False
    if not training and any(_wants(node, i) for i in range(1, 5)):
        raise node.refuse(f"outputs beyond Y are training outputs, which opset {node.opset} defines differently "
                          f"from opset 14's training_mode; re-export with opset >= 14")
    if x.ndim < 2:
        raise node.refuse(f"the input must be [N, C, ...], got {x.type_str()}")
    flat = x if x.ndim <= 4 else ops.reshape(x, (x.shape[0], x.shape[1], math.prod(_static_spatial(node, x))))
    if not training:
        return _unflat(ops.batch_norm(flat, mean, var, scale, bias, eps=eps), x)
    momentum = float(node.attr("momentum", 0.9))
    y, _, _ = ops.batch_norm(flat, mean, var, scale, bias, training=True, eps=eps)
    axes = (0,) + tuple(range(2, flat.ndim))
    x32 = ops.stop_gradient(ops.cast(flat, dtypes.float32))
    batch_mean = ops.mean(x32, axes)
    centred = ops.sub(x32, ops.mean(x32, axes, keepdims=True))
    batch_var = ops.mean(ops.mul(centred, centred), axes)
    running = [ops.cast(ops.add(ops.mul(old, momentum), ops.mul(new, 1.0 - momentum)), old.dtype)
               for old, new in ((mean, batch_mean), (var, batch_var))]
    return (_unflat(y, x), *running)


def _unflat(y, x):
    return y if y.ndim == x.ndim else ops.reshape(y, x.shape)


@onnx_op("LayerNormalization")
def _layer_norm(node):
    """kgen's layer_norm over the axes from `axis` on; composed from its parts when the
    Mean and InvStdDev outputs are asked for, or Scale or B only broadcast to those axes."""
    x, scale, bias = node.tensor(0), node.tensor(1), node.tensor(2, None)
    axis = int(node.attr("axis", -1))
    if not -x.ndim <= axis < x.ndim:
        raise node.refuse(f"axis {axis} is out of range for the input {x.type_str()}")
    axis %= x.ndim
    eps = float(node.attr("epsilon", 1e-5))
    if node.attr("stash_type", 1) != 1:
        raise node.refuse(f"stash_type {node.attr('stash_type')}: kgen normalises in float32 (stash_type 1)")
    shape = tuple(x.shape[axis:])
    fits = all(t is None or tuple(t.shape) == shape for t in (scale, bias))
    if fits and not (_wants(node, 1) or _wants(node, 2)):
        return ops.layer_norm(x, shape, scale, bias, eps)
    axes = tuple(range(axis, x.ndim))
    x32 = ops.cast(x, dtypes.float32)
    mean = ops.mean(x32, axes, keepdims=True)
    centred = ops.sub(x32, mean)
    inv_std = ops.div(1.0, ops.sqrt(ops.add(ops.mean(ops.mul(centred, centred), axes, keepdims=True), eps)))
    y = ops.mul(ops.mul(centred, inv_std), ops.cast(scale, dtypes.float32))
    if bias is not None:
        y = ops.add(y, ops.cast(bias, dtypes.float32))
    return ops.cast(y, x.dtype), mean, inv_std
