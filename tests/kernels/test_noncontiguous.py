"""Every way an array enters a program, given as a non-contiguous view (a transpose, a
strided slice), reads its values and not its memory order: generated kernels index
their operands flat, so whatever holds a strided view must make it contiguous first.
(A transposed constant once read wrong in kernels while the reference read it right.)"""
import numpy as np
import torch

import kgen
from kgen import ops

T = np.arange(6.0, dtype=np.float32).reshape(2, 3).T  # [3, 2], Fortran-ordered
S = np.arange(12.0, dtype=np.float32).reshape(3, 4)[:, ::2]  # [3, 2], strided


def _zeros():
    return np.zeros((3, 2), np.float32)


def test_constants_from_views():
    x = kgen.tensor("x", (3, 2))
    for view in (T, S):
        f = kgen.function([x], [x + ops.constant(view), x * ops.transpose(ops.constant(np.ascontiguousarray(view.T)))])
        a, b = f(_zeros() + 1)
        np.testing.assert_array_equal(np.asarray(a), 1 + view)
        np.testing.assert_array_equal(np.asarray(b), view)


def test_inputs_and_shared_values_from_views():
    x = kgen.tensor("x", (3, 2))
    w = kgen.shared(T, name="w_view")
    f = kgen.function([x], x + w)
    np.testing.assert_array_equal(np.asarray(f(S)), S + T)
    np.testing.assert_array_equal(np.asarray(f(torch.from_numpy(np.ascontiguousarray(S.T)).t())), S + T)
    w.set_value(torch.from_numpy(np.ascontiguousarray(S.T)).t())
    np.testing.assert_array_equal(np.asarray(f(_zeros())), S)
