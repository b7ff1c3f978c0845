"""Per-line provenance in generated kernels (kgen/kernels/writer.py, design rule 8): every
statement computing an IR node ends with `# %N op` naming it as the graph's text does, every
load names the buffer it reads (`# x`, `# %3`), and the kernel's docstring lists its nodes.

For each kernel (and each part of a combo kernel): every node it computes other than a view
(a view is an index expression in its readers) is named by some statement's comment with its
op, and every comment naming a node names one the kernel computes (or, on a load, reads): no
name is stale. A combo kernel keeps its parts' comments, in order. The property holds over
a few hand-written programs, the zoo's training steps and 50 random programs of the fuzzer.
"""
from __future__ import annotations

import dataclasses
import io
import tokenize

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.fuzz import analyze, generate
from kgen.fuzz.runner import make_state
from kgen.fuzz.source import module_source
from kgen.kernels.combo import flatten
from conftest import zoo_train_step


def comments(text: str) -> list:
    """(line, comment text without '# ') of every comment in `text`, in order."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [(t.line.strip(), t.string[1:].strip()) for t in tokens if t.type == tokenize.COMMENT]


def provenance(text: str, by_name: dict) -> list:
    """(line, node, op or None) of every comment naming a graph node: `%N op` (`%N op guard`
    on a pad's guard) on a statement computing it, a bare name on a load of it. Other
    comments (prose: `# split-K: ...`) name no node."""
    found = []
    for line, comment in comments(text):
        words = comment.split()
        if words and words[0] in by_name and len(words) <= 3:
            op = words[1] if len(words) > 1 else None
            if len(words) == 3:
                assert words[2] == "guard" and op == "pad", f"a malformed note: {line}"
            found.append((line, by_name[words[0]], op))
    return found


def check_kernel(kernel, graph) -> None:
    names = graph.names()
    by_name = {name: node for node, name in names.items()}
    notes = provenance(kernel.text, by_name)
    computes = {node for _, node, op in notes if op}
    for line, node, op in notes:
        if op is None:
            assert node in kernel.reads, f"{kernel.name}: {line!r} names {names[node]}, which it does not read"
            assert line.split("=", 1)[1].lstrip().startswith("tl.load("), f"{kernel.name}: {line!r} is no load"
        else:
            assert node in kernel.nodes, f"{kernel.name}: {line!r} names {names[node]}, which it does not compute"
            assert op == node.op, f"{kernel.name}: {line!r} names {names[node]}, a {node.op}"
    for node in kernel.nodes:
        assert graph.line(node) in kernel.text, f"{kernel.name}: its docstring does not list {graph.line(node)}"
        if node.opdef.kind != "view":
            assert node in computes, f"{kernel.name}: no statement says it computes {graph.line(node)}"


def check_program(fn) -> int:
    """Check every kernel of `fn`; returns how many it checked."""
    graph = fn.program.graph
    by_name = {name: node for node, name in graph.names().items()}
    count = 0
    for kernel in fn.kernels:
        for part in kernel.parts:
            check_kernel(part, graph)
        if kernel.parts:  # a combo rewrites its parts' code and keeps their comments
            want = [(node, op) for part in kernel.parts for _, node, op in provenance(part.text, by_name)]
            assert [(node, op) for _, node, op in provenance(kernel.text, by_name)] == want
        else:
            check_kernel(kernel, graph)
        count += len(kernel.parts or (kernel,))
    return count


def kinds(fn) -> set:
    return {k.kind for k in flatten(fn.kernels)}


# --- hand-written programs ---------------------------------------------------------------------
def test_elementwise_chain_and_pad():
    x, y = kgen.tensor("x", ("N", 4)), kgen.tensor("y", (4,))
    out = ops.exp(ops.relu(x * 2.0 + y)) - ops.pad(x, ((0, 0), (1, 2)))[:, 1:5]
    fn = kgen.function([x, y], out)
    assert check_program(fn) == 1
    assert "  # %1 mul" in fn.source and "  # x" in fn.source and "  # %5 pad guard" in fn.source


def test_reduction_with_prologue_and_epilogue():
    x = kgen.tensor("x", ("N", 16))
    fn = kgen.function([x], ops.sum(ops.exp(x), axis=1) * 2.0 + 1.0)
    assert check_program(fn) == 1 and kinds(fn) == {"reduction"}


def test_row_kernel_softmax():
    x = kgen.tensor("x", ("N", 16))
    fn = kgen.function([x], ops.softmax(x, axis=1))
    assert check_program(fn) == 1 and "rows" in fn.kernels[0].name


def test_matmul_with_bias_and_relu():
    x = kgen.tensor("x", ("N", 8))
    w, b = kgen.shared(np.ones((8, 4), np.float32), name="w"), kgen.shared(np.ones(4, np.float32), name="b")
    fn = kgen.function([x], ops.relu(x @ w + b))
    assert check_program(fn) == 1 and kinds(fn) == {"matmul"}
    lines = fn.source.splitlines()
    assert any(line.strip().startswith("acc = tl.dot(") and line.endswith("  # %0 matmul") for line in lines)
    assert any("tl.maximum(" in line and line.endswith("  # %2 relu") for line in lines)


def test_conv_with_epilogue():
    x = kgen.tensor("x", ("N", 2, 6, 6))
    w, b = kgen.shared(np.ones((3, 2, 3, 3), np.float32), name="w"), kgen.shared(np.ones(3, np.float32), name="b")
    fn = kgen.function([x], ops.relu(ops.conv2d(x, w, b, padding=1)))
    assert check_program(fn) == 1 and kinds(fn) == {"conv"}


@pytest.mark.parametrize("pool", [ops.max_pool2d, ops.avg_pool2d])
def test_pools_and_their_gradients(pool):
    x = kgen.tensor("x", ("N", 2, 6, 6))
    c = kgen.tensor("c", ("N", 2, 3, 3))
    out = pool(x, 2)
    (gx,) = kgen.grad(ops.sum(out * c), [x])
    fn = kgen.function([x, c], [ops.relu(out), gx])
    assert check_program(fn) >= 2 and "pool" in kinds(fn)


def test_combo_kernel_keeps_its_parts_comments():
    x = kgen.tensor("x", ("N", 8))
    w = kgen.shared(np.ones((8, 4), np.float32), name="w")
    fn = kgen.function([x], [ops.softmax(ops.relu(x @ w), axis=1), ops.sum(ops.exp(x), axis=1)])
    assert kinds(fn) == {"matmul", "reduction"} and fn.kernels[0].parts
    assert check_program(fn) == 2
    assert "p1_acc = tl.where(p1_mask, p1_acc + p1_v2, p1_acc)  # %9 sum" in fn.source  # inside its loop


def test_updated_shared_values():
    x, y = kgen.tensor("x", ("N",)), kgen.tensor("y", ("N",))
    w, b = kgen.shared(0.0, name="w"), kgen.shared(0.0, name="b")
    cost = ops.mse(w * x + b, y)
    gw, gb = kgen.grad(cost, [w, b])
    fn = kgen.function([x, y], cost, updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)])
    assert check_program(fn) >= 2


def test_dropout_names_its_random_numbers():
    x = kgen.tensor("x", ("N", 8))
    fn = kgen.function([x], ops.dropout(x, 0.5, seed=3))
    check_program(fn)
    assert any("tl.rand(" in line and "# %" in line for line in fn.source.splitlines())


@pytest.mark.parametrize("model, shows", [
    ("mlp64", ("side = tl.where(", "volatile=True)  # %", "row_acc0 = ", "_combo(")),
    ("cnn", ("conv2d_input_grad", "max_pool2d_grad", "side = tl.where(", "volatile=True)  # %"))])
def test_zoo_training_steps(model, shows):
    """Epilogues, side reductions (E4), row kernels in a matmul (E5), split-K, conv and pool
    gradients, optimizer updates and combo kernels, as the zoo's steps use them."""
    step = zoo_train_step(model)
    assert check_program(step) == len(flatten(step.kernels))
    assert all(text in step.source for text in shows)  # what the step is here to cover


def test_the_property_can_fail():
    """A kernel whose comment names a node it does not compute, or that leaves one of its
    nodes unnamed, fails the check."""
    x = kgen.tensor("x", ("N", 4))
    fn = kgen.function([x], ops.exp(ops.relu(x)))
    (kernel,) = fn.kernels
    graph = fn.program.graph
    for wrong in (kernel.text.replace("# %1 exp", "# %0 relu"), kernel.text.replace("  # %1 exp", "")):
        with pytest.raises(AssertionError):
            check_kernel(dataclasses.replace(kernel, text=wrong), graph)


# --- random programs ---------------------------------------------------------------------------
def test_random_programs():
    checked = 0
    for seed in range(50):
        program = generate(seed)
        ns = {"__name__": "kgen_fuzz_program", "STATE": make_state(program)}
        exec(compile(module_source(program, analyze(program)), f"<fuzz program {seed}>", "exec"), ns)
        checked += check_program(ns["make_function"]())
    assert checked >= 50
