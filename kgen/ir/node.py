"""Node: one value of the IR, (op, inputs, attrs, dtype, shape), immutable once built.

A Node is also the symbolic tensor users write programs with: its operators build new
nodes through kgen.ops. Nodes compare by identity, so they can key dicts and sets; use
kgen.ops.equal for an elementwise comparison.
"""
from __future__ import annotations

import itertools

from kgen.errors import DTypeError, KgenError
from kgen.ir import dtypes, shapes
from kgen.ir.optable import lookup

_ids = itertools.count()


class Node:
    __slots__ = ("op", "inputs", "attrs", "dtype", "shape", "id", "__weakref__")

    def __init__(self, op: str, inputs=(), attrs=None, dtype=None, shape=None):
        opdef = lookup(op)
        inputs = tuple(inputs)
        for i in inputs:
            if not isinstance(i, Node):
                raise KgenError(f"{op}: inputs must be kgen nodes, got {type(i).__name__}")
        if opdef.arity is not None and len(inputs) != opdef.arity:
            raise KgenError(f"{op} takes {opdef.arity} inputs, got {len(inputs)}")
        attrs = dict(attrs or {})
        if dtype is None or shape is None:
            try:
                dtype, shape = opdef.infer(inputs, attrs)
            except KgenError as e:
                given = ", ".join(i.type_str() for i in inputs)
                raise type(e)(f"{op}({given}): {e}") from None
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "dtype", dtypes.dtype(dtype))
        object.__setattr__(self, "shape", shapes.as_shape(shape))
        object.__setattr__(self, "id", next(_ids))

    def __setattr__(self, name, value):
        raise AttributeError(f"kgen nodes are immutable (tried to set {name!r})")

    def __delattr__(self, name):
        raise AttributeError(f"kgen nodes are immutable (tried to delete {name!r})")

    # NumPy must hand `array * node` to Node.__rmul__ rather than map over the array.
    __array_ufunc__ = None

    # --- description -------------------------------------------------------------------
    @property
    def opdef(self):
        return lookup(self.op)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self):
        return self.attrs.get("name")

    def type_str(self) -> str:
        return f"{self.dtype.short}{shapes.format_shape(self.shape)}"

    def __repr__(self):
        label = f" {self.name!r}" if self.name else ""
        return f"<kgen {self.op}{label}: {self.type_str()}>"

    def __bool__(self):
        raise KgenError(f"{self!r} is symbolic: it has no truth value until a function runs it")

    __hash__ = object.__hash__

    # --- operators build nodes through kgen.ops -----------------------------------------
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().sub(self, o)
    def __rsub__(self, o): return _ops().sub(o, self)
    def __mul__(self, o): return _ops().mul(self, o)
    def __rmul__(self, o): return _ops().mul(o, self)
    def __truediv__(self, o): return _ops().div(self, o)
    def __rtruediv__(self, o): return _ops().div(o, self)
    def __pow__(self, o): return _ops().pow(self, o)
    def __rpow__(self, o): return _ops().pow(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().neg(self)
    def __getitem__(self, index): return _ops().getitem(self, index)

    def __iter__(self):
        raise DTypeError(f"{self.type_str()} is symbolic and cannot be iterated: index it (x[i]) or use "
                         f"kgen.ops.split")
    def __abs__(self): return _ops().abs(self)
    def __lt__(self, o): return _ops().less(self, o)
    def __le__(self, o): return _ops().less_equal(self, o)
    def __gt__(self, o): return _ops().greater(self, o)
    def __ge__(self, o): return _ops().greater_equal(self, o)

    @property
    def T(self): return _ops().transpose(self)
    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return _ops().transpose(self, axes or None)
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, shape)

    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def astype(self, dt): return _ops().cast(self, dt)


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops
