"""The ONNX frontend's elementwise, reduction and product ops (ops_elementwise.py,
ops_reduce.py): single-node models in each attribute form and opset, checked against ONNX's
reference evaluator; gradients through imported models against torch; and a fixed list of
the conformance suite's cases."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kgen
from kgen import ops
from kgen.errors import DTypeError, OptionError
from kgen.frontends.onnx.backend import KgenBackend

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, opset, initializers=()):
    """A model of `nodes` whose inputs and outputs are (name, elem_type, shape) triples."""
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _single(op, inputs, outputs, opset, **attrs):
    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], **attrs)
    return _model([node], inputs, outputs, opset)


def _check(model, *arrays, rtol=1e-5, atol=1e-6):
    """kgen's outputs against ONNX's reference evaluator on the same inputs."""
    want = ReferenceEvaluator(model).run(None, {i.name: a for i, a in zip(model.graph.input, arrays)})
    got = KgenBackend.prepare(model).run(list(arrays))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- softmax: flattened to 2-D before opset 13, one axis from 13 ---------------------------------
def _softmax_2d(x, axis, log):
    """The opset 1-12 definition (ONNX's reference evaluator computes the opset 13 one for all)."""
    rows = x.reshape(int(np.prod(x.shape[:axis % x.ndim])), -1).astype(np.float64)
    shifted = rows - rows.max(1, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(1, keepdims=True)) if log else \
        np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    return out.reshape(x.shape).astype(np.float32)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, None])
def test_softmax_before_opset_13_flattens(op, axis):
    attrs = {} if axis is None else {"axis": axis}
    model = _single(op, [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, [2, 3, 4])], 11, **attrs)
    x = _x(2, 3, 4)
    (got,) = KgenBackend.prepare(model).run([x])
    np.testing.assert_allclose(got, _softmax_2d(x, 1 if axis is None else axis, op == "LogSoftmax"),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, -2, None])
def test_softmax_from_opset_13_along_one_axis(op, axis):
    attrs = {} if axis is None else {"axis": axis}
    model = _single(op, [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, [2, 3, 4])], 13, **attrs)
    _check(model, _x(2, 3, 4))


# --- reductions: axes as attribute, then as input ------------------------------------------------
@pytest.mark.parametrize("op,opset", [("ReduceSum", 11), ("ReduceMean", 13), ("ReduceMax", 13)])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, -1], 0), (None, 1), (None, 0)])
def test_reduce_axes_attribute(op, opset, axes, keepdims):
    attrs = {"keepdims": keepdims} if axes is None else {"axes": axes, "keepdims": keepdims}
    model = _single(op, [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, None)], opset, **attrs)
    _check(model, _x(2, 3, 4))


@pytest.mark.parametrize("op,opset", [("ReduceSum", 13), ("ReduceMean", 18), ("ReduceMax", 18)])
@pytest.mark.parametrize("axes,noop", [([1], 0), ([], 0), ([], 1), ([-2, 0], 0)])
def test_reduce_axes_input(op, opset, axes, noop):
    axes_init = helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0, noop_with_empty_axes=noop)
    model = _model([node], [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, None)], opset, [axes_init])
    _check(model, _x(2, 3, 4))


def test_reduce_mean_of_integers_truncates():
    model = _single("ReduceMean", [("x", TensorProto.INT32, [2, 3])], [("y", TensorProto.INT32, None)], 13,
                    axes=[1], keepdims=0)
    _check(model, np.array([[1, 2, 2], [-1, -2, -2]], np.int32))


def test_reduce_max_of_bools_is_any():
    model = _single("ReduceMax", [("x", TensorProto.BOOL, [2, 3])], [("y", TensorProto.BOOL, None)], 20,
                    keepdims=0)
    _check(model, np.array([[True, False, False], [False, False, False]]))


# --- products --------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [((4,), (4, 3)), ((2, 4), (4,)), ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_shapes(a, b):
    model = _single("MatMul", [("a", FLOAT, list(a)), ("b", FLOAT, list(b))], [("y", FLOAT, None)], 13)
    _check(model, _x(*a), _x(*b, seed=1), rtol=1e-4)


@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (3, 1), (3, 5)])
@pytest.mark.parametrize("attrs", [{}, {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, {"beta": 0.0}])
def test_gemm_forms(c_shape, attrs):
    a, b = ((4, 3) if attrs.get("transA") else (3, 4)), ((5, 4) if attrs.get("transB") else (4, 5))
    inputs = [("a", FLOAT, list(a)), ("b", FLOAT, list(b))] + ([] if c_shape is None else [("c", FLOAT, list(c_shape))])
    model = _single("Gemm", inputs, [("y", FLOAT, [3, 5])], 11, **attrs)
    arrays = [_x(*a), _x(*b, seed=1)] + ([] if c_shape is None else [_x(*c_shape, seed=2)])
    _check(model, *arrays, rtol=1e-4)


# --- dropout: the identity at inference ------------------------------------------------------
def test_dropout_opset_7_mask_has_the_input_dtype():
    """Before opset 10 the mask is of the input's type (ONNX's reference evaluator gives bools)."""
    model = _single("Dropout", [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4]), ("m", FLOAT, [3, 4])], 7, ratio=0.3)
    x = _x(3, 4)
    y, mask = KgenBackend.prepare(model).run([x])
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.float32 and (mask == 1.0).all()


@pytest.mark.parametrize("opset", [10, 12])
def test_dropout_inference_mask(opset):
    node = helper.make_node("Dropout", ["x"] + (["r"] if opset >= 12 else []), ["y", "m"],
                            **({"ratio": 0.3} if opset < 12 else {}))
    init = [helper.make_tensor("r", FLOAT, [], [0.3])] if opset >= 12 else []
    model = _model([node], [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4]), ("m", TensorProto.BOOL, [3, 4])], opset,
                   init)
    _check(model, _x(3, 4))


def test_training_dropout_with_ratio_zero_is_identity():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])
    init = [helper.make_tensor("r", FLOAT, [], [0.0]), helper.make_tensor("t", TensorProto.BOOL, [], [True])]
    model = _model([node], [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4]), ("m", TensorProto.BOOL, [3, 4])], 13, init)
    _check(model, _x(3, 4))


def test_training_dropout_is_refused():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")
    init = [helper.make_tensor("r", FLOAT, [], [0.5]), helper.make_tensor("t", TensorProto.BOOL, [], [True])]
    model = _model([node], [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4])], 13, init)
    with pytest.raises(OptionError, match="'drop'.*training_mode"):
        kgen.from_onnx(model)


# --- constants, casts, elementwise attribute forms -------------------------------------------
@pytest.mark.parametrize("attr,value,elem", [("value_float", 2.5, FLOAT), ("value_floats", [1.0, -2.0, 3.0], FLOAT),
                                             ("value_int", 3, TensorProto.INT64),
                                             ("value_ints", [1, 2, 3], TensorProto.INT64)])
def test_constant_value_forms(attr, value, elem):
    const = helper.make_node("Constant", [], ["c"], **{attr: value})
    add = helper.make_node("Add", ["x", "c"], ["y"])
    model = _model([const, add], [("x", elem, [2, 3])], [("y", elem, [2, 3])], 13)
    x = _x(2, 3) if elem == FLOAT else np.arange(6, dtype=np.int64).reshape(2, 3)
    _check(model, x)


def test_size_and_constant_of_shape_with_a_symbolic_batch():
    """Neither folds when the batch is a symbol: Size is a size expression, ConstantOfShape a
    broadcast constant."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", FLOAT, [1], [0.5])),
             helper.make_node("Size", ["x"], ["n"]), helper.make_node("CastLike", ["n", "x"], ["nf"]),
             helper.make_node("Mul", ["x", "nf"], ["xn"]), helper.make_node("Add", ["xn", "c"], ["y"])]
    model = _model(nodes, [("x", FLOAT, ["N", 3])], [("y", FLOAT, ["N", 3])], 15)
    module = kgen.from_onnx(model)
    x = kgen.tensor(*module.inputs[0])
    run = kgen.function([x], [module(x)])
    for batch in (2, 5):
        value = _x(batch, 3)
        got = run(value)
        got = got[0] if isinstance(got, (list, tuple)) else got
        np.testing.assert_allclose(np.asarray(got.detach().cpu() if hasattr(got, "detach") else got),
                                   value * 3 * batch + 0.5, rtol=1e-6)


@pytest.mark.parametrize("opset", [7, 13])
def test_clip_bounds_as_attributes_or_inputs(opset):
    if opset < 11:
        model = _single("Clip", [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4])], opset, min=-0.5, max=0.5)
    else:
        node = helper.make_node("Clip", ["x", "", "hi"], ["y"])
        model = _model([node], [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4])], opset,
                       [helper.make_tensor("hi", FLOAT, [], [0.25])])
    _check(model, _x(3, 4))


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}), ("Softplus", {}),
                                      ("Reciprocal", {}), ("Erf", {}), ("Sigmoid", {}), ("Relu", {})])
def test_unary_attribute_forms(op, attrs):
    model = _single(op, [("x", FLOAT, [3, 4])], [("y", FLOAT, [3, 4])], 13, **attrs)
    _check(model, _x(3, 4))


def test_cast_like_equal_less_where_max():
    nodes = [helper.make_node("CastLike", ["i", "x"], ["fi"]), helper.make_node("Equal", ["fi", "x"], ["eq"]),
             helper.make_node("Less", ["x", "fi"], ["lt"]), helper.make_node("Where", ["lt", "x", "fi"], ["w"]),
             helper.make_node("Max", ["w", "x", "fi"], ["m"]), helper.make_node("Cast", ["m"], ["y"], to=6)]
    model = _model(nodes, [("x", FLOAT, [2, 3]), ("i", TensorProto.INT64, [2, 3])],
                   [("eq", TensorProto.BOOL, [2, 3]), ("y", TensorProto.INT32, [2, 3])], 15)
    _check(model, np.array([[0.0, 1.5, -2.0], [3.0, 4.0, -5.5]], np.float32), np.array([[0, 1, -3], [3, 5, -5]]))


@pytest.mark.parametrize("base,exponent", [(TensorProto.INT32, TensorProto.INT32), (TensorProto.INT64, FLOAT),
                                           (FLOAT, TensorProto.INT64)])
def test_pow_has_the_base_type(base, exponent):
    model = _single("Pow", [("a", base, [2, 3]), ("b", exponent, [2, 3])], [("y", base, [2, 3])], 15)
    module = kgen.from_onnx(model)
    assert module(*[kgen.tensor(*spec) for spec in module.inputs]).dtype.name == \
        {FLOAT: "float32", TensorProto.INT32: "int32", TensorProto.INT64: "int64"}[base]
    a = np.array([[2, -3, 4], [5, 1, -2]], helper.tensor_dtype_to_np_dtype(base))
    _check(model, a, np.array([[3, 3, 2], [2, 7, 5]], helper.tensor_dtype_to_np_dtype(exponent)))


def test_integer_matmul_is_refused():
    model = _single("MatMul", [("a", TensorProto.INT32, [2, 3]), ("b", TensorProto.INT32, [3, 2])],
                    [("y", TensorProto.INT32, [2, 2])], 13)
    with pytest.raises(DTypeError, match="MatMul.*floating-point"):
        kgen.from_onnx(model)


# --- gradients through imported models, against torch ----------------------------------------
_GRADS = {
    "Softmax": (lambda: _single("Softmax", [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, [2, 3, 4])], 11, axis=1),
                lambda x: torch.softmax(x.reshape(2, 12), 1).reshape(2, 3, 4)),
    "Gemm": (lambda: _model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5)],
                            [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 3])], 13,
                            [helper.make_tensor("w", FLOAT, [3, 4], _x(3, 4, seed=5).reshape(-1)),
                             helper.make_tensor("c", FLOAT, [3], [0.1, 0.2, 0.3])]),
             lambda x: 0.5 * x @ torch.from_numpy(_x(3, 4, seed=5)).T + torch.tensor([0.1, 0.2, 0.3])),
    "ReduceMean": (lambda: _single("ReduceMean", [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, None)], 13, axes=[1]),
                   lambda x: x.mean(1, keepdim=True)),
    "LeakyRelu": (lambda: _single("LeakyRelu", [("x", FLOAT, [2, 3, 4])], [("y", FLOAT, [2, 3, 4])], 13, alpha=0.2),
                  lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
}


@pytest.mark.parametrize("op", sorted(_GRADS))
def test_gradient_matches_torch(op):
    build, twin = _GRADS[op]
    module = kgen.from_onnx(build())
    x = kgen.tensor(*module.inputs[0])
    y = module(x)
    weights = _x(*[int(d) for d in y.shape], seed=9)
    grad = kgen.grad(ops.sum(y * ops.constant(weights)), x)
    shape = tuple(int(d) for d in x.shape)
    value = _x(*shape, seed=3)
    got = kgen.function([x], [grad])(value)
    got = got[0] if isinstance(got, (list, tuple)) else got
    xt = torch.from_numpy(value).requires_grad_()
    (twin(xt) * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(np.asarray(got.detach().cpu() if hasattr(got, "detach") else got),
                               xt.grad.numpy(), rtol=1e-4, atol=1e-5)


# --- the conformance suite's own cases -------------------------------------------------------
CONFORMANCE = [
    "test_add_bcast", "test_div_bcast", "test_pow_types_float32_int32", "test_clip_default_inbounds",
    "test_max_one_input", "test_min_two_inputs", "test_where_long_example", "test_cast_FLOAT16_to_FLOAT",
    "test_relu_expanded_ver18", "test_elu_default_expanded_ver18", "test_softplus_example_expanded_ver18",
    "test_reduce_sum_empty_axes_input_noop", "test_reduce_sum_empty_set",
    "test_reduce_mean_default_axes_keepdims_example", "test_reduce_max_empty_set", "test_matmul_4d",
    "test_gemm_all_attributes", "test_gemm_default_scalar_bias",
    "test_softmax_axis_0_expanded_ver18", "test_logsoftmax_large_number", "test_dropout_default_mask_ratio",
    "test_training_dropout_zero_ratio_mask", "test_dropout_random_old", "test_constant", "test_identity",
]


@pytest.fixture(scope="module")
def node_cases():
    from kgen.frontends.onnx import conformance
    return {case.name: case for case in conformance.load_cases("node")}


@pytest.mark.parametrize("name", CONFORMANCE)
def test_conformance_case(node_cases, name):
    from kgen.frontends.onnx import conformance
    assert conformance.skip_reason(node_cases[name]) is None
    assert conformance.run_case(node_cases[name]) == ("pass", "")
