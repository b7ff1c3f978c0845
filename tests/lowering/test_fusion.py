"""Fusion plans and the shape of generated code: kernel counts for the usual patterns, the
rules of kgen.lowering.fusion, cse, and the generated module's text."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.kernels.combo import flatten
from kgen.ir.graph import format_node
from kgen.lowering.fusion import RECOMPUTE_LOADS, RECOMPUTE_OPS, ROW_MAX, fuse
from kgen.lowering.passes import cse, optimize
from conftest import assert_matches_reference, fuzz_graph, random_array, row_kernels_that_wait_on_each_other


def compile_(inputs, outputs):
    return kgen.compile(kgen.Graph(inputs, outputs))


def kinds(program):
    return [k.kind for k in flatten(program.kernels)]


# --- kernel counts -------------------------------------------------------------------------
def test_broadcast_elementwise_chain_is_one_kernel():
    x = kgen.tensor("x", ("N", 3))
    w = kgen.tensor("w", (3,))
    b = kgen.tensor("b", ("N", 1))
    p = compile_([x, w, b], [ops.relu(x * w + b)])
    assert kinds(p) == ["pointwise"]
    (k,) = p.kernels
    assert {n.op for n in k.nodes} == {"mul", "add", "relu"}
    assert set(k.reads) == {x, w, b}
    assert p.plan.written == {x, w, b, p.graph.outputs[0]}


def test_scalar_constants_are_computed_in_place():
    x = kgen.tensor("x", (4, 5))
    p = compile_([x], [ops.exp(x) * 2.0 + 1.0])
    assert kinds(p) == ["pointwise"]
    assert "2.0" in p.kernels[0].text and "1.0" in p.kernels[0].text
    assert [pp.kind for pp in p.kernels[0].params].count("in") == 1


def test_views_never_add_a_kernel():
    x = kgen.tensor("x", (4, 6))
    p = compile_([x], [ops.reshape(ops.exp(x.T), (3, 8))])
    assert kinds(p) == ["pointwise"]
    (k,) = p.kernels
    assert {n.op for n in k.nodes} == {"transpose", "exp", "reshape"}
    (load,) = [line for line in k.text.splitlines() if "tl.load(" in line]
    assert "//" in load and "%" in load  # the transpose is an index expression
    assert p.plan.written == {x, p.graph.outputs[0]}


def test_view_only_output_is_one_copy_kernel():
    x = kgen.tensor("x", (3, 5))
    p = compile_([x], [ops.broadcast_to(ops.reshape(x.T, (5, 1, 3)), (2, 5, 4, 3))])
    assert kinds(p) == ["pointwise"]


def test_reduction_with_elementwise_producers_is_one_kernel():
    a = kgen.tensor("a", ("N", 5))
    w = kgen.tensor("w", (5,))
    p = compile_([a, w], [ops.sum(ops.exp(a) * w + 1.0, axis=1)])
    assert kinds(p) == ["reduction"]
    assert {n.op for n in p.kernels[0].nodes} == {"exp", "mul", "add", "sum"}


def test_reduction_of_a_transposed_view_is_one_kernel():
    x = kgen.tensor("x", (3, 4, 5))
    p = compile_([x], [ops.max(ops.exp(x.transpose(2, 0, 1)), axis=(0, 2))])
    assert kinds(p) == ["reduction"]


def test_matmul_reads_transposed_inputs_in_place():
    a = kgen.tensor("a", (5, 3))
    b = kgen.tensor("b", (4, 5))
    p = compile_([a, b], [ops.matmul(a.T, b.T)])
    assert kinds(p) == ["matmul"]
    assert set(p.kernels[0].reads) == {a, b}


def test_batched_matmul_with_broadcast_batch_is_one_kernel():
    a = kgen.tensor("a", (2, 1, 5, 7))
    b = kgen.tensor("b", (3, 7, 4))
    p = compile_([a, b], [a @ ops.swap_last(ops.swap_last(b))])
    assert kinds(p) == ["matmul"]


def test_matmul_operand_computed_elementwise_is_written_first():
    a = kgen.tensor("a", (5, 3))
    b = kgen.tensor("b", (3, 4))
    e = ops.exp(a)
    p = compile_([a, b], [ops.matmul(e.T.T, b)])  # R3: a computed operand is written
    assert kinds(p) == ["pointwise", "matmul"]
    assert e in p.plan.written


def test_matmul_of_transposed_computed_operand_reads_it_in_place():
    a = kgen.tensor("a", (3, 5))
    b = kgen.tensor("b", (3, 4))
    e = ops.exp(a)
    p = compile_([a, b], [ops.matmul(e.T, b)])
    assert kinds(p) == ["pointwise", "matmul"]
    assert e in p.plan.written and e.T not in p.plan.written


def test_matmul_epilogue_is_fused_and_the_product_stays_in_registers():
    a = kgen.tensor("a", (5, 3))
    b = kgen.tensor("b", (3, 4))
    product = a @ b
    p = compile_([a, b], [ops.relu(product) + 1.0])
    assert kinds(p) == ["matmul"]
    assert product not in p.plan.written and p.plan.groups[0].epilogue == list(p.kernels[0].roots)


def test_independent_same_shape_outputs_merge():
    u = kgen.tensor("u", (4, 6))
    v = kgen.tensor("v", (4, 6))
    p = compile_([u, v], [ops.exp(u), ops.log(v) + u])
    assert kinds(p) == ["pointwise"]
    assert len(p.kernels[0].roots) == 2
    assert p.kernels[0].text.count("tl.store(") == 2


def test_independent_outputs_of_different_shapes_do_not_merge():
    u = kgen.tensor("u", (4, 6))
    v = kgen.tensor("v", (6, 4))
    p = compile_([u, v], [ops.exp(u), ops.exp(v)])
    assert kinds(p) == ["pointwise", "pointwise"]


def test_symbolic_same_shape_outputs_merge():
    u = kgen.tensor("u", ("N", 6))
    v = kgen.tensor("v", ("N", 6))
    p = compile_([u, v], [u * v, u - v, ops.sigmoid(u)])
    assert kinds(p) == ["pointwise"]
    assert len(p.kernels[0].roots) == 3


def test_dependent_pointwise_kernels_merge_vertically():
    """Rule E3: the product reads e where e's kernel holds it, so it joins that kernel
    (after the row sum it also needs), and e is not read back from memory. (The rows have
    symbolic length, so no row kernel holds them: R6.)"""
    x = kgen.tensor("x", (4, "M"))
    e = ops.exp(x)
    p = compile_([x], [e, ops.sum(x, 1, keepdims=True) * e])
    assert kinds(p) == ["reduction", "pointwise"]
    assert e in p.kernels[1].roots and e not in p.kernels[1].reads


def test_softmax_kernels():
    x = kgen.tensor("x", (4, "M"))  # rows of any length: two looping reductions, then the division
    p = compile_([x], [ops.softmax(x)])
    assert kinds(p) == ["reduction", "reduction", "pointwise"]
    assert [k.roots[0].op for k in p.kernels] == ["max", "sum", "div"]
    x = kgen.tensor("x", (4, 6))  # short rows: one row kernel (R6)
    p = compile_([x], [ops.softmax(x)])
    assert kinds(p) == ["reduction"] and [k.roots[0].op for k in p.kernels] == ["div"]


def test_cheap_shared_value_is_recomputed():
    x = kgen.tensor("x", (4, 6))
    e = ops.exp(x)
    p = compile_([x], [ops.sum(e, 0), ops.sum(e, 1)])
    assert kinds(p) == ["reduction", "reduction"]
    assert e not in p.plan.written


def test_costly_shared_value_is_written_once():
    x = kgen.tensor("x", (4, 6))
    t = x
    for _ in range(9):
        t = ops.exp(t) * 1.5
    p = compile_([x], [ops.sum(t, 0), ops.sum(t, 1)])
    t = p.graph.outputs[0].inputs[0]  # cse rebuilt the chain (its constants merged)
    assert t.op == "mul" and t is p.graph.outputs[1].inputs[0]
    assert t in p.plan.written  # R5
    reductions = [k for k in flatten(p.kernels) if k.kind == "reduction"]
    assert len(reductions) == 2
    for k in reductions:  # neither reduction recomputes the chain
        assert [n.op for n in k.nodes] == ["sum"]
        assert k.reads == (t,)


def test_shared_value_with_many_loads_is_not_recomputed_by_each_kernel():
    x, y, z, w = (kgen.tensor(n, (4, 6)) for n in "xyzw")
    u = x * y * z * w  # 4 loads > RECOMPUTE_LOADS
    p = compile_([x, y, z, w], [ops.sum(u, 0), ops.sum(u, 1)])
    assert kinds(p) == ["pointwise", "reduction", "reduction"]
    for k in p.kernels[1:]:
        assert len(k.reads) <= RECOMPUTE_LOADS
        assert len(k.nodes) <= RECOMPUTE_OPS + 1
    assert set(p.kernels[0].reads) <= {x, y, z, w}


def test_launch_order_respects_dependencies():
    x = kgen.tensor("x", (5, 3))
    w = kgen.tensor("w", (3, 4))
    h = ops.tanh(x @ w)
    loss = ops.sum(h * h)
    gw = kgen.grad(loss, w)
    p = compile_([x, w], [loss, gw])
    produced = {n for n in p.graph.inputs}
    for k in p.kernels:
        for r in k.reads:
            assert r in produced or r.op == "constant", f"{k.name} reads {r!r} before it is written"
        produced |= set(k.roots)
    assert set(p.graph.outputs) <= produced


def test_plan_groups_match_kernels():
    x = kgen.tensor("x", ("N", 5))
    p = compile_([x], [ops.log_softmax(x)])
    plan = p.plan
    assert [g.kind for g in plan.groups] == kinds(p)
    assert [tuple(g.roots) for g in plan.groups] == [k.roots for k in p.kernels]
    again = fuse(p.graph)
    assert [g.kind for g in again.groups] == [g.kind for g in plan.groups]


# --- cse -----------------------------------------------------------------------------------
def test_cse_merges_duplicate_subexpressions():
    x = kgen.tensor("x", (4,))
    y = kgen.tensor("y", (4,))
    a = ops.exp(x * y) + 1.0
    b = ops.exp(x * y) + 1.0  # built separately: distinct nodes
    g = kgen.Graph([x, y], [a * b])
    after = cse(g)
    assert len(after.nodes) < len(g.nodes)
    ops_after = [n.op for n in after.nodes]
    assert ops_after.count("exp") == 1 and ops_after.count("mul") == 2
    assert ops_after.count("constant") == 1


def test_cse_keeps_distinct_attributes_apart():
    x = kgen.tensor("x", (4, 6))
    g = kgen.Graph([x], [ops.sum(x, 0, keepdims=True).sum() + ops.sum(x, 1, keepdims=True).sum()])
    assert [n.op for n in cse(g).nodes].count("sum") == 4


def test_cse_preserves_values():
    x = kgen.tensor("x", (4,))
    g = kgen.Graph([x], [ops.exp(x) * ops.exp(x) + ops.exp(x), ops.exp(x)])
    after = cse(g)
    assert after.outputs[1] in after.nodes
    v = {"x": np.array([0.5, -1.0, 2.0, 1.5], np.float32)}
    for got, want in zip(kgen.reference.run(after, v), kgen.reference.run(g, v)):
        np.testing.assert_allclose(got, want)


def test_cse_keeps_signed_zero_constants_apart():
    x = kgen.tensor("x", (3,))
    g = kgen.Graph([x], [ops.div(x, ops.constant(-0.0)), ops.div(x, ops.constant(0.0))])
    after = cse(g)
    v = {"x": np.ones(3, np.float32)}
    for got, want in zip(kgen.reference.run(after, v), kgen.reference.run(g, v)):
        np.testing.assert_array_equal(got, want)


def test_compile_runs_cse():
    x = kgen.tensor("x", (4,))
    p = compile_([x], [ops.exp(x) + ops.exp(x)])
    assert [n.op for n in p.kernels[0].nodes].count("exp") == 1


# --- generated text ------------------------------------------------------------------------
def _mixed_program():
    x = kgen.tensor("x", ("N", 6))
    w = kgen.tensor("w", (6, 5))
    h = ops.relu(x @ w)
    return compile_([x, w], [ops.softmax(h), ops.sum(h * h)])


_NODE_LINE = re.compile(r"^    %\d+: (f32|f16|bf16|i32|i64|bool)\[[^\]]*\] = \w+")


def test_kernel_docstrings_name_their_nodes():
    p = _mixed_program()
    names = p.graph.names()
    for k in p.kernels:
        fn = ast.parse(k.text).body[0]
        doc = ast.get_docstring(fn, clean=False)
        assert doc.startswith(f"kgen {k.name}: ")
        lines = [line for line in k.text.splitlines() if _NODE_LINE.match(line)]
        assert [line.strip() for line in lines] == [format_node(n, names) for n in k.nodes]
        assert lines, k.text
        for root in k.roots:
            assert format_node(root, names) in doc


def test_one_jit_function_per_kernel():
    p = _mixed_program()
    for k in p.kernels:
        assert k.text.count("@triton.jit") == 1
        tree = ast.parse(k.text)
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef)
        assert tree.body[0].name == k.name
    assert p.source.count("@triton.jit") == len(p.kernels)
    module = ast.parse(p.source)
    functions = [n for n in module.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == [k.name for k in p.kernels]
    for f in functions:
        assert len(f.decorator_list) == 1 and ast.unparse(f.decorator_list[0]) == "triton.jit"
        assert not [n for n in ast.walk(f) if isinstance(n, ast.FunctionDef) and n is not f]
    imports = [n for n in module.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {a.name for n in imports for a in n.names} == {"triton", "triton.language"}


def test_kernel_params_match_signature():
    p = _mixed_program()
    for k in p.kernels:
        fn = ast.parse(k.text).body[0]
        assert [a.arg for a in fn.args.args] == [pp.name for pp in k.params]
        kinds_ = [pp.kind for pp in k.params]
        assert kinds_ == sorted(kinds_, key=["in", "out", "int", "constexpr"].index)
        assert [pp.node for pp in k.params if pp.kind == "out"] == list(k.roots)
        assert tuple(pp.node for pp in k.params if pp.kind == "in") == k.reads


def test_module_header_holds_the_graph():
    p = _mixed_program()
    assert p.source.startswith('"""Triton kernels generated by kgen')
    for line in str(p.graph).splitlines():
        assert line in p.source


def test_module_source_dumps_and_imports(tmp_path):
    import triton

    p = _mixed_program()
    path = tmp_path / "kgen_dumped_module.py"
    path.write_text(p.source)
    spec = importlib.util.spec_from_file_location("kgen_dumped_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        for k in p.kernels:
            fn = getattr(module, k.name)
            assert isinstance(fn, triton.runtime.JITFunction)
            assert fn.fn.__name__ == k.name
    finally:
        del sys.modules[spec.name]


def test_kernel_names_are_unique_and_ordered():
    p = _mixed_program()
    names = [k.name for k in p.kernels]
    assert len(set(names)) == len(names)
    assert [int(re.match(r"k(\d+)_", n).group(1)) for n in names] == list(range(len(names)))
    for k in p.kernels:
        assert k.name.startswith(f"k{names.index(k.name)}_{k.kind}")


# --- R6: row kernels ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 5, 33])
def test_cross_entropy_and_its_gradient_are_one_row_kernel(n, rng):
    """log_softmax, the per-row loss and d(loss)/d(logits): one kernel holding each row."""
    logits, y = kgen.tensor("logits", ("N", 10)), kgen.tensor("y", ("N",), "int32")
    loss = ops.cross_entropy(logits, y)
    (grad,) = kgen.grad(loss, [logits])
    p = compile_([logits, y], [grad])
    assert kinds(p) == ["reduction"] and p.kernels[0].config_rule == "rows"
    assert len([n for n in p.kernels[0].nodes if n.opdef.kind == "reduction"]) >= 2
    labels = rng.integers(0, 10, n).astype(np.int32)
    assert_matches_reference(p.graph, {"logits": random_array(rng, (n, 10)), "y": labels})


def test_softmax_over_a_middle_axis_is_one_row_kernel(rng):
    x = kgen.tensor("x", (3, 7, 4))
    p = compile_([x], [ops.softmax(x, axis=1)])
    assert kinds(p) == ["reduction"]
    assert_matches_reference(p.graph, {"x": random_array(rng, (3, 7, 4))})


def test_long_rows_use_looping_reductions(rng):
    """Rows longer than ROW_MAX (or of symbolic length) are not held in registers."""
    x = kgen.tensor("x", (3, ROW_MAX + 1))
    p = compile_([x], [ops.softmax(x, axis=1)])
    assert len(flatten(p.kernels)) > 1 and all(k.config_rule != "rows" for k in flatten(p.kernels))
    assert_matches_reference(p.graph, {"x": random_array(rng, (3, ROW_MAX + 1))})


def test_row_kernels_that_would_wait_on_each_other_stay_apart(rng):
    """Found by the fuzzer (it hung the compiler): the cross-entropy row kernel's backward
    reduction reads the d(loss) row kernel, whose other reduction reads the forward through
    a pointwise kernel. Each reduction alone looked free of cycles; the kernels together
    were not. A row kernel must count another row kernel's reductions as one."""
    inputs, outputs = row_kernels_that_wait_on_each_other()
    p = compile_(inputs, outputs)
    assert_acyclic(p.plan)
    assert_matches_reference(p.graph, {"x": random_array(rng, (7, 2)), "y": rng.integers(0, 2, 7).astype(np.int32),
                                       "cot": random_array(rng, (10, 4))})


def assert_acyclic(plan):
    """Every kernel group reads only groups launched before it."""
    from kgen.lowering.fusion import _dependencies
    deps = _dependencies(plan.groups, plan.written)
    assert all(d < gi for gi in range(len(plan.groups)) for d in deps[gi]), deps


def test_fusion_plans_of_random_programs_are_acyclic(monkeypatch):
    """The siblings: the fuzzer's programs (values, gradients, updates) fused without
    compiling; a cycle raises at once (it used to spin) and the plan is in launch order."""
    for seed in range(2000):  # about 5 ms each; seeds 1166, 1216 and 1740 made a cycle
        assert_acyclic(fuse(optimize(fuzz_graph(seed, monkeypatch))))


# --- L1: combo launches --------------------------------------------------------------------
def test_independent_kernels_share_one_launch(rng):
    a, b = kgen.tensor("a", ("N", 6)), kgen.tensor("b", (6, 5))
    p = compile_([a, b], [a @ b, ops.sum(a, 0), ops.exp(b)])
    assert len(p.kernels) == 1 and p.kernels[0].kind == "combo"
    assert sorted(k.kind for k in p.kernels[0].parts) == ["matmul", "pointwise", "reduction"]
    assert_matches_reference(p.graph, {"a": random_array(rng, (9, 6)), "b": random_array(rng, (6, 5))})


def test_launch_count_is_the_longest_chain_of_kernels():
    x, w1, w2 = kgen.tensor("x", ("N", 4)), kgen.tensor("w1", (4, 4)), kgen.tensor("w2", (4, 4))
    h = x @ w1
    p = compile_([x, w1, w2], [h @ w2, ops.sum(x, 0)])
    assert [len(launch) for launch in p.plan.launches] == [2, 1]
