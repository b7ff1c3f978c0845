"""Reading an ONNX model and walking its graph into kgen values.

`load` takes a ModelProto or a file and refuses, with a kgen error that names the problem,
what is not a model kgen can import: a file that is not ONNX (or is cut short), an opset
outside the ones kgen knows, an op domain other than ONNX's own, a graph whose nodes form a
cycle or read a value nothing defines, and (at translation) an op with no entry in the table.

`walk` binds the graph's inputs and initializers, then visits the nodes in dependency order:
a node whose inputs are all known at import folds (kgen/frontends/onnx/fold.py); any other is
translated by its op table entry (kgen/frontends/onnx/table.py) into kgen IR.
"""
from __future__ import annotations

import os
import re

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from kgen.errors import InputError, KgenError, ShapeError, UnknownOpError
from kgen.frontends.onnx import fold as folding
from kgen.frontends.onnx.table import ONNX, OnnxNode, kgen_dtype
from kgen.ir import shapes
from kgen.ir.node import Node

# The default domain's opsets kgen translates: from 6 (what older torch exporters wrote; its
# binary ops' `broadcast`/`axis` attributes are honoured) to the newest the installed onnx defines.
OPSETS = range(6, onnx.defs.onnx_opset_version() + 1)
DOMAINS = ("", "ai.onnx")


def load(model_or_path) -> onnx.ModelProto:
    """A checked ModelProto from a ModelProto, a path, or the bytes of a model."""
    if isinstance(model_or_path, onnx.ModelProto):
        model, where = model_or_path, "the model"
    elif isinstance(model_or_path, (str, os.PathLike)):
        where = os.fspath(model_or_path)
        if not os.path.isfile(where):
            raise InputError(f"{where}: no such file (expected an ONNX model file)")
        with open(where, "rb") as f:
            data = f.read()
        model = _parse(data, where)
    elif isinstance(model_or_path, (bytes, bytearray)):
        model, where = _parse(bytes(model_or_path), "the bytes given"), "the model"
    else:
        raise InputError(f"from_onnx: expected an onnx.ModelProto or the path of a .onnx file, got "
                         f"{type(model_or_path).__name__}")
    check(model, where)
    return model


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InputError(f"{where}: not an ONNX model (the protobuf does not parse: {e}); is the file cut short, "
                         f"or another format?") from None
    if not model.HasField("graph") or not model.opset_import:
        raise InputError(f"{where}: not an ONNX model (no graph or no opset_import); is the file cut short, or "
                         f"another format?")
    return model


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in DOMAINS)


def check(model: onnx.ModelProto, where: str) -> None:
    """Refuse, naming the cause, a model kgen cannot import (before anything is built)."""
    versions = {o.domain: o.version for o in model.opset_import}
    default = [versions[d] for d in DOMAINS if d in versions]
    if not default:
        raise InputError(f"{where}: the model imports no opset of the default ONNX domain")
    if default[0] not in OPSETS:
        raise InputError(f"{where}: ONNX opset {default[0]} is not one kgen knows (it translates opsets "
                         f"{OPSETS.start} to {OPSETS.stop - 1})")
    graph = model.graph
    if graph.sparse_initializer:
        raise InputError(f"{where}: sparse initializers are not supported")
    order(graph, where)
    for node in graph.node:
        if node.domain not in DOMAINS:
            raise UnknownOpError(f"{where}: {node.op_type} node {node.name!r} is in the op domain {node.domain!r}; "
                                 f"kgen translates ONNX's own domain only")


def order(graph: onnx.GraphProto, where: str = "the model") -> list:
    """The graph's nodes in an order where each comes after what it reads (ONNX requires the
    file's order to be one; kgen does not rely on it), or an error naming a cycle or a
    value nothing defines."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    producer = {}
    for node in graph.node:
        for name in node.output:
            if name:
                if name in producer or name in defined:
                    raise InputError(f"{where}: the value {name!r} is defined twice (by {node.op_type} node "
                                     f"{node.name!r} and before it)")
                producer[name] = node
    for node in graph.node:
        for name in node.input:
            if name not in defined and name not in producer:
                raise InputError(f"{where}: {node.op_type} node {node.name!r} reads {name!r}, which no node, "
                                 f"input or initializer of the graph defines")
    for out in graph.output:
        if out.name not in defined and out.name not in producer:
            raise InputError(f"{where}: the graph's output {out.name!r} is defined by no node, input or initializer")
    ordered, state = [], {}  # state: 1 while being visited, 2 when done

    def visit(node):
        key = id(node)
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise InputError(f"{where}: the graph has a cycle through {node.op_type} node {node.name!r}")
        state[key] = 1
        for name in node.input:
            if name in producer:
                visit(producer[name])
        state[key] = 2
        ordered.append(node)

    for node in graph.node:
        visit(node)
    return ordered


def identifier(name: str) -> str:
    """An ONNX value name ("input.1", "0") as a kgen tensor name."""
    name = re.sub(r"\W", "_", name)
    return name if name.isidentifier() else f"x_{name}"


def value_shape(info: onnx.ValueInfoProto, where: str) -> tuple:
    """The declared shape of a graph input: ints, and a size symbol for each dim_param (or for
    a dimension given neither way, named after the input)."""
    if not info.type.HasField("tensor_type"):
        raise InputError(f"{where}: input {info.name!r} is not a tensor (kgen imports tensor inputs only)")
    if not info.type.tensor_type.HasField("shape"):
        raise ShapeError(f"{where}: input {info.name!r} has no declared shape; kgen needs each input's rank")
    dims = []
    for i, d in enumerate(info.type.tensor_type.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(shapes.size_symbol(identifier(d.dim_param) if d.dim_param
                                           else f"{identifier(info.name)}_d{i}"))
    return tuple(dims)


def graph_inputs(model: onnx.ModelProto, where: str = "the model") -> list:
    """(ValueInfoProto, shape, kgen dtype) of each input that is not an initializer."""
    initialized = {t.name for t in model.graph.initializer}
    return [(info, value_shape(info, where), kgen_dtype(info.type.tensor_type.elem_type, f"{where}: input "
                                                                                          f"{info.name!r}"))
            for info in model.graph.input if info.name not in initialized]


def initializers_names(model: onnx.ModelProto) -> list:
    return [t.name for t in model.graph.initializer]


def initializers(model: onnx.ModelProto) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def walk(model: onnx.ModelProto, values: dict, constant, where: str = "the model") -> list:
    """The graph's outputs, given `values`: every graph input and initializer bound to a kgen
    Node or a NumPy array known at import. `constant(name, array)` turns a known array into a
    kgen Node where a translator needs one."""
    version = opset(model)
    for proto in order(model.graph, where):
        node = OnnxNode(proto, values, version, constant)
        inputs = [values[name] if name else None for name in proto.input]
        outputs = None
        if all(v is None or isinstance(v, np.ndarray) for v in inputs) and not proto.op_type.startswith("Random"):
            outputs = folding.fold(node, inputs)  # known at import: computed now, in no kernel
        if outputs is None:
            entry = ONNX.get(proto.op_type)
            if entry is None:
                shown = ", ".join(_describe(v) for v in inputs)
                raise UnknownOpError(f"{where}: {node} has no kgen translation (ONNX op {proto.op_type}, opset "
                                     f"{version}; inputs {shown})")
            try:
                outputs = entry.translate(node)
            except KgenError as e:
                if str(node) in str(e):
                    raise
                raise type(e)(f"{node}: {e}") from None
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        unread = [name for name in proto.output[len(outputs):] if name]
        if unread:
            raise KgenError(f"{where}: {node} has {len(proto.output)} outputs; kgen computes its first "
                            f"{len(outputs)}, but the graph names {unread[0]!r} too")
        for name, value in zip(proto.output, outputs):
            if name:
                values[name] = value
    return [values[out.name] for out in model.graph.output]


def _describe(value) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, Node):
        return value.type_str()
    return f"known {value.dtype}{list(value.shape)}"
