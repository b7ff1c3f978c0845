"""kgen.from_onnx: an ONNX model as a kgen.nn.Module.

    model = kgen.from_onnx("mnist.onnx")
    x = kgen.tensor(*model.inputs[0])
    logits = model(x)

The graph's inputs that are not initializers are the module's inputs (`.inputs`: name,
shape with each `dim_param` as a kgen size symbol, dtype). Float initializers are the
module's parameters under their ONNX names (state_dict() reads them back; nn.train_step and
fit train them), except those an op keeps as state (batch norm's running statistics), which
are buffers. Integer and bool initializers (shapes, axes, indices) and float ones read only
where a value must be known at import are constants of the graph, folded where they are read. Calling the module on kgen tensors builds the
graph in kgen IR and returns its outputs: one value, or a tuple in the graph's order.
"""
from __future__ import annotations

import numpy as np

from kgen import ops
from kgen.errors import InputError, ShapeError
from kgen.frontends.onnx import graph as onnx_graph
from kgen.frontends.onnx.table import ONNX
from kgen.frontends.scope import place
from kgen.function import tensor
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node
from kgen.nn.module import Module


def from_onnx(model_or_path, constants: dict | None = None) -> "OnnxModule":
    """An ONNX model (a ModelProto, or the path of a .onnx file) as a kgen.nn.Module.
    `constants` binds graph inputs (by ONNX name) to arrays known at import, for models that
    take a shape or an axis list as an input rather than as an initializer."""
    model = onnx_graph.load(model_or_path)
    where = str(model_or_path) if not hasattr(model_or_path, "graph") else "the model"
    module = OnnxModule(model, constants or {}, where)
    module.check_translation()
    return module


def _read_only_at(model, field: str) -> set:
    """Value names that every node reading them reads at a position its table entry lists in
    `field` ("state": batch norm's running statistics; "static": a Reshape's shape), and that
    are no graph output."""
    listed, other = set(), {o.name for o in model.graph.output}
    for node in model.graph.node:
        positions = getattr(ONNX[node.op_type], field) if node.op_type in ONNX else ()
        for i, name in enumerate(node.input):
            (listed if i in positions else other).add(name)
    return listed - other


class OnnxModule(Module):
    """An ONNX graph as a kgen.nn.Module (made by `from_onnx`)."""

    def __init__(self, model, constants: dict, where: str = "the model"):
        super().__init__()
        object.__setattr__(self, "onnx_model", model)
        object.__setattr__(self, "where", where)
        object.__setattr__(self, "_constants", {})
        object.__setattr__(self, "_known", {name: np.asarray(v) for name, v in constants.items()})
        unknown = sorted(set(constants) - {info.name for info in model.graph.input})
        if unknown:
            raise InputError(f"{where}: constants names {unknown[0]!r}, which is not an input of the graph")
        object.__setattr__(self, "_inputs", [(info, shape, dtype) for info, shape, dtype
                                             in onnx_graph.graph_inputs(model, where)
                                             if info.name not in constants])
        keep, static_only = _read_only_at(model, "state"), _read_only_at(model, "static")
        object.__setattr__(self, "_folded", {})  # initializer name -> array, for those read as static inputs
        for name, value in onnx_graph.initializers(model).items():
            is_float = value.dtype.kind == "f"
            if is_float and value.dtype != np.float32 and value.dtype != np.float16:
                value = value.astype(np.float32)  # float64 weights: kgen computes in float32
            if not is_float or name in static_only:  # constants of the graph: shapes, axes, indices
                self._folded[name] = value
            else:
                place(self, name, value, buffer=name in keep)

    # --- what it takes ------------------------------------------------------------------------
    @property
    def inputs(self) -> list:
        """The graph's inputs as (name, shape, dtype), for kgen.tensor(*spec)."""
        return [(onnx_graph.identifier(info.name), shape, dtype) for info, shape, dtype in self._inputs]

    def check_translation(self) -> None:
        """Build the graph once on symbolic inputs, so an op kgen cannot translate is an error
        when the model is imported, not at its first step."""
        self(*[tensor(*spec) for spec in self.inputs])

    # --- building the graph -------------------------------------------------------------------
    def forward(self, *inputs):
        if len(inputs) != len(self._inputs):
            names = ", ".join(info.name for info, _, _ in self._inputs)
            raise InputError(f"{self.where}: expected {len(self._inputs)} input{'s' * (len(self._inputs) != 1)} "
                             f"({names}), got {len(inputs)}")
        symbols = {}
        values = {"": None}
        for (info, shape, dtype), value in zip(self._inputs, inputs):
            values[info.name] = _bind(self.where, info.name, shape, dtype, value, symbols)
        values.update(self._known)
        values.update(self._folded)
        state = dict(self.named_parameters()) | dict(self.named_buffers())
        for name in onnx_graph.initializers_names(self.onnx_model):
            if name in state:
                values[name] = state[name]
        outputs = onnx_graph.walk(self.onnx_model, values, self._constant, self.where)
        outputs = [v if isinstance(v, Node) else self._constant(name.name, v)
                   for name, v in zip(self.onnx_model.graph.output, outputs)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _constant(self, name: str, value: np.ndarray):
        """A value known at import as a kgen constant (sizes of a symbolic shape as size constants)."""
        key = (name, value.dtype.str, value.shape, value.tobytes() if value.dtype != object else repr(value))
        if key not in self._constants:
            if value.dtype == object:  # a Shape of a symbolic tensor: its sizes, one scalar each
                parts = [ops.size_constant(v) for v in value.reshape(-1)]
                built = ops.reshape(ops.stack(parts, 0), value.shape) if parts else ops.constant(
                    np.zeros(value.shape, np.int64))
            else:
                if value.dtype == np.float64:
                    value = value.astype(np.float32)
                built = ops.constant(value)
            self._constants[key] = built
        return self._constants[key]

    def extra_repr(self) -> str:
        n = sum(int(np.prod(p.shape)) for p in self.parameters())
        return f"from ONNX {self.onnx_model.graph.name or self.where}: {n:,} parameters"


def _bind(where: str, name: str, shape: tuple, dtype, value, symbols: dict):
    if not isinstance(value, Node):
        raise InputError(f"{where}: input {name!r} must be a kgen tensor (kgen.tensor or a model's output), got "
                         f"{type(value).__name__}")
    if value.ndim != len(shape) or not all(
            shapes.dims_equal(symbols.get(want, want), got) if not isinstance(want, int) and want in symbols
            else (not isinstance(want, int) or shapes.dims_equal(want, got)) for want, got in zip(shape, value.shape)):
        raise ShapeError(f"{where}: input {name!r} must have shape {shapes.format_shape(shape)}, got "
                         f"{value.type_str()}")
    for want, got in zip(shape, value.shape):
        if not isinstance(want, int):
            symbols.setdefault(want, got)
    if value.dtype.is_float != dtype.is_float or (not dtype.is_float and value.dtype is dtypes.bool_) != (
            dtype is dtypes.bool_):
        raise InputError(f"{where}: input {name!r} must be {dtype}, got {value.dtype}")
    return value
