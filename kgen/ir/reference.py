"""The reference interpreter: runs any Graph in NumPy, node by node, from the op table.

It is the specification every generated kernel is checked against. Two precisions:
- "float64": floats computed in float64 (what checks compare against);
- "native": each node in its own dtype (bfloat16 kept as rounded float32), reductions and
  matmuls of half types accumulated in float32 as kernels do.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np
import torch

from kgen.errors import InputError, KgenError
from kgen.ir import dtypes, shapes
from kgen.ir.graph import Graph

PRECISIONS = ("float64", "native")


def _to_numpy(value, node, precision):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    array = np.asarray(value)
    if array.dtype.kind == "f" and not node.dtype.is_float:
        raise InputError(f"input {node.name!r}: expected {node.dtype} values, got {array.dtype}")
    if precision == "float64" and node.dtype.is_float:
        return array.astype(np.float64)
    return dtypes.round_to(array, node.dtype)


def bind_inputs(graph: Graph, inputs) -> dict:
    """Input node -> value, from a mapping by name or a sequence in graph.inputs order."""
    if isinstance(inputs, Mapping):
        unknown = set(inputs) - {i.name for i in graph.inputs}
        if unknown:
            raise InputError(f"unknown inputs {sorted(unknown)}; the graph takes "
                             f"{[i.name for i in graph.inputs]}")
        missing = [i.name for i in graph.inputs if i.name not in inputs]
        if missing:
            raise InputError(f"missing inputs {missing}")
        return {i: inputs[i.name] for i in graph.inputs}
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise InputError(f"expected {len(graph.inputs)} inputs "
                         f"({', '.join(i.name for i in graph.inputs)}), got {len(inputs)}")
    return dict(zip(graph.inputs, inputs))


def evaluate(graph: Graph, inputs: Union[Mapping, Sequence], precision: str = "float64", sizes=None) -> dict:
    """Every node's value (node -> ndarray), for the given inputs. `sizes` binds size symbols
    known already (a loop body's, from the graph holding it: 2*N cannot tell N at N = 0)."""
    if precision not in PRECISIONS:
        raise KgenError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    values, sizes = {}, dict(sizes or {})
    for node, value in bind_inputs(graph, inputs).items():
        array = _to_numpy(value, node, precision)
        shapes.bind_shape(node.shape, array.shape, sizes, f"input {node.name!r}")
        values[node] = array
    for node in graph.nodes:
        if node in values:
            continue
        if node.op == "input":
            raise InputError(f"input {node.name!r} is used but not given")
        shape = tuple(shapes.evaluate(d, sizes) for d in node.shape)
        args = [values[i] for i in node.inputs]
        if precision == "native" and node.opdef.kind == "elementwise" and node.dtype is dtypes.float16:
            args = [a.astype(np.float32) if a.dtype == np.float16 else a for a in args]  # round once, as kernels do
        with np.errstate(all="ignore"):
            if node.opdef.sized_reference:
                out = node.opdef.reference(node, args, shape, sizes)
            else:
                out = node.opdef.reference(node, args, shape)
        out = np.asarray(out)
        if precision == "float64" and node.dtype.is_float:
            out = out.astype(np.float64)
        else:
            out = dtypes.round_to(out, node.dtype)
        if out.shape != shape:
            raise KgenError(f"reference of `{graph.line(node)}` gave shape {out.shape}, expected {shape}")
        values[node] = out
    return values


def run(graph: Graph, inputs: Union[Mapping, Sequence], precision: str = "float64") -> list:
    """The graph's outputs as NumPy arrays."""
    values = evaluate(graph, inputs, precision)
    return [values[o] for o in graph.outputs]
