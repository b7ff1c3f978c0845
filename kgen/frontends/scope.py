"""Foreign weights under their foreign names: a dotted name (torch's `layer1.0.weight`, an
ONNX initializer's `fc1.weight`) becomes a path of submodules, so that a kgen module's
`state_dict()` names each value as the source did."""
from __future__ import annotations

import re

import numpy as np

from kgen.function import shared
from kgen.nn.module import Module


class Scope(Module):
    """The parameters and buffers under one prefix of the names (`layer1.0`); the graph that
    reads them belongs to the module at the root."""


def place(root: Module, name: str, value: np.ndarray, buffer: bool) -> None:
    """Put `value` at `name` under `root`: a parameter (a kgen.shared value), or a buffer."""
    *path, leaf = name.split(".")
    scope = root
    for part in path:
        if part not in scope._modules:
            setattr(scope, part, Scope())
        scope = scope._modules[part]
    variable = shared(value, name=f"m{id(root):x}_" + re.sub(r"\W", "_", name))
    # straight into the tables: a foreign name need not be an identifier (ONNX's "3", "onnx::Conv_7")
    (scope._buffers if buffer else scope._parameters)[leaf] = variable
