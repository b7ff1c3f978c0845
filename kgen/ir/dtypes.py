"""The dtypes kgen knows, with their NumPy, torch and Triton spellings.

NumPy has no bfloat16: the reference interpreter keeps bfloat16 values in float32 arrays,
rounded to bfloat16 after every op (see `round_to`), so the values are bfloat16's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgen.errors import DTypeError


@dataclass(frozen=True)
class DType:
    name: str
    short: str  # as printed in IR text: f32, i64, ...
    numpy: type  # storage dtype in NumPy (float32 for bfloat16)
    torch: torch.dtype
    triton: str  # tl.<triton> in generated code
    signature: str  # the pointer element type in a triton.compile signature
    is_float: bool
    bits: int

    def __repr__(self):
        return self.name

    def __str__(self):
        return self.name


float32 = DType("float32", "f32", np.float32, torch.float32, "float32", "fp32", True, 32)
float16 = DType("float16", "f16", np.float16, torch.float16, "float16", "fp16", True, 16)
bfloat16 = DType("bfloat16", "bf16", np.float32, torch.bfloat16, "bfloat16", "bf16", True, 16)
int32 = DType("int32", "i32", np.int32, torch.int32, "int32", "i32", False, 32)
int64 = DType("int64", "i64", np.int64, torch.int64, "int64", "i64", False, 64)
bool_ = DType("bool", "bool", np.bool_, torch.bool, "int1", "i1", False, 8)

ALL = (float32, float16, bfloat16, int32, int64, bool_)
_BY_NAME = {d.name: d for d in ALL} | {d.short: d for d in ALL} | {"bool_": bool_}
_BY_TORCH = {d.torch: d for d in ALL}
_BY_NUMPY = {np.dtype(np.float32): float32, np.dtype(np.float16): float16,
             np.dtype(np.int32): int32, np.dtype(np.int64): int64, np.dtype(np.bool_): bool_}


def dtype(x) -> DType:
    """The DType named or described by `x` (a DType, a name, a numpy or torch dtype)."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in _BY_NAME:
        return _BY_NAME[x]
    if isinstance(x, torch.dtype) and x in _BY_TORCH:
        return _BY_TORCH[x]
    try:
        found = _BY_NUMPY.get(np.dtype(x))
    except TypeError:
        found = None
    if found is None:
        names = ", ".join(d.name for d in ALL)
        raise DTypeError(f"unsupported dtype {x!r}: expected one of {names}")
    return found


def promote(a: DType, b: DType) -> DType:
    """The dtype two operands meet at, as in torch: floats beat ints, wider beats narrower,
    and float16 with bfloat16 meet at float32."""
    if a == b:
        return a
    if a.is_float != b.is_float:
        return a if a.is_float else b
    if a.is_float:
        return float32 if {a, b} == {float16, bfloat16} else (a if a.bits > b.bits else b)
    order = (bool_, int32, int64)
    return max(a, b, key=order.index)


def round_to(array: np.ndarray, dt: DType) -> np.ndarray:
    """`array` converted to `dt`'s NumPy storage, rounding to bfloat16 where asked."""
    if dt is bfloat16:
        bits = np.asarray(array, np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # nearest even
        out = rounded.astype(np.uint32).view(np.float32)
        return np.where(np.isnan(array), np.float32(np.nan), out)
    return np.asarray(array).astype(dt.numpy, copy=False)
