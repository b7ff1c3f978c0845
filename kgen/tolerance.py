"""How close a kernel's output must be to the reference: the tolerance per dtype and the
error measure. A leaf: kgen.check (every kernel against the reference), the autotuner
(a candidate config must agree before it is timed) and the fuzzer all judge by it."""
from __future__ import annotations

import numpy as np

from kgen.ir import dtypes

TOLERANCE = {dtypes.float32: 1e-4, dtypes.float16: 1e-2, dtypes.bfloat16: 4e-2,
             dtypes.int32: 0.0, dtypes.int64: 0.0, dtypes.bool_: 0.0}


def output_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(|want|, 1): relative for large values, absolute for small ones.
    A NaN in one and not the other, or a shape that differs, is an infinite error; for
    booleans, 1 if any differs."""
    if got.shape != want.shape:
        return float("inf")
    if want.dtype == np.bool_ or got.dtype == np.bool_:
        return float(np.any(got.astype(bool) != want.astype(bool)))
    got, want = got.astype(np.float64), want.astype(np.float64)
    if not got.size:
        return 0.0
    if np.any(np.isnan(got) != np.isnan(want)):
        return float("inf")
    diff = np.abs(np.nan_to_num(got - want, nan=0.0, posinf=np.inf))
    return float(np.max(diff / np.maximum(np.abs(np.nan_to_num(want)), 1.0)))
