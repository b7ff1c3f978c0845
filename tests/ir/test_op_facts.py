"""The per-op facts of the op table's template ops (flops, GEMM extents, the vendor call,
the template), each against an independent account, and the rules that keep them there:
outside kgen/ir and an op's own template, no module matches a template op by name, and an
op that is no kgen.ops function is not even named elsewhere.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.ir import ops_conv, shapes
from kgen.ir.ops_gather import embedding_grad
from kgen.ir import ops_loop
from kgen.ir.optable import TABLE
from kgen.kernels import codegen, templates  # noqa: F401  (codegen registers every template)
from kgen.lowering.stats import node_flops
from ir_helpers import assert_close, random_array, run, to_torch

TEMPLATE_OPS = sorted(name for name, d in TABLE.items() if d.kind == "template")
GEMM_OPS = {"matmul", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"}
KGEN = Path(kgen.__file__).resolve().parent


def _examples():
    """name -> (the op's node over small static inputs, the inputs, and the flops counted by
    hand: 2 per multiply-add of the forward op, one per window element of a pooled value)."""
    x, w = kgen.tensor("x", (2, 3, 5, 5)), kgen.tensor("w", (4, 3, 3, 3))
    g = kgen.tensor("g", (2, 4, 5, 5))  # conv2d(x, w, padding=1)'s shape
    a, b = kgen.tensor("a", (6, 7)), kgen.tensor("b", (7, 8))
    p, t = kgen.tensor("p", (2, 3, 4, 4)), kgen.tensor("t", (2, 3, 4, 4))
    q = kgen.tensor("q", (2, 3, 2, 2))  # a 2x2 pool of p
    i, e, h = kgen.tensor("i", (2, 3), "int64"), kgen.tensor("e", (6, 4)), kgen.tensor("h", (2, 3, 4))
    scanned, _ = ops.scan(lambda c, x_t: (c * x_t + c, None), ops.broadcast_to(ops.constant(0.0), (3, 4)), h)
    conv = 2 * (2 * 4 * 5 * 5) * (3 * 3 * 3)  # outputs x taps, a multiply and an add each
    pool = (2 * 3 * 2 * 2) * (2 * 2)  # pooled values x window elements
    return {
        "matmul": (ops.matmul(a, b), [a, b], 2 * 6 * 8 * 7),
        "conv2d": (ops.conv2d(x, w, padding=1), [x, w], conv),
        "conv2d_input_grad": (ops_conv.conv2d_input_grad(g, w, (5, 5), padding=1), [g, w], conv),
        "conv2d_weight_grad": (ops_conv.conv2d_weight_grad(x, g, (3, 3), padding=1), [x, g], conv),
        "max_pool2d": (ops.max_pool2d(p, 2), [p], pool),
        "max_pool2d_indices": (ops.max_pool2d(p, 2, return_indices=True)[1], [p], pool),
        "avg_pool2d": (ops.avg_pool2d(p, 2), [p], pool),
        "max_pool2d_grad": (ops_conv.max_pool2d_grad(q, p, 2), [q, p], pool),
        "max_pool2d_gather": (ops_conv.max_pool2d_gather(t, p, 2), [t, p], pool),
        "avg_pool2d_grad": (ops_conv.avg_pool2d_grad(q, (4, 4), 2), [q], pool),
        "embedding": (ops.embedding(i, e), [i, e], 0),  # a copy
        "embedding_grad": (embedding_grad(h, i, 6, padding_idx=2), [h, i], 2 * 3 * 4),  # an add per element of g
        # a scan's loop: 2 steps of a multiply and an add per element of the [3, 4] carry
        "persistent_scan": (ops_loop.persistent(scanned), [h], 2 * 2 * 12),
    }


# A scan lowered to one kernel runs a user's loop body: no library call computes it.
NO_VENDOR = {"persistent_scan"}


def test_every_template_op_has_an_example():
    assert sorted(_examples()) == TEMPLATE_OPS, "add the new template op to _examples"


@pytest.mark.parametrize("name", TEMPLATE_OPS)
def test_every_template_op_has_its_facts(name):
    opdef = TABLE[name]
    assert templates.lookup(opdef.lower), f"{name}: lower names no template"
    assert opdef.flops is not None and (opdef.vendor is not None or name in NO_VENDOR)
    assert (opdef.gemm is not None) == (name in GEMM_OPS)


@pytest.mark.parametrize("name", TEMPLATE_OPS)
def test_flops_are_the_hand_count(name):
    node, _, want = _examples()[name]
    assert node.op == name
    assert node_flops(node, {}) == want


def test_flops_by_kind_and_conversions_are_free():
    x = kgen.tensor("x", ("N", 3))
    assert node_flops(ops.exp(x), {"N": 4}) == 12
    assert node_flops(ops.sum(x, axis=1), {"N": 4}) == 12
    assert node_flops(ops.cast(x, "float16"), {"N": 4}) == 0
    assert node_flops(ops.reshape(x, (-1,)), {"N": 4}) == 0


@pytest.mark.parametrize("name", sorted(GEMM_OPS))
def test_gemm_extents_cover_the_result(name):
    """M x N tiles the result (its elements, in some order), and the operands are inputs."""
    node, _, _ = _examples()[name]
    m, n, k, a, b = node.opdef.gemm(node)
    assert m * n == shapes.numel(node.shape)
    assert {a, b} == set(node.inputs) and k > 0


def test_a_batched_matmul_is_no_single_gemm():
    node = ops.matmul(kgen.tensor("a", (2, 3, 4)), kgen.tensor("b", (2, 4, 5)))
    assert node.opdef.gemm(node) is None


@pytest.mark.parametrize("name", sorted(set(TEMPLATE_OPS) - NO_VENDOR))
def test_the_vendor_call_is_the_reference(name, rng):
    node, inputs, _ = _examples()[name]
    # integer inputs are embedding indices: positive ones, [1, 6), inside its table of 6 rows
    arrays = {i.name: random_array(rng, tuple(i.shape), i.dtype, positive=not i.dtype.is_float) for i in inputs}
    want, _ = run(node, arrays, inputs)
    got = node.opdef.vendor(node, [to_torch(arrays[i.name]) for i in node.inputs])
    assert_close(got, want, what=f"{name}: vendor vs reference")


# --- no module outside kgen/ir and an op's own template matches a template op by name --------
def _is_op_attribute(expr) -> bool:
    return isinstance(expr, ast.Attribute) and expr.attr == "op"


def _strings(expr) -> set:
    return {n.value for n in ast.walk(expr) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _named(strings) -> set:
    """The template op names among `strings`."""
    return {s for s in strings if s in TEMPLATE_OPS}


def _part_of(strings) -> set:
    """The template op names that hold one of `strings` (a prefix or a part of a name)."""
    return {name for name in TEMPLATE_OPS for s in strings if s and s in name}


def op_name_matches(tree) -> list:
    """(line, names) of each comparison of some `x.op` with template op names, of each
    `"part" in x.op`, of each `x.op.startswith(...)` (or any other method of x.op), and of
    each tuple, list or set literal of several template op names, in a parsed module. A
    module's `__all__` lists the functions it exports (kgen.ops's matmul, conv2d, ...), no
    ops it matches, and is not read."""
    exports = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)}
    found = []
    for n in ast.walk(tree):
        if id(n) in exports:
            continue
        names = set()
        if isinstance(n, ast.Compare) and any(_is_op_attribute(e) for e in [n.left, *n.comparators]):
            others = [e for e in [n.left, *n.comparators] if not _is_op_attribute(e)]
            names = _named(set().union(*map(_strings, others)))
            if isinstance(n.ops[0], (ast.In, ast.NotIn)) and _is_op_attribute(n.comparators[0]):
                names |= _part_of(_strings(n.left))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and _is_op_attribute(n.func.value):
            names = _part_of(set().union(*map(_strings, n.args)))
        if isinstance(n, (ast.Tuple, ast.List, ast.Set)):  # a list of ops to match later (DOT_OPS)
            listed = _named(_strings(n))
            names = listed if len(listed) > 1 else set()
        if names:
            found.append((n.lineno, sorted(names)))
    return sorted(found)


# Rewrite rules are per-op algebra (transpose of a matmul), and name the ops they rewrite.
EXEMPT = {"lowering/simplify.py"}


def _template_module(name: str) -> str:
    emit = templates.lookup(TABLE[name].lower)
    return Path(sys.modules[emit.__module__].__file__).resolve().relative_to(KGEN).as_posix()


def test_no_module_outside_the_op_table_matches_a_template_op_by_name():
    own = {}  # module -> the template ops it may name (those whose template it is)
    for name in TEMPLATE_OPS:
        own.setdefault(_template_module(name), set()).add(name)
    wrong = []
    for path in sorted(KGEN.rglob("*.py")):
        module = path.relative_to(KGEN).as_posix()
        if module.startswith("ir/") or module in EXEMPT:
            continue
        for line, names in op_name_matches(ast.parse(path.read_text())):
            if set(names) - own.get(module, set()):
                wrong.append(f"kgen/{module}:{line} matches {', '.join(names)}")
    assert not wrong, "read the op table's facts instead:\n" + "\n".join(wrong)


def test_the_name_check_finds_each_way_of_matching():
    source = ('a = node.op == "matmul"\nb = n.op in ("conv2d", "x")\nc = node.op.startswith("conv2d")\n'
              'd = "pool2d" in node.op\ne = node.op == "relu"\nf = node.op == "input"\n'
              'DOT = ("matmul", "conv2d")\nRULES = ("matmul", "conv")\n__all__ = ["matmul", "conv2d"]\n')
    assert [line for line, _ in op_name_matches(ast.parse(source))] == [1, 2, 3, 4, 7]


# --- a template op's name is written in its op file and its template, nowhere else -----------
def _module_file(module: str) -> str:
    return Path(sys.modules[module].__file__).resolve().relative_to(KGEN).as_posix()


def _naming(name: str) -> set:
    """The modules under kgen/ whose text names `name` as a word (conv2d is not a word of
    conv2d_input_grad), as `grep -rlw` would list them."""
    word = re.compile(rf"\b{re.escape(name)}\b")
    return {path.relative_to(KGEN).as_posix() for path in KGEN.rglob("*.py") if word.search(path.read_text())}


# The ops kgen.ops builds for programs (matmul, conv2d, the pools) are named wherever a
# program is written: kgen/ops.py and the fuzzer's catalog, and kgen.nn's layers, too. The
# rest are IR primitives only the op table's own rules build (the gradient ops, built by VJPs).
# max_pool2d_indices is the second result of ops.max_pool2d(return_indices=True): named by
# kgen/ops.py too, but by no other program-writing module (torch's oracle asks F.max_pool2d).
SECOND_RESULT_OPS = ["max_pool2d_indices"]
INTERNAL_TEMPLATE_OPS = [name for name in TEMPLATE_OPS if name not in ops.__all__ + SECOND_RESULT_OPS]


def test_internal_template_ops_are_the_gradient_ops():
    assert INTERNAL_TEMPLATE_OPS == ["avg_pool2d_grad", "conv2d_input_grad", "conv2d_weight_grad",
                                     "embedding_grad", "max_pool2d_gather", "max_pool2d_grad",
                                     "persistent_scan"]


@pytest.mark.parametrize("name", INTERNAL_TEMPLATE_OPS)
def test_an_internal_template_op_is_named_by_its_op_file_and_its_template_only(name):
    opdef = TABLE[name]
    own = {_module_file(opdef.infer.__module__), _module_file(templates.TEMPLATES[opdef.lower].__module__)}
    assert _naming(name) == own


@pytest.mark.parametrize("name", SECOND_RESULT_OPS)
def test_a_second_result_op_is_named_by_its_op_file_its_template_and_kgen_ops_only(name):
    opdef = TABLE[name]
    own = {_module_file(opdef.infer.__module__), _module_file(templates.TEMPLATES[opdef.lower].__module__), "ops.py"}
    assert _naming(name) == own
