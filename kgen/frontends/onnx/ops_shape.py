"""ONNX shape and data-movement ops onto kgen.ops: Shape, Reshape, Flatten, Transpose,
Squeeze, Unsqueeze, Expand, Concat, Split, Slice, Pad, Gather."""
from __future__ import annotations

import numpy as np

from kgen import ops
from kgen.frontends.onnx.table import onnx_op


@onnx_op("Shape")
def _shape(node):
    """The input's shape, known at import (a symbolic size stays a sympy size)."""
    shape = list(node.tensor(0).shape)
    start, end = node.attr("start", 0), node.attr("end", None)
    shape = shape[start:end]
    if all(isinstance(d, int) for d in shape):
        return np.array(shape, np.int64)
    return np.array(shape, dtype=object)


@onnx_op("Reshape", static=(1,))
def _reshape(node):
    x = node.tensor(0)
    shape = list(node.ints(1, "shape"))
    if not node.attr("allowzero", 0):  # 0 copies the input's size at that axis
        shape = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
    return ops.reshape(x, tuple(shape))
