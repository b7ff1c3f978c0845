"""Module: the PyTorch-style container of parameters and sublayers.

Parameters are kgen.shared values (device-resident); calling a module on a symbolic tensor
builds its forward graph. Names and shapes follow PyTorch (`0.weight`, `fc1.bias`), so a
state_dict moves between kgen and torch as NumPy arrays. Buffers (`register_buffer`: a batch
norm's running statistics) are shared values too, of their own dtype, that the state_dict
holds and optimizers do not see; a layer updates them through its `_state_updates`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Tuple

import numpy as np

from kgen.errors import KgenError, ShapeError
from kgen.function import SharedVariable, shared


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if name in self._buffers:  # as in torch, assigning to a buffer's name replaces the buffer
            if value is not None and not isinstance(value, SharedVariable):
                raise KgenError(f"{type(self).__name__}.{name} is a buffer: assign a kgen.shared value or None, "
                                f"got {type(value).__name__}")
            self._buffers[name] = value
        elif isinstance(value, SharedVariable):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def add_parameter(self, name: str, value: np.ndarray) -> SharedVariable:
        """A new parameter initialised from `value`, named after its place in the model."""
        param = shared(np.asarray(value, np.float32), name=f"p{id(self):x}_{name}")
        setattr(self, name, param)
        return param

    def register_buffer(self, name: str, value, persistent: bool = True):
        """torch's register_buffer: state that is no parameter, a kgen.shared value keeping
        `value`'s dtype (float64 becomes float32, kgen's widest float), or None (no buffer, as
        torch's BatchNorm without running statistics). A persistent buffer is in state_dict."""
        if not isinstance(name, str) or not name.isidentifier():
            raise KgenError(f"register_buffer: the name must be an identifier, got {name!r}")
        if name in self._parameters or name in self._modules:
            raise KgenError(f"register_buffer: {type(self).__name__} already has a parameter or module {name!r}")
        buffer = None if value is None else shared(value, name=f"b{id(self):x}_{name}")
        self._buffers[name] = buffer
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)
        object.__setattr__(self, name, buffer)
        return buffer

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- parameters ---------------------------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, SharedVariable]]:
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, SharedVariable]]:
        for name, b in self._buffers.items():
            if b is not None:
                yield prefix + name, b
        for name, m in self._modules.items():
            yield from m.named_buffers(prefix + name + ".")

    def buffers(self) -> list:
        return [b for _, b in self.named_buffers()]

    def _named_state(self, prefix: str = "") -> Iterator[Tuple[str, SharedVariable]]:
        """The state_dict's values in torch's order: per module its parameters, then its
        persistent buffers, then its submodules'."""
        yield from ((prefix + name, p) for name, p in self._parameters.items())
        yield from ((prefix + name, b) for name, b in self._buffers.items()
                    if b is not None and name not in self._non_persistent)
        for name, m in self._modules.items():
            yield from m._named_state(prefix + name + ".")

    def state_updates(self) -> list:
        """(shared, new value) pairs a training step must apply besides the optimizer's,
        e.g. a dropout layer's seed; collected from every submodule after a forward."""
        return [u for m in self.modules() for u in getattr(m, "_state_updates", [])]

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers by name, as NumPy arrays of their own dtypes."""
        return OrderedDict((name, v.get_value()) for name, v in self._named_state())

    def load_state_dict(self, state: dict) -> None:
        """Set every parameter and buffer from `state` (name -> array, e.g. a torch
        state_dict's tensors); names and shapes must match exactly, and each value takes
        the dtype of the one it replaces (an int64 count stays int64)."""
        mine = dict(self._named_state())
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        if missing or unexpected:
            raise KgenError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        arrays = {}
        for name, value in state.items():  # every value checked before any is set
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if tuple(value.shape) != tuple(mine[name].shape):
                raise ShapeError(f"load_state_dict: {name!r} has shape {list(value.shape)}, "
                                 f"expected {list(mine[name].shape)}")
            arrays[name] = value
        for name, value in arrays.items():
            target = mine[name]
            target.set_value(value.astype(np.float32 if target.dtype.is_float else target.dtype.numpy))

    # --- Keras style: weights files (kgen.nn.checkpoint) ---------------------------------------
    def save_weights(self, path) -> None:
        """Keras's save_weights: the state_dict, no optimizer state, to the safetensors file
        `path` under torch's names (kgen.nn.save without an optimizer)."""
        from kgen.nn import checkpoint  # at call time: kgen.nn.checkpoint builds on Module (a cycle in nn)
        checkpoint.save(path, self)

    def load_weights(self, path) -> None:
        """Keras's load_weights: the state_dict from a safetensors file (kgen's or torch's);
        a file that does not fit is an error that changes nothing."""
        from kgen.nn import checkpoint  # at call time: kgen.nn.checkpoint builds on Module (a cycle in nn)
        checkpoint.load(path, self)

    # --- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # --- Keras style: compile / fit / evaluate / predict (kgen.nn.train.Trainer) --------------
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=(), precision: str = "fp32",
                loss_scaler=None, process_group=None, shard_optimizer: bool = False) -> "Module":
        """Keras's compile. `precision` "fp16" or "bf16" runs the matmuls and convolutions in
        half precision, float32 everywhere else (kgen.nn.precision); fp16 scales the loss
        dynamically with `loss_scaler` (a new GradScaler when None), which is then
        `optimizer.loss_scaler`. `process_group` and `shard_optimizer` are data-parallel fit's
        (kgen.nn.train.Trainer)."""
        from kgen.nn.train import Trainer  # at call time: kgen.nn.train builds on Module (a cycle in nn)
        object.__setattr__(self, "_trainer", Trainer(self, optimizer, loss, metrics, precision, loss_scaler,
                                                     process_group, shard_optimizer))
        return self

    def _compiled(self):
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            raise KgenError(f"{type(self).__name__}: call compile(optimizer=..., loss=...) before fit/evaluate")
        return trainer

    @property
    def optimizer(self):
        """The optimizer compile set up (Keras's model.optimizer: schedules set its lr)."""
        return self._compiled().optimizer

    def fit(self, x, y=None, **kwargs) -> dict:
        return self._compiled().fit(x, y, **kwargs)

    def evaluate(self, x, y=None, **kwargs) -> list:
        return self._compiled().evaluate(x, y, **kwargs)

    def predict(self, x, **kwargs):
        from kgen.nn.train import Trainer  # at call time: kgen.nn.train builds on Module (a cycle in nn)
        return (getattr(self, "_trainer", None) or Trainer(self, "sgd", "mse")).predict(x, **kwargs)

    def __repr__(self):
        inner = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self) -> str:
        return ""
