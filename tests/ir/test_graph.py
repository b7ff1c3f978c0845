"""Node and Graph: text form, order, the verifier, and the errors users meet first (unknown
ops, immutability, truth values, kgen.grad misuse, reference inputs)."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.ir import shapes
from ir_helpers import random_array


# --- text form --------------------------------------------------------------------------------
def test_text_form_of_a_tiny_graph():
    x, w = kgen.tensor("x", ("N", 3)), kgen.tensor("w", (3,))
    y = ops.sum(x * w, 1)
    graph = kgen.Graph([x, w], [y])
    assert str(graph).splitlines() == [
        "graph(x: f32[N,3], w: f32[3]) {",
        "  %0: f32[N,3] = mul x w",
        "  %1: f32[N] = sum[axes=(1,), keepdims=False] %0",
        "  return %1",
        "}",
    ]
    assert graph.line(y) == "%1: f32[N] = sum[axes=(1,), keepdims=False] %0"
    assert repr(graph) == "<kgen Graph: 2 inputs, 4 nodes, 1 outputs>"


def test_text_form_of_attrs_constants_and_casts():
    x = kgen.tensor("x", ("N", 3), "float16")
    r = ops.reshape(x * 2.0, (-1,))
    c = ops.cast(r, "float32")
    t = ops.transpose(x)
    arr = ops.constant(np.ones((2, 3), np.float32))
    io = ops.iota((2, 3), 1)
    m = ops.max(x, (0, 1), keepdims=True)
    graph = kgen.Graph([x], [c, t, arr, io, m, x > 0.5])
    assert str(graph).splitlines() == [
        "graph(x: f16[N,3]) {",
        "  %0: f16[] = constant 2.0",
        "  %1: f16[N,3] = mul x %0",
        "  %2: f16[3*N] = reshape[shape=(3*N,)] %1",
        "  %3: f32[3*N] = cast[dtype=float32] %2",
        "  %4: f16[3,N] = transpose[perm=(1, 0)] x",
        "  %5: f32[2,3] = constant <array float32[2, 3]>",
        "  %6: i32[2,3] = iota[shape=(2, 3), axis=1, dtype=int32]",
        "  %7: f16[1,1] = max[axes=(0, 1), keepdims=True] x",
        "  %8: f16[] = constant 0.5",
        "  %9: bool[N,3] = greater x %8",
        "  return %3, %4, %5, %6, %7, %9",
        "}",
    ]


def test_format_node_without_names_and_reprs():
    x = kgen.tensor("x", (2,), "int32")
    y = -x
    assert kgen.ir.format_node(x) == "x: i32[2] = input"
    assert kgen.ir.format_node(y) == "<neg>: i32[2] = neg x"
    assert repr(x) == "<kgen input 'x': i32[2]>"
    assert repr(y) == "<kgen neg: i32[2]>"
    assert x.type_str() == "i32[2]" and kgen.tensor("s", ()).type_str() == "f32[]"


def test_text_form_names_unused_inputs_and_shares_subexpressions():
    x, unused = kgen.tensor("x", (2,)), kgen.tensor("unused", (5,))
    e = ops.exp(x)
    graph = kgen.Graph([x, unused], [e + e, e])
    text = str(graph)
    assert text.count("= exp x") == 1
    assert "%1: f32[2] = add %0 %0" in text
    assert text.splitlines()[-2] == "  return %1, %0"
    assert graph.nodes[0] is unused  # declared but unreached inputs come first
    assert unused in graph.users() and graph.users()[unused] == []
    assert set(graph.users()[e]) == {graph.outputs[0]}  # one user (listed once per operand slot)


# --- order --------------------------------------------------------------------------------------
def _assert_topological(order):
    position = {n: k for k, n in enumerate(order)}
    assert len(position) == len(order), "a node appears twice"
    for n in order:
        for i in n.inputs:
            assert position[i] < position[n], f"{n!r} comes before its input {i!r}"


def test_topological_order(rng):
    x, w = kgen.tensor("x", (3, 4)), kgen.tensor("w", (4, 2))
    h = ops.relu(x @ w)
    y = ops.softmax(h) * ops.sum(h) + ops.mean(x)
    g = kgen.grad(ops.sum(y), [x, w])
    graph = kgen.Graph([x, w], [y] + g)
    _assert_topological(graph.nodes)
    order = kgen.ir.topological_order([y])
    _assert_topological(order)
    assert order[-1] is y
    assert set(order) <= set(graph.nodes)


def test_topological_order_of_a_deep_graph_is_iterative():
    x = kgen.tensor("x", (2,))
    y = x
    for _ in range(5000):  # far beyond Python's recursion limit
        y = y + 1.0
    order = kgen.ir.topological_order([y])
    assert order[-1] is y and len(order) == 5000 * 2 + 1
    _assert_topological(order)
    graph = kgen.Graph([x], [y])
    kgen.ir.verify(graph)
    (got,) = kgen.reference.run(graph, {"x": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(got, [5001.0, 5002.0])


# --- verify ---------------------------------------------------------------------------------------
def test_verify_passes_on_good_graphs(rng):
    x, y = kgen.tensor("x", ("N", 4)), kgen.tensor("y", ("N",), "int64")
    w = kgen.tensor("w", (4, 3))
    loss = ops.cross_entropy(x @ w, y)
    graph = kgen.Graph([x, y, w], [loss] + kgen.grad(loss, [x, w]))
    assert kgen.ir.verify(graph) is graph


def test_verify_rejects_an_output_depending_on_an_unlisted_input():
    x, z = kgen.tensor("x", (2, 3)), kgen.tensor("z", (2, 3))
    graph = kgen.Graph([x], [x + z])
    with pytest.raises(kgen.VerifyError, match=r"z: f32\[2,3\] = input.*not one of the graph's inputs"):
        kgen.ir.verify(graph)


def test_verify_rejects_duplicate_input_names():
    a, b = kgen.tensor("x", (2,)), kgen.tensor("x", (2,))
    with pytest.raises(kgen.VerifyError, match="x"):
        kgen.ir.verify(kgen.Graph([a, b], [a + b]))


def test_verify_rejects_a_node_whose_type_disagrees_with_its_op():
    x = kgen.tensor("x", (3,))
    wrong = kgen.Node("exp", (x,), dtype="float16", shape=(3,))  # explicit types skip inference
    with pytest.raises(kgen.VerifyError, match=r"exp x.*its op gives f32\[3\]"):
        kgen.ir.verify(kgen.Graph([x], [wrong]))
    wrong_shape = kgen.Node("exp", (x,), dtype="float32", shape=(4,))
    with pytest.raises(kgen.VerifyError, match="f32"):
        kgen.ir.verify(kgen.Graph([x], [wrong_shape]))


def test_verify_rejects_a_node_its_op_cannot_type():
    x, y = kgen.tensor("x", (3,)), kgen.tensor("y", (4,))
    bad = kgen.Node("add", (x, y), dtype="float32", shape=(3,))
    with pytest.raises(kgen.VerifyError, match="broadcast"):
        kgen.ir.verify(kgen.Graph([x, y], [bad]))


def test_graph_inputs_must_be_input_nodes():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.KgenError, match="input nodes"):
        kgen.Graph([x * 2.0], [x])


# --- nodes ------------------------------------------------------------------------------------------
def test_unknown_op_lists_known_ops():
    with pytest.raises(kgen.UnknownOpError) as info:
        kgen.Node("softplus", ())
    message = str(info.value)
    assert "'softplus'" in message
    for name in kgen.ir.TABLE:
        assert name in message
    assert isinstance(info.value, KeyError)  # and still a KeyError
    assert not message.startswith('"')  # printed plainly, not KeyError-quoted
    with pytest.raises(kgen.UnknownOpError):
        kgen.ir.lookup("softplus")


def test_register_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        kgen.ir.register(kgen.ir.TABLE["add"])


@pytest.mark.parametrize("attr", ["op", "inputs", "attrs", "dtype", "shape", "id", "anything"])
def test_nodes_are_immutable(attr):
    x = kgen.tensor("x", (3,))
    y = x + 1.0
    with pytest.raises(AttributeError, match="immutable"):
        setattr(y, attr, None)
    assert y.op == "add" and y.inputs[0] is x


def test_node_attributes_cannot_be_deleted():
    y = kgen.tensor("x", (3,)) + 1.0
    with pytest.raises(AttributeError, match="immutable"):
        del y.op


def test_node_truth_value_is_an_error():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.KgenError, match="symbolic"):
        bool(x)
    with pytest.raises(kgen.KgenError):
        if x > 0:
            pass
    with pytest.raises(kgen.KgenError):
        x and x


def test_nodes_compare_and_hash_by_identity():
    x = kgen.tensor("x", (3,))
    a, b = x + 1.0, x + 1.0
    assert a is not b and (a == a) and not (a == b)
    assert len({a, b, a}) == 2
    assert {a: 1}[a] == 1
    assert a.id != b.id


def test_node_construction_errors():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.KgenError, match="takes 2 inputs, got 1"):
        kgen.Node("add", (x,))
    with pytest.raises(kgen.KgenError, match="must be kgen nodes"):
        kgen.Node("add", (x, 1.0))
    with pytest.raises(kgen.KgenError, match="identifier"):
        kgen.tensor("not a name", (3,))
    with pytest.raises(kgen.KgenError, match="at least one operand"):
        ops.add(1.0, 2.0)


def test_op_errors_name_the_op_and_operand_types():
    with pytest.raises(kgen.ShapeError, match=r"^add\(f32\[2\], f32\[3\]\)"):
        kgen.tensor("a", (2,)) + kgen.tensor("b", (3,))


def test_node_properties():
    x = kgen.tensor("x", ("N", 3), "bfloat16")
    assert x.ndim == 2 and x.name == "x" and x.opdef is kgen.ir.TABLE["input"]
    assert x.shape == (shapes.size_symbol("N"), 3) and x.dtype is kgen.bfloat16
    assert (x + 1.0).name is None


# --- grad misuse ---------------------------------------------------------------------------------------
def test_grad_of_non_scalar_without_seed():
    x = kgen.tensor("x", (2, 3))
    with pytest.raises(kgen.GradError, match="seed") as info:
        kgen.grad(x * 2.0, x)
    assert "f32[2,3]" in str(info.value)


def test_grad_with_respect_to_an_int_tensor():
    x, i = kgen.tensor("x", (3,)), kgen.tensor("i", (3,), "int32")
    with pytest.raises(kgen.GradError, match=r"i: i32\[3\].*floating"):
        kgen.grad(ops.sum(x * ops.cast(i, "float32")), [x, i])


def test_grad_of_an_int_output():
    i = kgen.tensor("i", (3,), "int32")
    with pytest.raises(kgen.GradError, match="floating"):
        kgen.grad(ops.sum(i), i)


def test_grad_of_non_nodes():
    x = kgen.tensor("x", (3,))
    with pytest.raises(kgen.GradError, match="kgen tensor"):
        kgen.grad(3.0, x)
    with pytest.raises(kgen.GradError, match="kgen tensors"):
        kgen.grad(ops.sum(x), [x, np.ones(3)])


# --- reference inputs ------------------------------------------------------------------------------------
@pytest.fixture
def xz_graph():
    x, z = kgen.tensor("x", ("N", 3)), kgen.tensor("z", (3,))
    return kgen.Graph([x, z], [x * z])


def test_reference_missing_input(xz_graph, rng):
    with pytest.raises(kgen.InputError, match=r"missing inputs \['z'\]"):
        kgen.reference.run(xz_graph, {"x": random_array(rng, (2, 3))})


def test_reference_extra_input(xz_graph, rng):
    arrays = {"x": random_array(rng, (2, 3)), "z": random_array(rng, (3,)), "q": random_array(rng, (3,))}
    with pytest.raises(kgen.InputError, match=r"unknown inputs \['q'\]"):
        kgen.reference.run(xz_graph, arrays)


@pytest.mark.parametrize("bad", [(4,), (3, 1), (1, 3)], ids=str)
def test_reference_wrong_shape_names_the_input(xz_graph, bad, rng):
    with pytest.raises(kgen.ShapeError, match=r"input 'z'.*expected shape \[3\]"):
        kgen.reference.run(xz_graph, {"x": random_array(rng, (2, 3)), "z": random_array(rng, bad)})


def test_reference_wrong_rank_names_the_input(xz_graph, rng):
    with pytest.raises(kgen.ShapeError, match=r"input 'x'.*rank 2.*rank 1"):
        kgen.reference.run(xz_graph, {"x": random_array(rng, (6,)), "z": random_array(rng, (3,))})


def test_reference_sequence_inputs(xz_graph, rng):
    a, b = random_array(rng, (2, 3)), random_array(rng, (3,))
    (got,) = kgen.reference.run(xz_graph, [a, b])
    np.testing.assert_allclose(got, a.astype(np.float64) * b)
    with pytest.raises(kgen.InputError, match=r"expected 2 inputs \(x, z\), got 1"):
        kgen.reference.run(xz_graph, [a])


def test_reference_undeclared_input_is_named(rng):
    x, z = kgen.tensor("x", (3,)), kgen.tensor("z", (3,))
    graph = kgen.Graph([x], [x + z])
    with pytest.raises(kgen.InputError, match="'z'"):
        kgen.reference.run(graph, {"x": random_array(rng, (3,))})


def test_reference_evaluate_gives_every_node(rng):
    x = kgen.tensor("x", (3,))
    h = ops.exp(x)
    y = ops.sum(h)
    graph = kgen.Graph([x], [y])
    a = random_array(rng, (3,))
    values = kgen.reference.evaluate(graph, {"x": a})
    assert set(values) == set(graph.nodes)
    np.testing.assert_allclose(values[h], np.exp(a.astype(np.float64)))
    np.testing.assert_allclose(values[y], np.exp(a.astype(np.float64)).sum())
