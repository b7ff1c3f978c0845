"""Random small graphs, compiled and run under Triton's interpreter, against the reference.

Hypothesis draws a `Program`: 1-3 inputs of small shapes (dims 1-7, shared sizes so that
operands broadcast and matmuls fit), then a list of steps, each one kgen op on earlier
values: elementwise chains (unary, binary with broadcasting between ranks, scalar and array
constants, where on a comparison), reductions (sum/mean/max over random axes, keepdims),
matmuls (2-D, batched, 1-D) and views (reshape, transpose, broadcast_to, expand_dims,
squeeze, flatten). Sometimes one size is made symbolic ("N") in the whole program.

Each program is built into a kgen.Graph, every kernel is checked with kgen.check(strict=True)
and the whole compiled program's outputs are compared with kgen.reference.run.

Only ops safe on any input are drawn (log and sqrt see x*x + 1, division |y| + 1), and each
value's magnitude is tracked: a value that may exceed MAX_BOUND is scaled back, so float32
rounding stays well inside the tolerance. A failing example prints as a `Program(...)` that
`check_program` runs as it is: keep it below as a regression test.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import kgen
from kgen import ops
from kgen.tolerance import TOLERANCE, output_error
from conftest import random_array, run_compiled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # masked-off lanes under the interpreter

MAX_RANK = 4
MAX_NUMEL = 400
MAX_BOUND = 4.0  # values are kept within about [-MAX_BOUND, MAX_BOUND]
LITERALS = (0.5, -1.5, 2.0, 0.25)
SYMBOL = "N"


class Program(NamedTuple):
    """inputs: their shapes; steps: ops on earlier values (inputs are values 0..k-1, step s
    makes value k+s); outputs: value indices; seed: for the input values; symbol: a size that
    every input (and broadcast_to) declares as the symbolic "N" instead, or None."""
    inputs: tuple
    steps: tuple
    outputs: tuple
    seed: int = 0
    symbol: Optional[int] = None


# --- building a graph from a Program -----------------------------------------------------------
UNARY = {
    "neg": ops.neg, "abs": ops.abs, "tanh": ops.tanh, "sigmoid": ops.sigmoid, "relu": ops.relu,
    "exp_tanh": lambda x: ops.exp(ops.tanh(x)),
    "square": lambda x: x ** 2,
    "log_sq1": lambda x: ops.log(x * x + 1.0),
    "sqrt_sq1": lambda x: ops.sqrt(x * x + 1.0),
}
BINARY = {
    "add": ops.add, "sub": ops.sub, "mul": ops.mul, "maximum": ops.maximum, "minimum": ops.minimum,
    "safe_div": lambda a, b: a / ((ops.abs(b) if isinstance(b, kgen.Node) else abs(b)) + 1.0),
}
COMPARE = {"greater": ops.greater, "less": ops.less, "greater_equal": ops.greater_equal,
           "less_equal": ops.less_equal, "not_equal": ops.not_equal}
REDUCE = {"sum": ops.sum, "mean": ops.mean, "max": ops.max}


def array_constant(shape) -> np.ndarray:
    """A fixed, nowhere-zero array for a constant operand."""
    n = math.prod(shape)
    values = 0.25 * (1 + np.arange(n) % 7) * np.where(np.arange(n) % 3 == 1, -1.0, 1.0)
    return values.reshape(shape).astype(np.float32)


def _symbolic(shape, symbol):
    return tuple(SYMBOL if symbol is not None and d == symbol else d for d in shape)


def _operand(values, ref):
    return ref if isinstance(ref, float) else values[ref]


def apply_step(values: list, step: tuple, symbol=None) -> kgen.Node:
    """The node one step builds from the values before it."""
    kind, args = step[0], step[1:]
    v = lambda ref: _operand(values, ref)  # noqa: E731
    if kind == "unary":
        name, i = args
        return UNARY[name](v(i))
    if kind == "scale":
        i, c = args
        return v(i) * c
    if kind == "binary":
        name, i, j = args
        return BINARY[name](v(i), v(j))
    if kind == "where":
        name, i, j, k = args
        return ops.where(COMPARE[name](v(i), v(j)), v(i), v(k))
    if kind == "const":
        i, shape = args
        return v(i) + ops.constant(array_constant(shape))
    if kind == "reduce":
        name, i, axis, keepdims = args
        return REDUCE[name](v(i), axis, keepdims=keepdims)
    if kind == "matmul":
        i, j = args
        return ops.matmul(v(i), v(j))
    if kind == "reshape":
        i, shape = args
        return ops.reshape(v(i), shape)
    if kind == "transpose":
        i, perm = args
        return ops.transpose(v(i), perm)
    if kind == "broadcast_to":
        i, shape = args
        return ops.broadcast_to(v(i), _symbolic(shape, symbol))
    if kind == "expand_dims":
        i, axis = args
        return ops.expand_dims(v(i), axis)
    if kind == "squeeze":
        i, axis = args
        return ops.squeeze(v(i), axis)
    if kind == "flatten":
        i, start = args
        return ops.flatten(v(i), start)
    raise ValueError(f"unknown step {step!r}")


def build(program: Program):
    """(graph, every value's node) for `program`."""
    inputs = [kgen.tensor(f"x{k}", _symbolic(shape, program.symbol)) for k, shape in enumerate(program.inputs)]
    values = list(inputs)
    for step in program.steps:
        values.append(apply_step(values, step, program.symbol))
    return kgen.Graph(inputs, [values[o] for o in program.outputs]), values


def make_inputs(program: Program) -> dict:
    rng = np.random.default_rng(program.seed)
    return {f"x{k}": random_array(rng, shape) for k, shape in enumerate(program.inputs)}


def check_program(program: Program, tolerance: float = TOLERANCE[kgen.float32]):
    """Every kernel (kgen.check, strict) and the whole program's outputs against the reference."""
    graph, _ = build(program)
    inputs = make_inputs(program)
    kgen.check(graph, inputs, strict=True)
    got = run_compiled(graph, inputs)
    want = kgen.reference.run(graph, inputs)
    for g, w, node in zip(got, want, graph.outputs):
        assert g.shape == w.shape, f"output {graph.line(node)}: shape {g.shape}, expected {w.shape}"
        error = output_error(g, w)
        assert error <= tolerance, (f"output {graph.line(node)}: error {error:.2e} > {tolerance:.0e}\n"
                                    f"{graph}")


# --- drawing Programs --------------------------------------------------------------------------
def _broadcastable(a, b) -> Optional[tuple]:
    """NumPy's broadcast of shapes a and b, or None if they do not broadcast or grow too big."""
    try:
        out = np.broadcast_shapes(a, b)
    except ValueError:
        return None
    return out if len(out) <= MAX_RANK and math.prod(out) <= MAX_NUMEL else None


def _factor(n: int) -> list:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


class _Draft:
    """The values drawn so far: shapes, magnitude bounds, the steps that made them."""

    def __init__(self, draw, input_shapes):
        self.draw = draw
        self.inputs = tuple(input_shapes)
        self.nodes = build(Program(self.inputs, (), ()))[1]
        self.shapes = [tuple(s) for s in input_shapes]
        self.bounds = [2.0] * len(input_shapes)  # random_array draws magnitudes below 2
        self.steps = []

    def pick(self, indices=None) -> int:
        indices = list(range(len(self.shapes))) if indices is None else indices
        return self.draw(st.sampled_from(indices))

    def add(self, step, bound):
        node = apply_step(self.nodes, step)  # kgen's own shape rule (and the step must build)
        self.steps.append(step)
        self.nodes.append(node)
        self.shapes.append(tuple(node.shape))
        self.bounds.append(bound)
        if bound > MAX_BOUND:  # scale back so float32 rounding stays far below the tolerance
            c = float(np.float32(2.0 / bound))
            self.add(("scale", len(self.shapes) - 1, c), bound * c)

    def bound(self, ref) -> float:
        return abs(ref) if isinstance(ref, float) else self.bounds[ref]

    def partner(self, i):
        """A value (or a float literal) that broadcasts with value i."""
        fits = [j for j, s in enumerate(self.shapes) if _broadcastable(self.shapes[i], s) is not None]
        return self.draw(st.one_of(st.sampled_from(fits), st.sampled_from(LITERALS)))


# Each step kind: a function (draft) -> False when it does not apply to the draft's values.
def _unary(d):
    name = d.draw(st.sampled_from(sorted(UNARY)))
    i = d.pick()
    b = d.bounds[i]
    bound = {"tanh": 1.0, "sigmoid": 1.0, "exp_tanh": math.e, "square": b * b,
             "log_sq1": math.log(b * b + 1), "sqrt_sq1": math.sqrt(b * b + 1)}.get(name, b)
    d.add(("unary", name, i), bound)


def _binary(d):
    name = d.draw(st.sampled_from(sorted(BINARY)))
    i = d.pick()
    j = d.partner(i)
    if d.draw(st.booleans()):
        i, j = j, i  # either operand may be the literal: 0.5 - x, x - 0.5
    a, b = d.bound(i), d.bound(j)
    bound = {"add": a + b, "sub": a + b, "mul": a * b, "safe_div": a}.get(name, max(a, b))
    d.add(("binary", name, i, j), bound)


def _scale(d):
    i = d.pick()
    c = d.draw(st.sampled_from(LITERALS))
    d.add(("scale", i, c), d.bounds[i] * abs(c))


def _where(d):
    name = d.draw(st.sampled_from(sorted(COMPARE)))
    i = d.pick()
    j = d.partner(i)
    both = d.shapes[i] if isinstance(j, float) else _broadcastable(d.shapes[i], d.shapes[j])
    fits = [k for k, s in enumerate(d.shapes) if _broadcastable(both, s) is not None]
    k = d.draw(st.one_of(st.sampled_from(fits), st.sampled_from(LITERALS)))
    d.add(("where", name, i, j, k), max(d.bounds[i], d.bound(k)))


def _const(d):
    i = d.pick()
    shape = d.shapes[i]
    # a constant of the value's shape, or of a suffix of it with some dims 1 (it broadcasts)
    suffix = shape[d.draw(st.integers(0, len(shape))):]
    shape = tuple(1 if d.draw(st.booleans()) else s for s in suffix)
    d.add(("const", i, shape), d.bounds[i] + 1.75)


def _reduce(d):
    ranked = [i for i, s in enumerate(d.shapes) if len(s) >= 1]
    if not ranked:
        return False
    name = d.draw(st.sampled_from(sorted(REDUCE)))
    i = d.pick(ranked)
    rank = len(d.shapes[i])
    axes = d.draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    axes = [a - rank if d.draw(st.booleans()) else a for a in axes]  # negative axes too
    axis = d.draw(st.sampled_from([tuple(axes), axes[0], None]))
    if isinstance(axis, int):
        axes = [axis]
    keepdims = d.draw(st.booleans())
    count = math.prod(d.shapes[i]) if axis is None else math.prod(d.shapes[i][a] for a in axes)
    d.add(("reduce", name, i, axis, keepdims), d.bounds[i] * (count if name == "sum" else 1))


def _matmul(d):
    """a @ b, transposing b's last two dims to make it fit when that helps (a @ a.T always fits)."""
    pairs = []
    for i, a in enumerate(d.shapes):
        for j, b in enumerate(d.shapes):
            if not a or not b:
                continue
            k = a[-1]
            a_batch = a[:-2]
            if len(b) == 1 and b[0] == k:
                pairs.append((i, j, False, a[:-1]))
            elif len(b) >= 2:
                for swap, (kb, n) in ((False, b[-2:]), (True, b[-2:][::-1])):
                    batch = _broadcastable(a_batch, b[:-2])
                    if kb == k and batch is not None:
                        m = () if len(a) == 1 else (a[-2],)
                        pairs.append((i, j, swap, batch + m + (n,)))
    pairs = [p for p in pairs if math.prod(p[3]) <= MAX_NUMEL]
    if not pairs:
        return False
    i, j, swap, _ = d.draw(st.sampled_from(pairs))
    if swap:
        perm = list(range(len(d.shapes[j])))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        d.add(("transpose", j, tuple(perm)), d.bounds[j])
        j = len(d.shapes) - 1
    d.add(("matmul", i, j), d.bounds[i] * d.bounds[j] * d.shapes[i][-1])


def _reshape(d):
    i = d.pick()
    factors = _factor(math.prod(d.shapes[i]))
    rank = d.draw(st.integers(max(1 if factors else 0, 0), MAX_RANK))
    if rank == 0:
        shape = ()
    else:
        slots = [d.draw(st.integers(0, rank - 1)) for _ in factors]
        shape = tuple(math.prod(f for f, s in zip(factors, slots) if s == r) for r in range(rank))
    if shape and d.draw(st.booleans()):  # let kgen infer one dim
        pos = d.draw(st.integers(0, len(shape) - 1))
        shape = shape[:pos] + (-1,) + shape[pos + 1:]
    d.add(("reshape", i, shape), d.bounds[i])


def _transpose(d):
    ranked = [i for i, s in enumerate(d.shapes) if len(s) >= 2]
    if not ranked:
        return False
    i = d.pick(ranked)
    perm = d.draw(st.permutations(range(len(d.shapes[i]))))
    d.add(("transpose", i, tuple(perm)), d.bounds[i])


def _broadcast_to(d):
    i = d.pick()
    shape = d.shapes[i]
    lead = d.draw(st.integers(0, MAX_RANK - len(shape)))
    target = tuple(d.draw(st.integers(1, 5)) for _ in range(lead))
    target += tuple(d.draw(st.integers(1, 5)) if s == 1 else s for s in shape)
    if math.prod(target) > MAX_NUMEL:
        return False
    d.add(("broadcast_to", i, target), d.bounds[i])


def _expand_squeeze(d):
    i = d.pick()
    shape = d.shapes[i]
    ones = [a for a, s in enumerate(shape) if s == 1]
    if ones and d.draw(st.booleans()):
        axis = d.draw(st.sampled_from(ones + [None]))
        if axis is not None and d.draw(st.booleans()):
            axis -= len(shape)
        d.add(("squeeze", i, axis), d.bounds[i])
    elif len(shape) < MAX_RANK:
        d.add(("expand_dims", i, d.draw(st.integers(-len(shape) - 1, len(shape)))), d.bounds[i])
    else:
        return False


def _flatten(d):
    ranked = [i for i, s in enumerate(d.shapes) if len(s) >= 2]
    if not ranked:
        return False
    i = d.pick(ranked)
    d.add(("flatten", i, d.draw(st.integers(0, len(d.shapes[i]) - 1))), d.bounds[i])


ELEMENTWISE = (_unary, _binary, _scale, _where, _const)
REDUCTIONS = (_reduce,)
MATMULS = (_matmul,)
VIEWS = (_reshape, _transpose, _broadcast_to, _expand_squeeze, _flatten)
SYMBOLIC = (_unary, _binary, _scale, _where, _reduce, _matmul, _transpose, _broadcast_to, _expand_squeeze)
# Steps whose shapes would not stay symbolic: explicit reshape and constant shapes, and
# flatten (a product such as 2*3 may meet an input size 6 that became N).
CONCRETE_ONLY = ("reshape", "const", "flatten")


@st.composite
def input_shapes(draw):
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))  # shared sizes: operands fit
    dim = st.one_of(st.sampled_from(sizes), st.just(1), st.integers(1, 7))
    rank = st.sampled_from([2, 1, 3, 2, 3, 0])  # scalars now and then
    shape = rank.flatmap(lambda r: st.tuples(*[dim] * r))
    return draw(st.lists(shape, min_size=1, max_size=3))  # at most 7**3 <= MAX_NUMEL elements


@st.composite
def programs(draw, families, max_steps=6, symbolic=False):
    """A Program of steps drawn from `families`; with `symbolic`, one whose inputs (if any
    has a size above 1) declare one size as "N", so no step writes an explicit shape."""
    draft = _Draft(draw, draw(input_shapes()))
    kinds = [k for family in families for k in family]
    for _ in range(draw(st.integers(2, max_steps))):
        draw(st.sampled_from(kinds))(draft)  # a kind that does not apply adds nothing
    if not draft.steps:
        _unary(draft)
    last = len(draft.shapes) - 1
    others = draw(st.lists(st.integers(0, last - 1), max_size=2, unique=True))
    outputs = tuple([last] + [o for o in others if o != last])
    symbol = None
    if not any(step[0] in CONCRETE_ONLY for step in draft.steps):
        sizes = sorted({d for s in draft.inputs for d in s if d > 1})
        if sizes:
            symbol = draw(st.sampled_from(sizes) if symbolic else st.one_of(st.none(), st.sampled_from(sizes)))
    return Program(tuple(draft.inputs), tuple(draft.steps), outputs, draw(st.integers(0, 2**16)), symbol)


SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def _run(program):
    graph, _ = build(program)
    note(f"graph:\n{graph}")
    check_program(program)


@settings(max_examples=150, **SETTINGS)
@given(programs([ELEMENTWISE]))
def test_random_elementwise_graphs(program):
    _run(program)


@settings(max_examples=150, **SETTINGS)
@given(programs([ELEMENTWISE, REDUCTIONS]))
def test_random_reduction_graphs(program):
    _run(program)


@settings(max_examples=120, **SETTINGS)
@given(programs([ELEMENTWISE, MATMULS]))
def test_random_matmul_graphs(program):
    _run(program)


@settings(max_examples=150, **SETTINGS)
@given(programs([ELEMENTWISE, VIEWS]))
def test_random_view_graphs(program):
    _run(program)


@settings(max_examples=150, **SETTINGS)
@given(programs([ELEMENTWISE, REDUCTIONS, MATMULS, VIEWS], max_steps=8))
def test_random_mixed_graphs(program):
    _run(program)


@settings(max_examples=80, **SETTINGS)
@given(programs([SYMBOLIC], max_steps=6, symbolic=True))
def test_random_symbolic_graphs(program):
    _run(program)


# --- the strategy itself ------------------------------------------------------------------
def test_program_builds_and_checks():
    """A hand-written Program exercising every step kind (and the builder) once."""
    program = Program(
        inputs=((3, 4), (4,), (2, 1, 3)),
        steps=(("unary", "tanh", 0), ("binary", "add", 3, 1), ("where", "greater", 4, 0.5, 0),
               ("const", 5, (1, 4)), ("reduce", "mean", 6, -1, True), ("matmul", 0, 1),
               ("transpose", 0, (1, 0)), ("matmul", 2, 0), ("reshape", 9, (2, 2, -1)),
               ("broadcast_to", 1, (3, 4)), ("expand_dims", 8, 0), ("squeeze", 13, None),
               ("flatten", 10, 1), ("scale", 14, 0.25), ("unary", "log_sq1", 15),
               ("reduce", "max", 11, (0, 2), False)),
        outputs=(17, 7, 12, 18, 16), seed=3)
    check_program(program)


# --- kgen bugs found by these tests, kept as regression tests -----------------------------------
# Reshapes of a matmul's epilogue values (fusion rule E1) once failed to compile: "<kgen matmul>
# cannot be computed inside another kernel". Fixed; these keep it fixed.
def test_matmul_reshape_epilogue():
    check_program(Program(inputs=((2, 3), (3, 4)), steps=(("matmul", 0, 1), ("reshape", 2, (8,))),
                          outputs=(3,)))


def test_matmul_elementwise_expand_dims_epilogue():
    check_program(Program(inputs=((2, 3), (3, 4)), steps=(("matmul", 0, 1), ("unary", "tanh", 2),
                                                           ("expand_dims", 3, 0)),
                          outputs=(4,)))


def test_batched_matmul_squeeze_epilogue():
    check_program(Program(inputs=((2, 1, 3), (3, 4)), steps=(("matmul", 0, 1), ("squeeze", 2, 1),
                                                              ("binary", "add", 3, 0.5)),
                          outputs=(4,)))


def test_matmul_reshape_when_the_matmul_is_written():
    """The same reshape is fine when the matmul is also an output (so it is in memory)."""
    check_program(Program(inputs=((2, 3), (3, 4)), steps=(("matmul", 0, 1), ("reshape", 2, (8,))),
                          outputs=(3, 2)))


def test_batched_matmul_one_element_operand():
    check_program(Program(inputs=((2, 1, 1), (1, 3)), steps=(("matmul", 0, 1),), outputs=(2,)))


def test_symbolic_size_squared_in_an_index():
    x = kgen.tensor("x", (2, "N", "N"))
    graph = kgen.Graph([x], [ops.sum(x, 0)])
    kgen.check(graph, {"x": random_array(np.random.default_rng(0), (2, 3, 3))}, strict=True)


def test_symbolic_programs_run():
    """The same bug does not touch a symbolic size that appears once per shape."""
    check_program(Program(inputs=((1, 6, 3), (3,)), steps=(("broadcast_to", 0, (4, 2, 6, 3)),
                                                           ("binary", "mul", 2, 1),
                                                           ("reduce", "mean", 3, (1, 2), False)),
                          outputs=(4, 3), seed=1, symbol=6))
