"""ONNX reductions and products onto kgen.ops: ReduceSum/Mean/Max, MatMul, Gemm, Softmax,
LogSoftmax, and Dropout as inference runs it. Also Size and ConstantOfShape where they do not
fold (a tensor computed at run time, a shape holding a symbolic size)."""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from kgen import ops
from kgen.errors import DTypeError
from kgen.frontends.onnx.table import kgen_dtype, onnx_op
from kgen.ir import dtypes, shapes

# The opset from which each reduction takes its axes as input 1 instead of an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18}
_REDUCE = {"ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max}


@onnx_op(*_REDUCE, static=(1,))
def _reduce(node):
    """Axes from the attribute or input 1; none given reduces every axis, unless
    noop_with_empty_axes makes the node the identity. kgen reduces no bools, and ReduceMax
    takes them (opset 20): their max is their any, False over no element."""
    x = node.tensor(0)
    if node.opset < _AXES_INPUT_FROM[node.op]:
        axes = node.attr("axes", None)
        axes = None if axes is None else list(axes)
    else:
        axes = node.ints(1, default=None)
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = None
    keepdims = bool(node.attr("keepdims", 1))
    if x.dtype is dtypes.bool_ and node.op == "ReduceMax":
        return ops.greater(ops.sum(ops.cast(x, dtypes.int32), axes, keepdims), 0)
    out = _REDUCE[node.op](x, axes, keepdims)
    return out if out.dtype == x.dtype else ops.cast(out, x.dtype)  # an integer mean truncates, as ONNX's


def _float_operands(node, count):
    """The first `count` inputs, refused unless floating: kgen multiplies matrices in floating
    point, which would round an integer product's large sums."""
    operands = [node.tensor(i) for i in range(count)]
    for i, x in enumerate(operands):
        if not x.dtype.is_float:
            raise node.refuse(f"input {i} is {x.type_str()}; kgen multiplies floating-point matrices only",
                              DTypeError)
    return operands


@onnx_op("MatMul")
def _matmul(node):
    return ops.matmul(*_float_operands(node, 2))


@onnx_op("Gemm")
def _gemm(node):
    """alpha * A' @ B' + beta * C, A' and B' transposed when transA / transB say so; C is
    optional (from opset 11) and broadcasts to the product's shape."""
    a, b = _float_operands(node, 2)
    a = ops.transpose(a) if node.attr("transA", 0) else a
    b = ops.transpose(b) if node.attr("transB", 0) else b
    out = ops.matmul(a, b)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if alpha != 1.0:
        out = ops.mul(out, alpha)
    if node.has(2) and beta != 0.0:
        c = node.tensor(2)
        out = ops.add(out, c if beta == 1.0 else ops.mul(c, beta))
    return out


@onnx_op("Softmax", "LogSoftmax")
def _softmax(node):
    """From opset 13 along one axis (default -1); before, over the input flattened to 2-D at
    `axis` (default 1): the softmax runs across all axes from `axis` on."""
    x = node.tensor(0)
    compute = ops.softmax if node.op == "Softmax" else ops.log_softmax
    if node.opset >= 13:
        return compute(x, node.attr("axis", -1))
    axis = node.attr("axis", 1)
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise node.refuse(f"axis {axis} is out of range for an input of rank {x.ndim}")
    axis = axis % max(x.ndim, 1)
    flat = ops.reshape(x, (shapes.numel(x.shape[:axis]), -1))
    return ops.reshape(compute(flat, 1), x.shape)


@onnx_op("Dropout", static=(1, 2))
def _dropout(node):
    """Inference's dropout: the input itself, and (if the graph reads it) a mask that keeps
    everything. A training dropout with a ratio above 0 draws a random mask, which no
    import can reproduce, so it is refused."""
    x = node.tensor(0)
    training = bool(np.asarray(node.static(2)).reshape(-1)[0]) if node.has(2) else False
    ratio = float(np.asarray(node.static(1)).reshape(-1)[0]) if training and node.has(1) else 0.5
    if training and ratio > 0.0:
        raise node.refuse(f"training_mode is true with ratio {ratio}: its random mask cannot be reproduced; "
                          f"kgen imports dropout for inference (training_mode false, or ratio 0)")
    if len(node.proto.output) < 2 or not node.proto.output[1]:
        return x
    mask_dtype = x.dtype if node.opset < 10 else dtypes.bool_  # before opset 10, the input's type
    return x, ops.broadcast_to(ops.constant(1, mask_dtype), x.shape)


@onnx_op("Size")
def _size(node):
    """The element count, known at import (a sympy size when the shape is symbolic)."""
    count = shapes.numel(node.tensor(0).shape)
    return np.array(count, np.int64) if isinstance(count, int) else np.array(count, dtype=object)


@onnx_op("ConstantOfShape", static=(0,))
def _constant_of_shape(node):
    """`value` (one element; float 0 by default) broadcast to the shape given as input 0."""
    value = node.attr("value", None)
    if value is None:
        return ops.broadcast_to(ops.constant(0.0), tuple(node.ints(0)))
    array = numpy_helper.to_array(value).reshape(-1)
    return ops.broadcast_to(ops.constant(array[0], kgen_dtype(value.data_type, str(node))), tuple(node.ints(0)))
