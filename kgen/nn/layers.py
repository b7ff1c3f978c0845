"""Layers with PyTorch's arguments, layouts and default initialisation (Kaiming-uniform
weights as torch.nn.Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias)."""
from __future__ import annotations

import math

import numpy as np

from kgen import ops
from kgen.errors import OptionError, ShapeError
from kgen.function import shared
from kgen.ir.ops_gather import padding_index
from kgen.nn.module import Module

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator behind every layer's initialisation."""
    global _rng
    _rng = np.random.default_rng(seed)


def _uniform(bound: float, shape) -> np.ndarray:
    return _rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Linear(Module):
    """y = x @ weight.T + bias, weight [out_features, in_features] as in torch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.add_parameter("weight", _uniform(bound, (out_features, in_features)))
        self.bias = self.add_parameter("bias", _uniform(bound, (out_features,))) if bias else None

    def forward(self, x):
        y = ops.matmul(x, ops.transpose(self.weight))
        return y + self.bias if self.bias is not None else y

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """torch.nn.Embedding: a table `weight` [num_embeddings, embedding_dim] from N(0, 1) (the
    row at padding_idx zeros), read by integer indices of any shape. The padding row gets
    no gradient, so it stays as set."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_index(padding_idx, num_embeddings)
        table = _rng.standard_normal((num_embeddings, embedding_dim)).astype(np.float32)
        if self.padding_idx is not None:
            table[self.padding_idx] = 0.0
        self.add_parameter("weight", table)

    def forward(self, indices):
        return ops.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self):
        padding = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_channels(layer: str, in_channels: int, out_channels: int, groups: int, padding_mode: str) -> None:
    """torch's checks of a convolution layer's channels and groups; kgen pads with zeros only."""
    if padding_mode != "zeros":
        raise OptionError(f"{layer}: padding_mode must be 'zeros' (kgen's convolutions pad with zeros), "
                          f"got {padding_mode!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ShapeError(f"{layer}: groups must be an int >= 1, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ShapeError(f"{layer}: in_channels {in_channels} and out_channels {out_channels} must both be "
                         f"divisible by groups {groups}")


class Conv2d(Module):
    """torch.nn.Conv2d: weight [out, in/groups, kh, kw], NCHW input (or NHWC with
    layout="NHWC", read through free index expressions); an unbatched [C, H, W] input gives
    an unbatched output. Initialised as torch does, from the fan-in in/groups*kh*kw."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", layout: str = "NCHW"):
        super().__init__()
        _conv_channels("Conv2d", in_channels, out_channels, groups, padding_mode)
        kh, kw = _pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.layout = stride, padding, dilation, layout
        self.groups = groups
        bound = 1.0 / math.sqrt(in_channels // groups * kh * kw)
        self.add_parameter("weight", _uniform(bound, (out_channels, in_channels // groups, kh, kw)))
        self.bias = self.add_parameter("bias", _uniform(bound, (out_channels,))) if bias else None

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.layout,
                          self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}" + (f", groups={self.groups}" if self.groups > 1 else ""))


class Conv1d(Module):
    """torch.nn.Conv1d: weight [out, in/groups, k], input [N, C, L] (or unbatched [C, L]);
    kgen.ops.conv1d, a conv2d one row high. Initialised as torch does."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros"):
        super().__init__()
        _conv_channels("Conv1d", in_channels, out_channels, groups, padding_mode)
        (k,) = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (k,)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        bound = 1.0 / math.sqrt(in_channels // groups * k)
        self.add_parameter("weight", _uniform(bound, (out_channels, in_channels // groups, k)))
        self.bias = self.add_parameter("bias", _uniform(bound, (out_channels,))) if bias else None

    def forward(self, x):
        return ops.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}" + (f", groups={self.groups}" if self.groups > 1 else ""))


class _Pool(Module):
    """A pooling layer: torch's arguments handed to its kgen.ops function `pool`. The repr
    names the kernel size, the stride and the options not at torch's defaults."""
    DEFAULTS = {"dilation": 1, "ceil_mode": False, "return_indices": False, "count_include_pad": True,
                "divisor_override": None}

    def __init__(self, kernel_size, stride, padding, **options):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.options = kernel_size, stride, padding, options

    def forward(self, x):
        return self.pool(x, self.kernel_size, self.stride, self.padding, **self.options)

    def extra_repr(self):
        options = "".join(f", {k}={v}" for k, v in self.options.items() if v != self.DEFAULTS[k])
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}{options}"


class MaxPool2d(_Pool):
    """torch.nn.MaxPool2d: with return_indices the layer gives (values, indices)."""
    pool = staticmethod(ops.max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                         return_indices=return_indices)


class AvgPool2d(_Pool):
    pool = staticmethod(ops.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                         divisor_override=divisor_override)


class MaxPool1d(_Pool):
    pool = staticmethod(ops.max_pool1d)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                         return_indices=return_indices)


class AvgPool1d(_Pool):
    pool = staticmethod(ops.avg_pool1d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d: output_size an int or a pair (None keeps that size)."""
    pool = staticmethod(ops.adaptive_avg_pool2d)

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return self.pool(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    pool = staticmethod(ops.adaptive_avg_pool1d)


class Dropout(Module):
    """torch.nn.Dropout: in training, zero each element with probability p and scale the
    rest by 1/(1-p); in evaluation, the identity. Each training step draws a fresh mask:
    the layer's seed is device state that the step advances."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p
        object.__setattr__(self, "seed", shared(np.int32(_rng.integers(0, 2**31 - 1)), name=f"dropout{id(self):x}_seed"))
        object.__setattr__(self, "_state_updates", [])

    def forward(self, x):
        if not self.training or self.p == 0:
            object.__setattr__(self, "_state_updates", [])
            return x
        object.__setattr__(self, "_state_updates", [(self.seed, self.seed + 1)])
        return ops.dropout(x, self.p, self.seed)

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    """torch.nn.BatchNorm1d/2d: weight (ones) and bias (zeros) per channel when `affine`;
    buffers running_mean (zeros), running_var (ones) and num_batches_tracked (int64) when
    `track_running_stats`. In training, each step normalises with its batch's statistics and
    updates the buffers (device state the step writes, as a Dropout's seed); in evaluation
    it normalises with the running statistics (with the batch's when it tracks none)."""
    ranks = ()  # the input ranks the layer takes

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.add_parameter("weight", np.ones(num_features, np.float32))
            self.add_parameter("bias", np.zeros(num_features, np.float32))
        else:
            object.__setattr__(self, "weight", None)
            object.__setattr__(self, "bias", None)
        tracked = track_running_stats
        self.register_buffer("running_mean", np.zeros(num_features, np.float32) if tracked else None)
        self.register_buffer("running_var", np.ones(num_features, np.float32) if tracked else None)
        self.register_buffer("num_batches_tracked", np.array(0, np.int64) if tracked else None)
        object.__setattr__(self, "_state_updates", [])

    def forward(self, x):
        if x.ndim not in self.ranks:
            want = " or ".join(f"{r}D" for r in self.ranks)
            raise ShapeError(f"{type(self).__name__}: expected {want} input, got {x.type_str()}")
        updating = self.training and self.track_running_stats
        object.__setattr__(self, "_state_updates", [])
        if self.training or not self.track_running_stats:  # the batch's statistics, as torch
            y, mean, var = ops.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                          training=True, momentum=self.momentum, eps=self.eps,
                                          num_batches_tracked=self.num_batches_tracked)
            if updating:
                count = self.num_batches_tracked
                object.__setattr__(self, "_state_updates", [(self.running_mean, mean), (self.running_var, var),
                                                            (count, count + 1)])
            return y
        return ops.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Over x [N, C] or [N, C, L]."""
    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over x [N, C, H, W]."""
    ranks = (4,)


class LayerNorm(Module):
    """torch.nn.LayerNorm: each sample normalised over its trailing `normalized_shape` dims,
    then times weight (ones) plus bias (zeros), both of normalized_shape, when
    `elementwise_affine` (bias=False drops the bias)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        object.__setattr__(self, "weight", None)
        object.__setattr__(self, "bias", None)
        if elementwise_affine:
            self.add_parameter("weight", np.ones(shape, np.float32))
            if bias:
                self.add_parameter("bias", np.zeros(shape, np.float32))

    def forward(self, x):
        return ops.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, x):
        return ops.silu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return ops.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(Module):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return ops.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0):
        super().__init__()
        if min_val > max_val:  # refused when built, as torch.nn.Hardtanh does
            raise OptionError(f"Hardtanh: min_val must be <= max_val, got {min_val} and {max_val}")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return ops.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    def __init__(self):
        super().__init__(0.0, 6.0)


class Identity(Module):
    """torch.nn.Identity: its input, unchanged (a placeholder in a Sequential)."""

    def forward(self, x):
        return x


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return ops.softmax(x, axis=self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return ops.log_softmax(x, axis=self.dim)


class Flatten(Module):
    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return ops.flatten(x, self.start_dim)


class Sequential(Module):
    """Layers applied in order; parameters are named `0.weight`, `2.bias`, ... as in torch."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
