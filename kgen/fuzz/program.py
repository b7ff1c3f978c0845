"""A fuzz program as plain data, and its abstract interpretation.

A `Program` is JSON-able data: its inputs (shapes whose dims are ints or the symbolic "N"),
shared values, steps (each names one public kgen op, the values it reads and its
attributes), outputs, the shared values updated by `w - lr * grad`, and the concrete sizes
N takes in successive calls. Values are named (x0, w0, v3), so steps can be dropped or
rewired without renumbering.

`analyze` walks a program with each op's `infer` rule (kgen/fuzz/catalog.py) and gives every
value an `Info`: its shape and dtype, an interval holding all its values, a lower bound on
|value|, and whether float32 computes it exactly. It raises `Illegal` for a program that is
not legal (shapes that do not fit, log of a value that may be <= 0, ...), which is how the
generator and the shrinker keep to legal programs.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import sympy

N = sympy.Symbol("N", integer=True, positive=True)  # kgen's size symbol (kgen.ir.shapes.size_symbol)


class Illegal(Exception):
    """A program (or a proposed step) that is not a legal kgen program."""


# --- dims -------------------------------------------------------------------------------------
def to_dim(d):
    """A dim from its JSON form: an int, or a string such as "N" or "2*N"."""
    if isinstance(d, bool):
        raise Illegal(f"bad dim {d!r}")
    if isinstance(d, int):
        return d
    if isinstance(d, str):
        e = sympy.sympify(d, locals={"N": N})
        return int(e) if e.is_Integer else e
    if isinstance(d, sympy.Basic):
        return int(d) if d.is_Integer else d
    raise Illegal(f"bad dim {d!r}")


def dim_json(d):
    return d if isinstance(d, int) else str(d)


def shape_json(shape) -> list:
    return [dim_json(d) for d in shape]


def shape_of(shape) -> tuple:
    return tuple(to_dim(d) for d in shape)


def dims_equal(a, b) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return sympy.simplify(sympy.sympify(a) - b) == 0


def is_static(d) -> bool:
    return isinstance(d, int)


def numel(shape):
    n = sympy.Integer(1)
    for d in shape:
        n = n * d
    return int(n) if n.is_Integer else n


# --- the abstract value -------------------------------------------------------------------------
FLOAT, INTS, BOOL = "float32", ("int32", "int64"), "bool"


@dataclass
class Info:
    """What the fuzzer knows of a value: shape, dtype, bounds [lo, hi], |value| >= absmin
    everywhere, whether float32 computes it exactly (so comparisons of it never flip), and
    for integer labels the exclusive upper bound `classes`."""
    shape: tuple
    dtype: str
    lo: float
    hi: float
    absmin: float = 0.0
    exact: bool = False
    classes: Optional[int] = None

    def __post_init__(self):
        self.absmin = max(self.absmin, gap(self.lo, self.hi))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def is_float(self) -> bool:
        return self.dtype == FLOAT

    @property
    def is_int(self) -> bool:
        return self.dtype in INTS


def gap(lo, hi) -> float:
    """The least |x| over [lo, hi]."""
    return lo if lo > 0 else (-hi if hi < 0 else 0.0)


def like(info: Info, **changes) -> Info:
    """`info` with some fields changed; absmin is recomputed when the bounds change."""
    fields = dict(vars(info))
    if ("lo" in changes or "hi" in changes) and "absmin" not in changes:
        fields["absmin"] = 0.0
    fields.update(changes)
    return Info(**fields)


def hull(*infos, shape=None, dtype=None) -> Info:
    """An Info covering every value of `infos` (where, concatenate, ...)."""
    return Info(shape if shape is not None else infos[0].shape, dtype or infos[0].dtype,
                min(i.lo for i in infos), max(i.hi for i in infos), min(i.absmin for i in infos),
                all(i.exact for i in infos))


# Input kinds: how values are drawn (kgen/fuzz/harness.py, make_value) and what they promise.
KINDS = {
    "float": dict(lo=-2.0, hi=2.0, absmin=0.5),   # magnitudes in [0.5, 2), random signs
    "pos": dict(lo=0.5, hi=2.0, absmin=0.5),
    "prob": dict(lo=0.05, hi=0.95, absmin=0.05),
    "int": dict(lo=-5, hi=5, absmin=1),           # nonzero integers in [-5, 5]
    "label": dict(lo=0, hi=None, absmin=0),       # integers in [0, classes)
    "bool": dict(lo=0, hi=1, absmin=0),
}


def input_info(spec: dict) -> Info:
    kind = KINDS[spec["kind"]]
    hi = spec["classes"] - 1 if spec["kind"] == "label" else kind["hi"]
    return Info(shape_of(spec["shape"]), spec["dtype"], kind["lo"], hi, kind["absmin"], True,
                spec.get("classes"))


UPDATE_REACH = 4.0  # how far an update may move a shared value (a guess: gradients are not bounded here)


def updated_info(info: Info) -> Info:
    """What a shared value may hold after updates: its kind's range widened, any sign, and
    rounded differently by kgen (float32) and torch (float64)."""
    return like(info, lo=info.lo - UPDATE_REACH, hi=info.hi + UPDATE_REACH, absmin=0.0, exact=False)


# --- the program ------------------------------------------------------------------------------
@dataclass
class Program:
    seed: int
    inputs: list = field(default_factory=list)   # {"name", "shape", "dtype", "kind"[, "classes"]}
    shared: list = field(default_factory=list)   # the same, static shapes, float32
    steps: list = field(default_factory=list)    # {"name", "op", "in": [names], ...attributes}
    outputs: list = field(default_factory=list)  # value names
    updates: list = field(default_factory=list)  # [shared name, lr]
    sizes: list = field(default_factory=list)    # N in each call ([] when no input has N)
    grads: bool = True                           # differentiate a loss of the outputs
    calls: int = 2                               # the second call sees the updated state

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Program":
        return cls(**copy.deepcopy(d))

    def copy(self) -> "Program":
        return Program.from_dict(self.to_dict())

    @property
    def ops(self) -> list:
        return sorted({s["op"] for s in self.steps})

    def value_names(self) -> list:
        return [v["name"] for v in self.inputs + self.shared] + [s["name"] for s in self.steps]

    @property
    def symbolic(self) -> bool:
        return bool(self.sizes)


class Sizes:
    """The concrete values a dim takes over the program's calls."""

    def __init__(self, sizes):
        self.sizes = list(sizes)

    def _at(self, d, n):
        return d if isinstance(d, int) else int(sympy.sympify(d).subs(N, n))

    def low(self, d) -> int:
        if isinstance(d, int):
            return d
        if not self.sizes:
            raise Illegal(f"dim {d} is symbolic but the program gives N no sizes")
        return min(self._at(d, n) for n in self.sizes)

    def high(self, d) -> int:
        if isinstance(d, int):
            return d
        if not self.sizes:
            raise Illegal(f"dim {d} is symbolic but the program gives N no sizes")
        return max(self._at(d, n) for n in self.sizes)

    def count_range(self, dims) -> tuple:
        """(least, most) element count of a set of dims."""
        e = numel(dims)
        return self.low(e), self.high(e)


def analyze(program: Program) -> dict:
    """name -> Info for every value; raises Illegal if the program is not legal."""
    from kgen.fuzz.catalog import OPS  # at call time: the catalog builds on this module (a cycle in fuzz)

    sizes = Sizes(program.sizes)
    infos = {}
    uses_n = False
    updated = {name for name, _ in program.updates}
    for spec in program.inputs + program.shared:
        if spec["name"] in infos:
            raise Illegal(f"two values named {spec['name']}")
        info = input_info(spec)
        if spec["name"] in updated:  # the second call reads w - lr * grad: no longer in its kind's range
            info = updated_info(info)
        if any(not isinstance(d, int) for d in info.shape):
            if spec in program.shared:
                raise Illegal("shared values have static shapes")
            if any(d != N for d in info.shape if not isinstance(d, int)):
                raise Illegal("an input's symbolic dims must be N itself (so a call binds it)")
            uses_n = True
        infos[spec["name"]] = info
    if program.sizes and not uses_n:
        raise Illegal("sizes given but no input has the dim N")
    if uses_n and not program.sizes:
        raise Illegal("an input has the dim N but the program gives it no sizes")
    for step in program.steps:
        if step["name"] in infos:
            raise Illegal(f"two values named {step['name']}")
        if step["op"] not in OPS:
            raise Illegal(f"unknown fuzz op {step['op']!r}")
        missing = [n for n in step["in"] if n not in infos]
        if missing:
            raise Illegal(f"step {step['name']} reads unknown values {missing}")
        try:
            info = OPS[step["op"]].infer(step, [infos[n] for n in step["in"]], sizes)
        except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # malformed attributes
            raise Illegal(f"step {step['name']}: {type(e).__name__}: {e}") from e
        if info.lo != info.lo or info.hi != info.hi or math.isinf(info.mag):
            raise Illegal(f"step {step['name']} may overflow")
        infos[step["name"]] = info
    if not program.outputs:
        raise Illegal("no outputs")
    for name in program.outputs:
        if name not in infos:
            raise Illegal(f"unknown output {name}")
    shared = {s["name"] for s in program.shared}
    for name, lr in program.updates:
        if name not in shared or infos[name].dtype != FLOAT:
            raise Illegal(f"update of {name}, which is not a float shared value")
        if not program.grads:
            raise Illegal("updates need gradients")
    if len({u[0] for u in program.updates}) != len(program.updates):
        raise Illegal("a shared value updated twice")
    return infos


def used_values(program: Program) -> set:
    """The names the outputs and updates depend on."""
    by_name = {s["name"]: s for s in program.steps}
    todo = list(program.outputs) + [u[0] for u in program.updates]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in by_name:
            todo.extend(by_name[name]["in"])
    return seen


def prune(program: Program) -> Program:
    """The program without steps, inputs and shared values nothing depends on (an input
    that binds N stays while anything is symbolic)."""
    used = used_values(program)
    p = program.copy()
    p.steps = [s for s in p.steps if s["name"] in used]
    p.shared = [s for s in p.shared if s["name"] in used]
    keep = [i for i in p.inputs if i["name"] in used]
    if p.sizes and not any("N" in map(str, i["shape"]) for i in keep):
        binders = [i for i in p.inputs if "N" in map(str, i["shape"])]
        keep = keep + binders[:1] if binders else keep
    p.inputs = [i for i in p.inputs if i in keep]
    return p
