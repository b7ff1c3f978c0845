"""Fusion decisions explain themselves: every value a kernel writes names the rule that
writes it, every value a rule moved into another kernel names that rule, refusals say why,
and `kgen stats --why` prints it all per kernel."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import kgen
from kgen import ops
from kgen.lowering.explain import explain, format_explanation
from kgen.lowering.fusion import fuse, is_in_memory_source
from kgen.lowering.passes import optimize
from conftest import fuzz_graph, row_kernels_that_wait_on_each_other, zoo_train_step


def decisions(plan, node, outcome=None, rule=None):
    return [d for d in plan.decisions if d.node is node and (outcome is None or d.outcome == outcome)
            and (rule is None or d.rule == rule)]


def assert_explained(plan):
    """Each kernel boundary (a value one kernel writes) has a writing rule, and each value a
    kernel computes beside its first root was put there by a named rule."""
    for group in plan.groups:
        for root in group.roots:
            if not is_in_memory_source(root):
                assert any(d.rule in ("R1", "R2", "R3", "R5") for d in decisions(plan, root, "written")), \
                    f"{root} is written with no rule recorded"
        for value in group.epilogue:
            assert decisions(plan, value, "fused", "E1"), f"{value} is in an epilogue with no E1 recorded"
        for value in group.rows:
            assert decisions(plan, value, "fused", "R6"), f"{value} is in a row kernel with no R6 recorded"
        if group.side:
            assert decisions(plan, group.side[0], "fused", "E4")
        if group.row_part:
            assert decisions(plan, group.row_part[0][0], "fused", "E5")
        if group.kind == "pointwise":
            for value in group.roots[1:]:
                assert any(d.rule in ("E2", "E3") for d in decisions(plan, value, "fused")), \
                    f"{value} joined a pointwise kernel with no E2/E3 recorded"
    assert "(no rule recorded)" not in format_explanation(explain(plan))


def plan_of(inputs, outputs):
    return kgen.compile(kgen.Graph(inputs, outputs)).plan


@pytest.mark.parametrize("name", ["mlp128", "cnn", "gru"])
def test_zoo_training_steps_are_explained(name):
    step = zoo_train_step(name)
    plan = step.program.plan
    assert_explained(plan)
    text = format_explanation(explain(plan, [(k.name, [p.name for p in k.parts]) for k in step.program.kernels]))
    for kernel in step.program.kernels:
        assert f"{kernel.name}  (launch " in text
        if kernel.parts:
            assert "L1  " in text.split(f"{kernel.name}  (launch ")[1].split("\n")[1]


def test_random_programs_are_explained(monkeypatch):
    """The fuzzer's programs (values, gradients, updates), fused without compiling."""
    for seed in range(300):
        assert_explained(fuse(optimize(fuzz_graph(seed, monkeypatch))))


def test_e4_says_why_a_gemm_with_a_symbolic_extent_keeps_its_bias_gradient_apart():
    a = kgen.tensor("a", (4, 6))
    for cols, outcome in ((3, "fused"), ("S", "refused")):
        b = kgen.tensor("b", (6, cols))
        plan = plan_of([a, b], [a @ b, ops.sum(a, 1)])
        (reduction,) = [n for n in plan.graph.nodes if n.op == "sum"]
        (d,) = decisions(plan, reduction, rule="E4")
        assert d.outcome == outcome
        if outcome == "refused":
            assert "may be 0" in d.reason and "matmul" in d.reason


def test_e1_says_why_a_consumer_at_other_elements_stays_out_of_the_epilogue():
    x = kgen.tensor("x", ("N", 4))
    plan = plan_of([x], [x + ops.sum(x, 0)])
    (out,) = plan.graph.outputs
    (d,) = decisions(plan, out, "refused", "E1")
    assert "other elements" in d.reason and "sum" in d.reason


def test_r6_says_when_it_keeps_reductions_over_the_same_rows_apart():
    """The row kernels that would wait on each other (tests/lowering/test_fusion.py)."""
    plan = plan_of(*row_kernels_that_wait_on_each_other())
    assert any(d.rule == "R6" and d.outcome == "refused" and "cycle" in d.reason for d in plan.decisions)
    assert_explained(plan)


def test_r5_says_what_recomputing_costs():
    x = kgen.tensor("x", (4, 8))
    e = ops.exp(x)
    plan = plan_of([x], [ops.sum(e, 0), ops.max(e, 1)])  # two row kernels (other rows), one exp
    (e,) = [n for n in plan.graph.nodes if n.op == "exp"]
    (d,) = decisions(plan, e, rule="R5")
    assert d.outcome == "fused" and "read by 2 kernels" in d.reason


def test_cli_stats_why_names_a_rule_for_every_kernel():
    done = subprocess.run([sys.executable, "-m", "kgen.cli", "stats", "mlp128", "--train", "--why", "--batch", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sections = done.stdout.split("(launch ")[1:]
    assert len(sections) == 6  # mlp128's training step: 6 launches (tests/nn/test_nn.py)
    for section in sections:
        assert any(f"  {rule}  " in section for rule in ("R1", "R2", "R3", "R5")), section
    assert "(no rule recorded)" not in done.stdout
    done = subprocess.run([sys.executable, "-m", "kgen.cli", "stats", "linreg", "--train", "--why", "--json"],
                          capture_output=True, text=True, timeout=300)
    why = json.loads(done.stdout)["why"]
    assert all(k["writes"] for launch in why for k in launch["kernels"])
