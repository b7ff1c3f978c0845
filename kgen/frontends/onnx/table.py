"""The ONNX frontend's op table: one translator per ONNX op, onto kgen.ops.

A translator takes the node (`OnnxNode`: its attributes, and its inputs as kgen values) and
returns its outputs: a kgen Node, a NumPy array for a value known when the model is
imported (a shape, an axis list: `Shape`, `Constant`), or a tuple of them for a node with
several outputs. Nothing here computes on data; every op lands on kgen.ops.

An entry also says which of the op's inputs carry structure rather than data (`static`:
Reshape's shape, Slice's starts, the axes of a reduction). kgen's shapes are fixed when a
graph is built, so those inputs must be known at import: from initializers, Constant nodes,
or chains (Shape -> Gather -> Concat) that fold. And it says which float inputs are state
rather than weights (`state`: batch norm's running mean and variance), which an imported
model keeps as buffers, so training does not move them.

The translators live in `ops_*.py` by family; importing this package registers them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from kgen.errors import DTypeError, KgenError, OptionError
from kgen.ir import dtypes
from kgen.ir.node import Node


@dataclass(frozen=True)
class Entry:
    translate: Callable
    static: tuple  # input positions that must be known at import
    state: tuple  # float input positions kept as buffers, not trained


ONNX: dict = {}

# ONNX tensor element types -> kgen dtypes; the rest (double, unsigned and narrow ints,
# strings, 8-bit floats) kgen does not compute in.
_ELEMENT_TYPES = {
    onnx.TensorProto.FLOAT: dtypes.float32, onnx.TensorProto.FLOAT16: dtypes.float16,
    onnx.TensorProto.BFLOAT16: dtypes.bfloat16, onnx.TensorProto.INT32: dtypes.int32,
    onnx.TensorProto.INT64: dtypes.int64, onnx.TensorProto.BOOL: dtypes.bool_,
}


def onnx_op(*names, static=(), state=()):
    """Register the decorated translator for the ONNX ops `names` (default domain)."""
    def register(fn):
        for name in names:
            if name in ONNX:
                raise ValueError(f"ONNX op {name!r} is translated twice")
            ONNX[name] = Entry(fn, tuple(static), tuple(state))
        return fn
    return register


def kgen_dtype(element_type: int, where: str):
    """The kgen dtype of an ONNX element type, or a DTypeError naming `where`."""
    if element_type in _ELEMENT_TYPES:
        return _ELEMENT_TYPES[element_type]
    name = onnx.TensorProto.DataType.Name(element_type) if element_type in onnx.TensorProto.DataType.values() \
        else str(element_type)
    raise DTypeError(f"{where}: ONNX type {name} is not one kgen computes in (it has float32, float16, "
                     f"bfloat16, int32, int64 and bool)")


REQUIRED = object()


class OnnxNode:
    """One ONNX node as its translator sees it. `values` maps value names to what the graph
    has computed so far (kgen Nodes, or NumPy arrays known at import)."""

    def __init__(self, proto: onnx.NodeProto, values: dict, opset: int, constant: Callable):
        self.proto, self.op, self.opset = proto, proto.op_type, opset
        self.name = proto.name or f"{proto.op_type} -> {', '.join(o for o in proto.output if o)}"
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self._values, self._constant = values, constant

    def __str__(self):
        return f"{self.op} node {self.name!r}"

    # --- attributes ---------------------------------------------------------------------------
    def attr(self, key: str, default=REQUIRED):
        if key in self.attrs:
            value = self.attrs[key]
            return value.decode() if isinstance(value, bytes) else value
        if default is REQUIRED:
            raise KgenError(f"{self}: the required attribute {key!r} is missing")
        return default

    def refuse(self, what: str, error=OptionError):
        """A translator's refusal of an attribute or form it does not take."""
        return error(f"{self}: {what}")

    # --- inputs -------------------------------------------------------------------------------
    @property
    def arity(self) -> int:
        return len(self.proto.input)

    def has(self, i: int) -> bool:
        return i < len(self.proto.input) and self.proto.input[i] != ""

    def tensor(self, i: int, default=REQUIRED):
        """Input i as a kgen Node (a value known at import becomes a constant)."""
        if not self.has(i):
            if default is REQUIRED:
                raise KgenError(f"{self}: input {i} is required")
            return default
        value = self._values[self.proto.input[i]]
        return value if isinstance(value, Node) else self._constant(self.proto.input[i], value)

    def static(self, i: int, default=REQUIRED) -> np.ndarray:
        """Input i as a NumPy array known at import (its entries may be sympy sizes: a
        `Shape` of a tensor with a symbolic batch)."""
        if not self.has(i):
            if default is REQUIRED:
                raise KgenError(f"{self}: input {i} is required")
            return default
        value = self._values[self.proto.input[i]]
        if isinstance(value, Node):
            raise KgenError(f"{self}: input {i} ({self.proto.input[i]!r}) must be known when the model is "
                            f"imported (kgen's shapes are fixed when a graph is built), but it is computed at "
                            f"run time ({value.type_str()}); fold it into an initializer or a Constant")
        return value

    def ints(self, i: int, attr: str | None = None, default=REQUIRED):
        """A list of ints given as attribute `attr` (older opsets) or as static input i."""
        if attr is not None and attr in self.attrs:
            return [int(v) for v in self.attrs[attr]]
        if self.has(i):
            return [v if not isinstance(v, (int, np.integer)) else int(v) for v in self.static(i).reshape(-1)]
        if default is REQUIRED:
            raise KgenError(f"{self}: {attr or f'input {i}'} is required")
        return default

    def input_dtype(self, i: int):
        value = self._values[self.proto.input[i]]
        return value.dtype if isinstance(value, Node) else dtypes.dtype(value.dtype) if value.dtype != object \
            else dtypes.int64
