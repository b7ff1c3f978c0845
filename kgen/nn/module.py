"""Module: the PyTorch-style container of parameters and sublayers.

Parameters are kgen.shared values (device-resident); calling a module on a symbolic tensor
builds its forward graph. Names and shapes follow PyTorch (`0.weight`, `fc1.bias`), so a
state_dict moves between kgen and torch as NumPy arrays.
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
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, SharedVariable):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def add_parameter(self, name: str, value: np.ndarray) -> SharedVariable:
        """A new parameter initialised from `value`, named after its place in the model."""
        param = shared(np.asarray(value, np.float32), name=f"p{id(self):x}_{name}")
        setattr(self, name, param)
        return param

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
        return OrderedDict((name, p.get_value()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict) -> None:
        """Set every parameter from `state` (name -> array, e.g. a torch state_dict's
        tensors as NumPy); names and shapes must match exactly."""
        mine = dict(self.named_parameters())
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        if missing or unexpected:
            raise KgenError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for name, value in state.items():
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if tuple(value.shape) != tuple(mine[name].shape):
                raise ShapeError(f"load_state_dict: {name!r} has shape {list(value.shape)}, "
                                 f"expected {list(mine[name].shape)}")
            mine[name].set_value(value.astype(np.float32))

    # --- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # --- Keras style: compile / fit / evaluate / predict (kgen.nn.train.Trainer) --------------
    def compile(self, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=()) -> "Module":
        from kgen.nn.train import Trainer  # at call time: kgen.nn.train builds on Module (a cycle in nn)
        object.__setattr__(self, "_trainer", Trainer(self, optimizer, loss, metrics))
        return self

    def _compiled(self):
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            raise KgenError(f"{type(self).__name__}: call compile(optimizer=..., loss=...) before fit/evaluate")
        return trainer

    def fit(self, x, y, **kwargs) -> dict:
        return self._compiled().fit(x, y, **kwargs)

    def evaluate(self, x, y, **kwargs) -> list:
        return self._compiled().evaluate(x, y, **kwargs)

    def predict(self, x, **kwargs):
        from kgen.nn.train import Trainer  # at call time: kgen.nn.train builds on Module (a cycle in nn)
        return (getattr(self, "_trainer", None) or Trainer(self, "sgd", "mse")).predict(x, **kwargs)

    def __repr__(self):
        inner = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self) -> str:
        return ""
