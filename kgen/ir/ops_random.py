"""Op table entry for `rand`: uniform [0, 1) float32 values from Triton's counter-based
generator (tl.rand: Philox4x32 with 10 rounds, counter = the element's flat index, key =
the seed), reproduced bit for bit in NumPy so the reference interpreter draws the same
numbers as the kernels. Dropout is built from it (kgen.ops.dropout)."""
from __future__ import annotations

import numpy as np

from kgen.errors import DTypeError
from kgen.ir import dtypes, shapes
from kgen.ir.optable import OpDef, register

_KEY_A, _KEY_B = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_ROUND_A, _ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_SCALE = np.float32(4.6566127342e-10)  # tl.rand's int -> [0, 1) scale


def philox_uint32(seed: int, counters: np.ndarray, rounds: int = 10) -> np.ndarray:
    """The first word of Philox4x32 for each counter (tl.randint's value)."""
    seed64 = np.array(seed, np.int64).astype(np.uint64)
    k0, k1 = np.uint32(seed64 & 0xFFFFFFFF), np.uint32(seed64 >> np.uint64(32))
    c0 = counters.astype(np.int64).astype(np.uint32)
    c1 = (counters.astype(np.int64) >> 32).astype(np.uint32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    for _ in range(rounds):
        prod_b = _ROUND_B * c2.astype(np.uint64)
        prod_a = _ROUND_A * c0.astype(np.uint64)
        c0, c1, c2, c3 = ((prod_b >> np.uint64(32)).astype(np.uint32) ^ c1 ^ k0,
                          prod_b.astype(np.uint32),
                          (prod_a >> np.uint64(32)).astype(np.uint32) ^ c3 ^ k1,
                          prod_a.astype(np.uint32))
        k0, k1 = np.uint32((int(k0) + int(_KEY_A)) & 0xFFFFFFFF), np.uint32((int(k1) + int(_KEY_B)) & 0xFFFFFFFF)
    return c0


def uniform(seed: int, shape) -> np.ndarray:
    """tl.rand(seed, flat_index) over a row-major tensor of `shape`, as float32."""
    bits = philox_uint32(seed, np.arange(int(np.prod(shape, dtype=np.int64)))).view(np.int32)
    bits = np.where(bits < 0, ~bits, bits)
    return (bits.astype(np.float32) * _SCALE).reshape(shape)


def _infer(inputs, attrs):
    (seed,) = inputs
    if seed.dtype not in (dtypes.int32, dtypes.int64) or seed.shape != ():
        raise DTypeError(f"rand: the seed must be an integer scalar, got {seed.type_str()}")
    return dtypes.float32, shapes.as_shape(attrs["shape"])


def _reference(node, arrays, shape):
    return uniform(int(arrays[0]), shape)


# Lowered by the kernel writer: tl.rand(seed, the element's flat index).
register(OpDef("rand", "elementwise", _infer, _reference, vjp=None, lower="philox", arity=1))
