"""Op table entries for reading rows of a table by index, as torch.nn.functional.embedding:

    embedding(indices[*S], weight[V, D])            -> [*S, D]   out[s, :] = weight[indices[s], :]
    embedding_grad(g[*S, D], indices[*S])           -> [V, D]    num_embeddings=V, padding_idx
                                                                 out[v, :] = sum of g[s, :] over indices[s] == v

Both are template ops (kgen/kernels/gather.py), not composites: a gather written as
one_hot(indices, V) @ weight would cost V times the flops and an [*S, V] operand in memory;
its gradient, one_hot(indices, V)^T @ g, as much again. The gather reads each row it needs
once; the scatter adds each row of g once.

An index outside [0, V) is refused before any kernel runs where it is a graph input (the
label check of kgen.kernels.inputs finds the inputs that reach `embedding`); a computed
index outside reads a zero row and adds nowhere, the same in the reference as in the
kernels, which mask such rows so that no kernel reads or writes outside the table.

Rows at `padding_idx` (an int in [0, V), or None) get no gradient, as in torch; the forward
reads them like any row. The indices are piecewise constant: they get no gradient.
Half-precision tables accumulate their gradient in float32.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kgen.errors import DTypeError, ShapeError
from kgen.ir import shapes
from kgen.ir.node import Node
from kgen.ir.optable import OpDef, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def _check_indices(indices) -> None:
    if indices.dtype.is_float or indices.dtype.name == "bool":
        raise DTypeError(f"embedding: indices must be integers, got {indices.type_str()}")


def padding_index(padding_idx, rows: int):
    """torch's rule: padding_idx in [-V, V), a negative one counting from the end; None for none."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)) \
            or not -rows <= padding_idx < rows:
        raise ShapeError(f"embedding: padding_idx must be an int in [-{rows}, {rows}) (the table's rows) or None, "
                         f"got {padding_idx!r}")
    return int(padding_idx) % rows


def embedding_grad(g, indices, num_embeddings: int, padding_idx=None) -> Node:
    """The gradient of embedding(indices, weight) for a weight of `num_embeddings` rows,
    given the output gradient g: rows of g added into the rows the indices name. Built by
    the VJP rule (and tests), not a kgen.ops function, as torch's embedding_backward is no
    torch.* function."""
    if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, (int, np.integer)) or num_embeddings < 1:
        raise ShapeError(f"embedding_grad: num_embeddings must be an int >= 1, got {num_embeddings!r}")
    return Node("embedding_grad", (g, indices),
                {"num_embeddings": int(num_embeddings),
                 "padding_idx": padding_index(padding_idx, int(num_embeddings))})


def _inside(indices: np.ndarray, rows: int) -> np.ndarray:
    return (indices >= 0) & (indices < rows)


# --- embedding: the gather ------------------------------------------------------------------
def _infer_embedding(inputs, attrs):
    indices, weight = inputs
    _check_indices(indices)
    if weight.ndim != 2 or not weight.dtype.is_float:
        raise ShapeError(f"embedding: weight must be a 2-D float table [V, D], got {weight.type_str()}")
    if not all(isinstance(d, int) for d in weight.shape):
        raise ShapeError(f"embedding: weight {weight.type_str()} must have static sizes")
    padding_index(attrs.get("padding_idx"), weight.shape[0])
    return weight.dtype, indices.shape + (weight.shape[1],)


def _embedding_reference(node, arrays, shape):
    indices, weight = arrays
    inside = _inside(indices, weight.shape[0])
    rows = weight[np.where(inside, indices, 0)]
    return np.where(inside[..., None], rows, np.zeros((), weight.dtype))


def _embedding_vjp(g, node):
    indices, weight = node.inputs
    return (None, embedding_grad(g, indices, weight.shape[0], node.attrs.get("padding_idx")))


def _embedding_vendor(node, operands):
    indices, weight = operands
    return F.embedding(indices.long(), weight)


register(OpDef("embedding", "template", _infer_embedding, _embedding_reference, _embedding_vjp,
               "embedding", arity=2,
               epilogue=True,  # a following scale or add (positions) runs in the gather's kernel (E1)
               flops=lambda node: 0,  # a copy: no arithmetic
               vendor=_embedding_vendor))


# --- embedding_grad: the scatter-add ----------------------------------------------------------------
def _infer_embedding_grad(inputs, attrs):
    g, indices = inputs
    _check_indices(indices)
    if not g.dtype.is_float:
        raise DTypeError(f"embedding_grad: g must be a float tensor, got {g.type_str()}")
    if g.ndim != indices.ndim + 1 or not all(shapes.dims_equal(a, b) for a, b in zip(g.shape, indices.shape)):
        raise ShapeError(f"embedding_grad: g {g.type_str()} must be indices' shape "
                         f"{shapes.format_shape(indices.shape)} plus one axis (the row)")
    if not isinstance(g.shape[-1], int):
        raise ShapeError(f"embedding_grad: g {g.type_str()} must have a static row length")
    rows = attrs.get("num_embeddings")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ShapeError(f"embedding_grad: num_embeddings must be an int >= 1, got {rows!r}")
    padding_index(attrs.get("padding_idx"), rows)
    return g.dtype, (rows, g.shape[-1])


def _embedding_grad_reference(node, arrays, shape):
    g, indices = arrays
    g = g.astype(np.float32) if g.dtype == np.float16 else g
    keep = _inside(indices, shape[0])
    if node.attrs.get("padding_idx") is not None:
        keep &= indices != node.attrs["padding_idx"]
    out = np.zeros(shape, g.dtype)
    np.add.at(out, indices[keep], g[keep])
    return out


def _embedding_grad_vendor(node, operands):
    """torch's aten.embedding_dense_backward of the same arguments."""
    g, indices = operands
    padding = node.attrs.get("padding_idx")
    return torch.ops.aten.embedding_dense_backward(g, indices.long(), node.attrs["num_embeddings"],
                                                   -1 if padding is None else padding, False)


def _embedding_grad_vjp(c, node):
    # <c, embedding_grad(g)> = <embedding(c) with the padding row's zeros, g>
    g, indices = node.inputs
    ops = _ops()
    picked = ops.embedding(indices, c)
    padding = node.attrs.get("padding_idx")
    if padding is not None:
        picked = ops.where(ops.expand_dims(ops.equal(indices, padding), -1), 0.0, picked)
    return (picked, None)


register(OpDef("embedding_grad", "template", _infer_embedding_grad, _embedding_grad_reference, _embedding_grad_vjp,
               "embedding_grad", arity=2,
               flops=lambda node: shapes.numel(node.inputs[0].shape),  # one add per element of g
               vendor=_embedding_grad_vendor))
