"""ONNX reductions and products onto kgen.ops: ReduceSum/Mean/Max, MatMul, Gemm, Softmax,
LogSoftmax."""
from __future__ import annotations

from kgen import ops
from kgen.frontends.onnx.table import onnx_op


@onnx_op("MatMul")
def _matmul(node):
    return ops.matmul(node.tensor(0), node.tensor(1))
