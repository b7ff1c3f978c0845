"""Keras's own names over kgen.nn, so Keras tutorial code runs with its import lines changed:

    from kgen.nn.keras import Sequential, Dense, Activation, Dropout, Flatten, Conv2D, MaxPooling2D

    model = Sequential()
    model.add(Dense(64, activation="relu", input_dim=20))
    model.add(Dropout(0.5))
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=20, batch_size=128)

Keras's layouts and initialisers, not torch's: images are channels-last [N, H, W, C]
(`Conv2D` runs kgen's NHWC convolution; its kernel is Keras's [KH, KW, C, F]), a `Dense`
kernel is [in, units], kernels are Glorot-uniform and biases zeros. A layer is built when it
is added to a `Sequential` whose input shape is known (the first layer's `input_shape` or
`input_dim`), so `add` infers each layer's input size as Keras does, and `summary()` prints
the layers' output shapes, their parameter counts, and kgen's launches per training step.
"""
from __future__ import annotations

import math

import numpy as np

from kgen import ops
from kgen.errors import OptionError, ShapeError
from kgen.nn import layers as L, losses, optim, schedules
from kgen.nn import recurrent as R
from kgen.nn.module import Module

__all__ = ["Sequential", "Dense", "Activation", "Dropout", "Flatten", "Conv2D", "MaxPooling2D", "LSTM", "GRU",
           "to_categorical"]

_ACTIVATIONS = {
    None: lambda x: x, "linear": lambda x: x, "relu": ops.relu, "tanh": ops.tanh, "sigmoid": ops.sigmoid,
    "softmax": lambda x: ops.softmax(x, -1), "elu": ops.elu, "softplus": ops.softplus, "gelu": ops.gelu,
    "selu": lambda x: ops.mul(ops.elu(x, 1.6732632423543772), 1.0507009873554805),
}


def _activation(name):
    if callable(name) and name not in _ACTIVATIONS.values():
        return name
    if name not in _ACTIVATIONS:
        raise OptionError(f"activation must be one of {sorted(k for k in _ACTIVATIONS if k)} or None, got {name!r}")
    return _ACTIVATIONS[name]


def _glorot(fan_in: int, fan_out: int, shape) -> np.ndarray:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return L._uniform(bound, shape)


def _pair(value, what: str) -> tuple:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise OptionError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return pair


class Layer(Module):
    """A Keras layer: built (its weights made) once its input shape is known, without the
    batch dimension. `input_shape` (or `input_dim`) on the first layer gives the model's."""

    def __init__(self, input_shape=None, input_dim=None):
        super().__init__()
        if input_dim is not None:
            input_shape = (input_dim,)
        object.__setattr__(self, "input_shape", None if input_shape is None else tuple(input_shape))
        object.__setattr__(self, "built_shape", None)

    def build(self, shape: tuple) -> tuple:
        """Make the weights for inputs of `shape` (no batch dimension); return the output's."""
        object.__setattr__(self, "built_shape", shape)
        return self.output_shape(shape)

    def output_shape(self, shape: tuple) -> tuple:
        return shape

    def __call__(self, x, *args, **kwargs):
        if self.built_shape is None:
            self.build(tuple(x.shape[1:]))
        return super().__call__(x, *args, **kwargs)


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel [in, units]."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, input_dim=None, input_shape=None):
        super().__init__(input_shape, input_dim)
        if not isinstance(units, int) or units < 1:
            raise OptionError(f"Dense: units must be a positive int, got {units!r}")
        self.units, self.use_bias, self.activation = units, use_bias, activation
        object.__setattr__(self, "_act", _activation(activation))

    def build(self, shape):
        if len(shape) < 1 or not isinstance(shape[-1], int):
            raise ShapeError(f"Dense: expected inputs [batch, ..., features], got a sample shape {list(shape)}")
        self.add_parameter("kernel", _glorot(shape[-1], self.units, (shape[-1], self.units)))
        if self.use_bias:
            self.add_parameter("bias", np.zeros(self.units, np.float32))
        return super().build(shape)

    def output_shape(self, shape):
        return tuple(shape[:-1]) + (self.units,)

    def forward(self, x):
        y = ops.matmul(x, self.kernel)
        return self._act(y + self.bias if self.use_bias else y)


class Activation(Layer):
    def __init__(self, activation, input_shape=None):
        super().__init__(input_shape)
        self.activation = activation
        object.__setattr__(self, "_act", _activation(activation))

    def forward(self, x):
        return self._act(x)


class Dropout(Layer):
    """Keras's Dropout(rate): kgen.nn.Dropout, a fresh mask each training step."""

    def __init__(self, rate: float, input_shape=None):
        super().__init__(input_shape)
        if not 0.0 <= rate < 1.0:
            raise OptionError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.inner = L.Dropout(rate)

    def forward(self, x):
        return self.inner(x)


class Flatten(Layer):
    def output_shape(self, shape):
        return (math.prod(shape),)

    def forward(self, x):
        return ops.flatten(x, 1)


class Conv2D(Layer):
    """Keras's Conv2D on channels-last images [N, H, W, C]: kernel [KH, KW, C, filters],
    padding 'valid' or 'same' (TensorFlow's: the output is ceil(size / stride), the extra
    padding at the end when it is odd)."""

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid", activation=None,
                 use_bias: bool = True, input_shape=None):
        super().__init__(input_shape)
        if padding not in ("valid", "same"):
            raise OptionError(f"Conv2D: padding must be 'valid' or 'same', got {padding!r}")
        self.filters, self.padding, self.use_bias, self.activation = filters, padding, use_bias, activation
        self.kernel_size, self.strides = _pair(kernel_size, "Conv2D: kernel_size"), _pair(strides, "Conv2D: strides")
        object.__setattr__(self, "_act", _activation(activation))

    def build(self, shape):
        if len(shape) != 3:
            raise ShapeError(f"Conv2D: expected channels-last images [batch, height, width, channels], got a "
                             f"sample shape {list(shape)}")
        (kh, kw), channels = self.kernel_size, shape[2]
        self.add_parameter("kernel", _glorot(kh * kw * channels, kh * kw * self.filters,
                                             (kh, kw, channels, self.filters)))
        if self.use_bias:
            self.add_parameter("bias", np.zeros(self.filters, np.float32))
        return super().build(shape)

    def _pads(self, size: int, k: int, s: int) -> tuple:
        if self.padding == "valid":
            return 0, 0
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    def output_shape(self, shape):
        out = []
        for size, k, s in zip(shape[:2], self.kernel_size, self.strides):
            before, after = self._pads(size, k, s)
            out.append((size + before + after - k) // s + 1)
        return (*out, self.filters)

    def forward(self, x):
        (top, bottom), (left, right) = (self._pads(x.shape[1 + i], k, s)
                                        for i, (k, s) in enumerate(zip(self.kernel_size, self.strides)))
        if top or bottom or left or right:
            x = ops.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # np.pad's per-axis pairs
        weight = ops.permute(self.kernel, (3, 2, 0, 1))  # [F, C, KH, KW], a view
        y = ops.conv2d(x, weight, self.bias if self.use_bias else None, stride=self.strides, layout="NHWC")
        return self._act(y)


class MaxPooling2D(Layer):
    """Keras's MaxPooling2D on channels-last images: windows of pool_size, strides defaulting
    to pool_size, padding 'valid'."""

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", input_shape=None):
        super().__init__(input_shape)
        if padding != "valid":
            raise OptionError(f"MaxPooling2D: kgen takes padding='valid', got {padding!r}")
        self.pool_size = _pair(pool_size, "MaxPooling2D: pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "MaxPooling2D: strides")

    def output_shape(self, shape):
        h, w = ((size - k) // s + 1 for size, k, s in zip(shape[:2], self.pool_size, self.strides))
        return (h, w, shape[2])

    def forward(self, x):
        pooled = ops.max_pool2d(ops.permute(x, (0, 3, 1, 2)), self.pool_size, self.strides)
        return ops.permute(pooled, (0, 2, 3, 1))


class _Recurrent(Layer):
    LAYER = None

    def __init__(self, units: int, return_sequences: bool = False, input_shape=None):
        super().__init__(input_shape)
        self.units, self.return_sequences = units, return_sequences

    def build(self, shape):
        if len(shape) != 2:
            raise ShapeError(f"{type(self).__name__}: expected inputs [batch, time, features], got a sample shape "
                             f"{list(shape)}")
        self.cell = self.LAYER(shape[1], self.units, batch_first=True)
        return super().build(shape)

    def output_shape(self, shape):
        return (shape[0], self.units) if self.return_sequences else (self.units,)

    def forward(self, x):
        output, state = self.cell(x)
        if self.return_sequences:
            return output
        h_n = state[0] if isinstance(state, tuple) else state
        return ops.reshape(h_n, h_n.shape[1:])


class LSTM(_Recurrent):
    """Keras's LSTM(units, return_sequences) over [batch, time, features] (kgen.nn.LSTM's
    gates and weights, batch first): the last hidden state, or every step's."""
    LAYER = R.LSTM


class GRU(_Recurrent):
    """Keras's GRU(units, return_sequences), as LSTM (kgen.nn.GRU: torch's GRU, whose reset
    gate applies after the hidden product, as Keras's reset_after=True)."""
    LAYER = R.GRU


class Sequential(L.Sequential):
    """Keras's Sequential: layers given at once or `add`ed one by one, each built with the
    output shape of the one before (the first's input_shape / input_dim starts it)."""

    def __init__(self, layers=None):
        super().__init__()
        object.__setattr__(self, "shape", None)
        for layer in layers or ():
            self.add(layer)

    def add(self, layer: Module) -> None:
        if not isinstance(layer, Module):
            raise OptionError(f"Sequential.add: expected a layer, got {type(layer).__name__}")
        if self.shape is None and getattr(layer, "input_shape", None) is not None:
            object.__setattr__(self, "shape", layer.input_shape)
        if self.shape is not None and isinstance(layer, Layer):
            object.__setattr__(self, "shape", layer.build(self.shape) if layer.built_shape is None
                               else layer.output_shape(self.shape))
        setattr(self, str(len(self)), layer)

    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=(), precision="fp32",
                loss_scaler=None, process_group=None, shard_optimizer=False):
        if isinstance(optimizer, KerasOptimizer):
            optimizer = optimizer.bind(self.parameters())
        return super().compile(optimizer, loss, metrics, precision, loss_scaler, process_group, shard_optimizer)

    def summary(self, print_fn=print) -> str:
        """Layers, output shapes and parameter counts as Keras prints them, and kgen's launches
        per training step (the compiled loss and optimizer, or Adam and cross-entropy)."""
        if self.shape is None:
            raise ShapeError("summary: the model has no input shape yet (give the first layer input_shape=...)")
        rows, shape = [], None
        for i, layer in enumerate(self):
            shape = layer.output_shape(shape or self._input_shape()) if isinstance(layer, Layer) else shape
            count = sum(int(np.prod(p.shape)) for p in layer.parameters())
            rows.append((f"{type(layer).__name__.lower()}_{i} ({type(layer).__name__})",
                         str((None,) + tuple(shape)), f"{count:,}"))
        total = sum(int(np.prod(p.shape)) for p in self.parameters())
        lines = [f"{'Layer (type)':<32} {'Output Shape':<24} {'Param #':>10}", "=" * 68]
        lines += [f"{name:<32} {out:<24} {count:>10}" for name, out, count in rows]
        lines += ["=" * 68, f"Total params: {total:,}", f"kgen launches per training step: {self._launches()}"]
        text = "\n".join(lines)
        print_fn(text)
        return text

    def _input_shape(self) -> tuple:
        return self.shape if len(self) == 0 else next(
            layer.input_shape for layer in self if getattr(layer, "input_shape", None) is not None)

    def _launches(self) -> int:
        # the step and its statistics are built only when a summary asks (lowering sits below nn)
        from kgen.lowering.stats import program_stats
        from kgen.nn.train import Trainer
        trainer = getattr(self, "_trainer", None) or Trainer(self, "adam", "sparse_categorical_crossentropy")
        x = np.zeros((2,) + tuple(self._input_shape()), np.float32)
        if isinstance(trainer.loss, losses.CrossEntropyLoss):
            y = np.zeros((2,) + tuple(self.shape[:-1]), np.int64)  # class labels
        else:
            y = np.zeros((2,) + tuple(self.shape), np.float32)  # targets of the output's shape
        return program_stats(trainer._step("train", x, y).program, {"N": 2})["launches"]


def to_categorical(labels, num_classes: int = None) -> np.ndarray:
    """keras.utils.to_categorical: integer labels as float32 one-hot rows."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


class KerasOptimizer:
    """An optimizer given before the model's weights, as Keras writes it
    (`SGD(learning_rate=0.01, momentum=0.9)`): `compile` binds it to the parameters. A
    legacy `decay` > 0 becomes the bound optimizer's `lr_schedule`, an InverseTimeDecay
    that fit steps after every batch."""

    def __init__(self, make, decay: float = 0.0, **settings):
        self.make, self.decay, self.settings = make, decay, settings

    def bind(self, params):
        optimizer = self.make(params, **self.settings)
        if self.decay:
            optimizer.lr_schedule = schedules.InverseTimeDecay(optimizer, self.decay)
        return optimizer


def SGD(learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, decay: float = 0.0,  # noqa: N802
        lr: float = None) -> KerasOptimizer:
    """Keras's SGD, with the legacy `lr` and `decay` (lr / (1 + decay * iterations), the
    iterations counted over fit's batches)."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < math.inf:
        raise OptionError(f"SGD: decay must be a number >= 0, got {decay!r}")
    return KerasOptimizer(optim.SGD, decay, lr=learning_rate if lr is None else lr, momentum=momentum,
                          nesterov=nesterov)


def Adam(learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,  # noqa: N802
         lr: float = None) -> KerasOptimizer:
    return KerasOptimizer(optim.Adam, lr=learning_rate if lr is None else lr, betas=(beta_1, beta_2), eps=epsilon)
