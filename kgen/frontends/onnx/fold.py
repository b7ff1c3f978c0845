"""Folding: a node whose inputs are all known when the model is imported is computed then,
not in a kernel. This is how shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat ->
Reshape, as exporters write `x.view(x.size(0), -1)`) reaches the static inputs that kgen's
ops need.

Arrays of plain numbers fold through ONNX's own reference evaluator (`onnx.reference`), so
every op folds as the standard defines it. A `Shape` of a tensor with a symbolic batch holds
a sympy size; arrays holding one fold through the few ops below, which shape arithmetic uses,
with NumPy on object arrays (sympy sizes add, multiply and floor-divide exactly).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from kgen.errors import KgenError


def _axis_list(node, i, attr):
    return node.ints(i, attr, default=None)


def _gather(node, data, indices):
    return np.take(data, indices.astype(np.int64), axis=node.attr("axis", 0))


def _concat(node, *parts):
    return np.concatenate([np.atleast_1d(p) for p in parts], axis=node.attr("axis"))


def _unsqueeze(node, data, *_):
    out = data
    axes = sorted(a % (data.ndim + len(_axis_list(node, 1, "axes"))) for a in _axis_list(node, 1, "axes"))
    for a in axes:
        out = np.expand_dims(out, a)
    return out


def _squeeze(node, data, *_):
    axes = _axis_list(node, 1, "axes")
    return np.squeeze(data, axis=None if axes is None else tuple(a % data.ndim for a in axes))


def _slice(node, data, *_):
    starts, ends = node.ints(1, "starts"), node.ints(2, "ends")
    axes = node.ints(3, "axes", default=list(range(len(starts))))
    steps = node.ints(4, default=[1] * len(starts))
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % data.ndim] = slice(start, None if end >= 2**62 or end <= -2**62 else end, step)
    return data[tuple(index)]


def _divide(node, a, b):
    return a // b  # shape arithmetic divides integers exactly (floor, as ONNX's integer Div)


_SYMBOLIC = {
    "Identity": lambda node, x: x,
    "Cast": lambda node, x: x,  # sizes are integers in every integer type
    "Gather": _gather, "Concat": _concat, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Slice": _slice,
    "Add": lambda node, a, b: a + b, "Sub": lambda node, a, b: a - b, "Mul": lambda node, a, b: a * b,
    "Div": _divide, "Reshape": lambda node, x, shape: x.reshape([int(d) for d in shape]),
}


def _sizes(value) -> np.ndarray:
    """An array of sizes: int64 once no symbol is left in it, else objects (sympy sizes)."""
    value = np.asarray(value, dtype=object)
    if all(getattr(v, "is_Integer", False) or isinstance(v, (int, np.integer)) for v in value.reshape(-1)):
        return value.astype(np.int64)
    return value


def fold(node, inputs: list) -> tuple:
    """The outputs of `node` (an OnnxNode) from its inputs, all known (None for an absent
    optional input). A tuple of arrays, one per output; None when it cannot fold."""
    if any(v is not None and v.dtype == object for v in inputs):
        rule = _SYMBOLIC.get(node.op)
        if rule is None or node.proto.domain not in ("", "ai.onnx"):
            return None
        return (_sizes(rule(node, *[v for v in inputs if v is not None])),)
    proto = node.proto
    names = [name or "" for name in proto.input]
    graph = helper.make_graph(
        [proto], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(names, inputs) if n and v is not None],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in proto.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", node.opset)])
    from onnx.reference import ReferenceEvaluator  # heavy: only when a node folds
    try:
        outputs = ReferenceEvaluator(model).run(None, {n: v for n, v in zip(names, inputs) if n and v is not None})
    except Exception as e:  # the standard's own evaluator refuses: the model is wrong here
        raise KgenError(f"{node}: its inputs are known at import, but ONNX's reference evaluator cannot compute "
                        f"it: {type(e).__name__}: {e}") from e
    return tuple(np.asarray(v) for v in outputs)
