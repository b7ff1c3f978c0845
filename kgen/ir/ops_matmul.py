"""Op table entry for matmul: [..., M, K] @ [..., K, N] -> [..., M, N], batch dims
broadcast. kgen.ops.matmul turns 1-D operands into 2-D ones as NumPy does."""
from __future__ import annotations

import numpy as np
import torch

from kgen.errors import DTypeError, ShapeError
from kgen.ir import shapes
from kgen.ir.optable import OpDef, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def _infer(inputs, attrs):
    a, b = inputs
    if a.dtype != b.dtype or not a.dtype.is_float:
        raise DTypeError(f"matmul takes two operands of one floating dtype, "
                         f"got {a.type_str()} and {b.type_str()}")
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"matmul operands must have at least 2 dims, got "
                         f"{shapes.format_shape(a.shape)} and {shapes.format_shape(b.shape)}")
    if not shapes.dims_equal(a.shape[-1], b.shape[-2]):
        raise ShapeError(f"matmul inner dims differ: {shapes.format_shape(a.shape)} @ "
                         f"{shapes.format_shape(b.shape)} ({a.shape[-1]} != {b.shape[-2]})")
    batch = shapes.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.dtype, batch + (a.shape[-2], b.shape[-1])


def _reference(node, arrays, shape):
    a, b = arrays
    if a.dtype == np.float16:  # kernels accumulate in float32
        return np.matmul(a.astype(np.float32), b.astype(np.float32))
    return np.matmul(a, b)


def _vjp(g, node):
    ops = _ops()
    a, b = node.inputs
    grad_a = ops.matmul(g, ops.swap_last(b))
    grad_b = ops.matmul(ops.swap_last(a), g)
    return ops.sum_to(grad_a, a.shape), ops.sum_to(grad_b, b.shape)


def _flops(node):
    """A multiply and an add per (output element, K step)."""
    return 2 * shapes.numel(node.shape) * node.inputs[0].shape[-1]


def _gemm(node):
    """A 2-D matmul is one GEMM of its own extents; a batched one is several (kernels.matmul)."""
    if node.ndim != 2:
        return None
    a, b = node.inputs
    return node.shape[0], node.shape[1], a.shape[1], a, b


def _vendor(node, operands):
    return torch.matmul(*operands)


register(OpDef("matmul", "template", _infer, _reference, _vjp, "matmul", arity=2, epilogue=True,
               flops=_flops, gemm=_gemm, row_epilogue=True, vendor=_vendor))
