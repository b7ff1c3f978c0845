"""Layers with PyTorch's arguments, layouts and default initialisation (Kaiming-uniform
weights as torch.nn.Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias)."""
from __future__ import annotations

import math

import numpy as np

from kgen import ops
from kgen.errors import OptionError, ShapeError
from kgen.function import shared
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


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


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


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


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
