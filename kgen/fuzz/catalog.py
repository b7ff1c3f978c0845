"""The fuzzer's op catalog: one `OpSpec` per public kgen op, registered once.

An entry holds, side by side:
- `propose(gen)`: add a random legal step of this op to a program being generated (it may
  first add steps that make its operands legal: abs + 0.5 before a log, sigmoid before a
  binary cross-entropy), or raise Illegal when it does not fit;
- `infer(step, infos, sizes) -> Info`: the step's shape, dtype and value bounds, raising
  Illegal where kgen (or NumPy, or torch) would not define it;
- `kgen(step, args, infos) -> str`: the Python expression that builds it with kgen;
- `torch(step, args, infos) -> str`: the same computation in torch, the oracle.

The entries live in ops_*.py next to this file, one block per op, like kgen's own op table.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from kgen.fuzz.program import (FLOAT, INTS, N, Illegal, Info, Program, Sizes, dims_equal, input_info,
                               numel, shape_json)

OPS: dict = {}


@dataclass(frozen=True)
class OpSpec:
    name: str
    propose: Callable
    infer: Callable
    kgen: Callable
    torch: Callable
    weight: float = 1.0


def register(name, propose, infer, kgen, torch, weight=1.0) -> OpSpec:
    if name in OPS:
        raise ValueError(f"fuzz op {name!r} is registered twice")
    OPS[name] = OpSpec(name, propose, infer, kgen, torch, weight)
    return OPS[name]


# --- shape helpers shared by the entries ---------------------------------------------------------
def broadcast(*shapes) -> tuple:
    """NumPy broadcasting as kgen does it (a symbolic dim meets only 1 or itself)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        chosen = 1
        for s in shapes:
            k = len(s) - rank + i
            if k < 0 or s[k] == 1:
                continue
            if chosen == 1:
                chosen = s[k]
            elif not dims_equal(chosen, s[k]):
                raise Illegal(f"shapes {shapes} do not broadcast")
        out.append(chosen)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise Illegal(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def norm_axes(axis, rank: int) -> tuple:
    if axis is None:
        return tuple(range(rank))
    axes = [axis] if isinstance(axis, int) else list(axis)
    if rank == 0:
        if any(a not in (0, -1) for a in axes):
            raise Illegal("axis out of range for a scalar")
        return ()
    out = sorted(norm_axis(a, rank) for a in axes)
    if len(set(out)) != len(out):
        raise Illegal("repeated axis")
    return tuple(out)


def code_dim(d) -> str:
    return str(d)


def code_shape(shape) -> str:
    items = [code_dim(d) for d in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def need(cond, why: str) -> None:
    if not cond:
        raise Illegal(why)


def want_float(info: Info, what="operand") -> None:
    need(info.dtype == FLOAT, f"{what} must be float32")


MAX_NUMEL = 384     # elements of a value at the largest N (the interpreter is slow)
MAX_MAG = 16.0      # values beyond this get scaled back by the generator


# --- the generator's state, handed to every `propose` ------------------------------------------
class Gen:
    """A program being generated, with the Info of each of its values."""

    def __init__(self, seed: int, program: Program, pool: list):
        self.rng = random.Random(seed)
        self.program = program
        self.sizes = Sizes(program.sizes)
        self.pool = pool  # the static sizes shapes are drawn from (so operands fit)
        self.infos = {}
        self.counter = 0
        for spec in program.inputs + program.shared:
            self.infos[spec["name"]] = input_info(spec)

    # random choices
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def choice(self, seq):
        seq = list(seq)
        if not seq:
            raise Illegal("nothing to choose from")
        return self.rng.choice(seq)

    @property
    def symbolic(self) -> bool:
        return bool(self.program.sizes)

    # dims and shapes
    def dim(self, allow_n=True, allow_zero=True):
        if allow_n and self.symbolic and self.chance(0.3):
            return N
        d = self.choice(self.pool + [1])
        return 1 if d == 0 and not allow_zero else d

    def shape(self, rank: int, allow_n=True, allow_zero=True) -> tuple:
        for _ in range(20):
            shape = tuple(self.dim(allow_n, allow_zero) for _ in range(rank))
            if sum(1 for d in shape if d == N) <= 1 and self.fits(shape):
                return shape
        return tuple(1 for _ in range(rank))

    def fits(self, shape) -> bool:
        return self.sizes.high(numel(shape)) <= MAX_NUMEL

    def low(self, d) -> int:
        return self.sizes.low(d)

    # values
    def names(self, pred=None) -> list:
        return [n for n, i in self.infos.items() if pred is None or pred(i)]

    def pick(self, pred=None):
        """A value satisfying `pred`, recent ones more often; None if there is none."""
        names = self.names(pred)
        if not names:
            return None
        weights = [1.0 + 2.0 * k / len(names) for k in range(len(names))]
        return self.rng.choices(names, weights)[0]

    def fresh(self, prefix: str) -> str:
        while True:
            name = f"{prefix}{self.counter}"
            self.counter += 1
            if name not in self.infos:
                return name

    def new_input(self, shape, kind="float", dtype=FLOAT, classes=None, shared=False) -> str:
        """A new input (or, with `shared`, a new shared value: static shapes only)."""
        if shared and any(not isinstance(d, int) for d in shape):
            shared = False
        spec = {"name": self.fresh("w" if shared else "x"), "shape": shape_json(shape), "dtype": dtype,
                "kind": kind}
        if classes is not None:
            spec["classes"] = classes
        (self.program.shared if shared else self.program.inputs).append(spec)
        self.infos[spec["name"]] = input_info(spec)
        return spec["name"]

    def operand(self, shape, kind="float", pred=None, reuse=0.6, shared=0.4) -> str:
        """A float value of exactly `shape`: an existing one (often), else a new input or
        shared value."""
        def fits(i):
            return (i.dtype == FLOAT and len(i.shape) == len(shape)
                    and all(dims_equal(a, b) for a, b in zip(i.shape, shape)) and (pred is None or pred(i)))
        name = self.pick(fits)
        if name is not None and self.chance(reuse):
            return name
        return self.new_input(shape, kind, shared=self.chance(shared))

    def add(self, op: str, ins: list, **attrs) -> str:
        """Append a step (checked by the op's infer rule) and return its value's name."""
        step = {"name": self.fresh("v"), "op": op, "in": list(ins), **attrs}
        info = OPS[op].infer(step, [self.infos[n] for n in ins], self.sizes)
        if not self.fits(info.shape):
            raise Illegal("too many elements")
        if info.is_float and not math.isfinite(info.mag):
            raise Illegal("may overflow")
        self.program.steps.append(step)
        self.infos[step["name"]] = info
        if info.is_float and info.mag > MAX_MAG:  # keep float32 rounding far inside the tolerance
            return self.tame(step["name"])
        return step["name"]

    # steps that make a value fit an op's domain
    def tame(self, name: str, bound: float = 4.0) -> str:
        info = self.infos[name]
        if info.mag <= bound:
            return name
        if self.chance(0.3):
            return self.add("tanh", [name])
        k = math.ceil(math.log2(info.mag / bound))
        return self.add("mul", [name], scalar=2.0 ** -k, scalar_first=self.chance(0.5), spell="op")

    def positive(self, name: str, least: float = 0.25) -> str:
        """A value >= least everywhere, made from `name`."""
        if self.infos[name].lo >= least:
            return name
        name = self.add("abs", [self.tame(name)])
        return self.add("add", [name], scalar=0.5, scalar_first=self.chance(0.5), spell="op")

    def nonzero(self, name: str, least: float = 0.25) -> str:
        if self.infos[name].absmin >= least:
            return name
        return self.positive(name, least)

    def prob(self, name: str) -> str:
        """A value in [0.02, 0.98]."""
        info = self.infos[name]
        if info.lo >= 0.02 and info.hi <= 0.98:
            return name
        return self.add("sigmoid", [self.tame(name, 3.5)])

    def to_float(self, name: str) -> str:
        return name if self.infos[name].dtype == FLOAT else self.add("cast", [name], dtype=FLOAT, spell="fn")


def float_pred(i: Info) -> bool:
    return i.dtype == FLOAT


def numeric_pred(i: Info) -> bool:
    return i.dtype == FLOAT or i.dtype in INTS


from kgen.fuzz import ops_elementwise, ops_reduce, ops_view, ops_nn  # noqa: E402,F401  (fill the catalog)
