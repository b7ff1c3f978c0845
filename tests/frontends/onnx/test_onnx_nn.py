"""ONNX's neural-network layers through kgen (kgen/frontends/onnx/ops_nn.py): small hand-built
models against onnx's ReferenceEvaluator (every attribute form: pads before and after,
auto_pad, ceil_mode, dilations, count_include_pad, groups, 1-D to 3-D), gradients through
imported models against torch, what is refused, and a fixed list of conformance cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import kgen
from kgen import ops
from kgen.errors import OptionError
from kgen.frontends.onnx import conformance
from kgen.frontends.onnx.backend import KgenBackend


def _model(node, inputs: dict, outputs: list, initializers: dict | None = None, opset: int = 19):
    """A one-node model over float32 `inputs` (name -> shape), some given as initializers."""
    infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (initializers or {}).items()]
    graph = helper.make_graph([node], "g", infos, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(node, shapes: dict, outputs=("y",), opset: int = 19, positive=()):
    """kgen's outputs of a one-node model equal the reference evaluator's."""
    rng = np.random.default_rng(0)
    feeds = {n: (np.abs if n in positive else np.asarray)(rng.standard_normal(s)).astype(np.float32) + 0.0
             for n, s in shapes.items()}
    model = _model(node, shapes, list(outputs), opset=opset)
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = KgenBackend.prepare(model).run(feeds)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _node(op, inputs=("x",), outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


CONV = {
    "1d_groups_asym_pads_dilation": (dict(group=2, pads=[1, 2], dilations=[2], strides=[2]),
                                     {"x": (2, 4, 11), "w": (6, 2, 3), "b": (6,)}),
    "1d_same_lower_even_kernel": (dict(auto_pad="SAME_LOWER", strides=[2]), {"x": (1, 4, 9), "w": (3, 4, 4)}),
    "2d_depthwise_asym": (dict(group=3, pads=[0, 1, 2, 1], strides=[2, 1], dilations=[1, 2], kernel_shape=[3, 3]),
                          {"x": (2, 3, 8, 7), "w": (3, 1, 3, 3), "b": (3,)}),
    "2d_same_upper_strided": (dict(auto_pad="SAME_UPPER", strides=[3, 2]), {"x": (1, 2, 7, 6), "w": (4, 2, 4, 2)}),
    "2d_valid_dilated": (dict(auto_pad="VALID", dilations=[2, 2]), {"x": (1, 2, 7, 7), "w": (2, 2, 2, 3)}),
    "2d_symmetric": (dict(pads=[1, 1, 1, 1]), {"x": (2, 3, 5, 5), "w": (4, 3, 3, 3), "b": (4,)}),
}


@pytest.mark.parametrize("name", CONV)
def test_conv(name):
    attrs, shapes = CONV[name]
    _check(_node("Conv", list(shapes), **attrs), shapes)


MAX_POOL = {
    "1d_ceil_asym": dict(kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1),
    "1d_asym_unread_tail": dict(kernel_shape=[2], strides=[3], pads=[1, 0]),
    "2d_resnet": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "2d_asym_dilated_ceil": dict(kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 2, 0], dilations=[2, 1],
                                 ceil_mode=1),
    "2d_same_lower": dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER"),
    "3d_pads_dilated": dict(kernel_shape=[2, 3, 2], strides=[2, 1, 2], pads=[1, 0, 1, 1, 0, 0],
                            dilations=[1, 2, 1]),
}
SPATIAL = {1: (2, 3, 9), 2: (2, 3, 7, 8), 3: (1, 2, 5, 6, 5)}


@pytest.mark.parametrize("name", MAX_POOL)
def test_max_pool(name):
    attrs = MAX_POOL[name]
    _check(_node("MaxPool", **attrs), {"x": SPATIAL[len(attrs["kernel_shape"])]})


AVERAGE_POOL = {
    "1d_asym_ceil_count_pad": dict(kernel_shape=[3], strides=[2], pads=[2, 1], ceil_mode=1, count_include_pad=1),
    "1d_asym_ceil": dict(kernel_shape=[3], strides=[2], pads=[2, 1], ceil_mode=1),
    "2d_symmetric": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "2d_dilated": dict(kernel_shape=[2, 3], pads=[1, 1, 1, 1], dilations=[2, 2]),
    "2d_same_upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    "3d_dilated_count_pad": dict(kernel_shape=[2, 2, 3], strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 1],
                                 dilations=[2, 1, 1], count_include_pad=1),
}


@pytest.mark.parametrize("name", AVERAGE_POOL)
def test_average_pool(name):
    attrs = AVERAGE_POOL[name]
    _check(_node("AveragePool", **attrs), {"x": SPATIAL[len(attrs["kernel_shape"])]})


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(storage_order):
    """ONNX's indices count from the start of the whole tensor, batch and channel included."""
    node = _node("MaxPool", outputs=("y", "i"), kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 0],
                 storage_order=storage_order)
    model = _model(node, {"x": (2, 3, 5, 4)}, ["y"])
    model.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, None))
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})
    got = KgenBackend.prepare(model).run({"x": x})
    np.testing.assert_allclose(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("op, shape", [("GlobalAveragePool", (2, 3, 7)), ("GlobalMaxPool", (2, 3, 4, 5))])
def test_global_pools(op, shape):
    _check(_node(op), {"x": shape})


def test_batch_norm_inference_5d():
    shapes = {"x": (2, 3, 2, 3, 4), "s": (3,), "b": (3,), "m": (3,), "v": (3,)}
    _check(_node("BatchNormalization", list(shapes), epsilon=1e-3), shapes, positive=("v",))


def test_batch_norm_training_running_statistics():
    shapes = {"x": (4, 3, 5), "s": (3,), "b": (3,), "m": (3,), "v": (3,)}
    node = _node("BatchNormalization", list(shapes), ("y", "rm", "rv"), training_mode=1, momentum=0.8)
    _check(node, shapes, outputs=("y", "rm", "rv"), opset=15, positive=("v",))


def test_batch_norm_statistics_are_buffers():
    """An imported model keeps the running mean and variance as buffers, not trained."""
    stats = {"m": np.zeros(3), "v": np.ones(3), "s": np.ones(3), "b": np.zeros(3)}
    node = _node("BatchNormalization", ["x", "s", "b", "m", "v"])
    module = kgen.from_onnx(_model(node, {"x": (2, 3, 4)}, ["y"], initializers=stats))
    assert sorted(n for n, _ in module.named_buffers()) == ["m", "v"]
    assert sorted(n for n, _ in module.named_parameters()) == ["b", "s"]


@pytest.mark.parametrize("axis, shapes", [(1, {"x": (2, 3, 4), "s": (3, 4)}),
                                          (-2, {"x": (2, 3, 4, 5), "s": (5,), "b": (4, 5)})])
def test_layer_norm_with_statistics(axis, shapes):
    node = _node("LayerNormalization", list(shapes), ("y", "mean", "inv"), axis=axis, epsilon=1e-3)
    _check(node, shapes, outputs=("y", "mean", "inv"))


@pytest.mark.parametrize("node, shape, words", [
    (_node("Conv", ["x", "w"]), {"x": (1, 1, 3, 3, 3), "w": (1, 1, 2, 2, 2)}, "1-D and 2-D"),
    (_node("MaxPool", outputs=("y", "i"), kernel_shape=[2, 2], pads=[0, 0, 1, 1]), {"x": (1, 1, 4, 4)}, "Indices"),
    (_node("LayerNormalization", ["x", "s"], stash_type=10), {"x": (2, 3), "s": (3,)}, "stash_type"),
])
def test_refusals_name_the_node(node, shape, words):
    with pytest.raises(OptionError, match=f"{node.op_type} node.*{words}"):
        kgen.from_onnx(_model(node, shape, ["y"]))


# --- gradients through imported models, against torch ----------------------------------------
def _grads(node, shapes: dict, weights: dict, torch_fn, opset: int = 19):
    """kgen.grad of sum(y * r) with respect to x and each weight (initializers of the model)
    equals torch's for torch_fn(x, *weights)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shapes["x"]).astype(np.float32)
    weights = {n: v.astype(np.float32) for n, v in weights.items()}
    module = kgen.from_onnx(_model(node, shapes, ["y"], initializers=weights, opset=opset))
    xs = kgen.tensor(*module.inputs[0])
    y = module(xs)
    r = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    params = dict(module.named_parameters())
    loss = ops.sum(ops.mul(y, ops.constant(r)))
    got = kgen.function([xs], kgen.grad(loss, [xs] + [params[n] for n in weights]))(x)
    leaves = [torch.tensor(v, requires_grad=True) for v in [x, *weights.values()]]
    (torch_fn(*leaves) * torch.tensor(r)).sum().backward()
    for g, leaf in zip(got, leaves):
        np.testing.assert_allclose(np.asarray(g), leaf.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv_asymmetric_pads_gradient():
    rng = np.random.default_rng(3)
    node = _node("Conv", ["x", "w", "b"], pads=[0, 1, 2, 1], strides=[2, 1])
    _grads(node, {"x": (2, 3, 6, 5)}, {"w": rng.standard_normal((4, 3, 3, 2)), "b": rng.standard_normal(4)},
           lambda x, w, b: F.conv2d(F.pad(x, (1, 1, 0, 2)), w, b, stride=(2, 1)))


def test_max_pool_asymmetric_pads_gradient():
    node = _node("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0])
    _grads(node, {"x": (1, 2, 7, 6)}, {},
           lambda x: F.max_pool2d(F.pad(x, (1, 0, 0, 2), value=float("-inf")), 3, 2))


def test_average_pool_excluding_pads_gradient():
    node = _node("AveragePool", kernel_shape=[3], strides=[2], pads=[2, 1], ceil_mode=1)

    def torch_fn(x):
        total = F.avg_pool1d(F.pad(x, (2, 1)), 3, 2, ceil_mode=True) * 3
        counts = F.avg_pool1d(F.pad(torch.ones_like(x), (2, 1)), 3, 2, ceil_mode=True) * 3
        return total / counts
    _grads(node, {"x": (2, 3, 8)}, {}, torch_fn)


def test_batch_norm_training_gradient():
    rng = np.random.default_rng(4)
    stats = {"s": rng.standard_normal(3), "b": rng.standard_normal(3)}
    node = _node("BatchNormalization", ["x", "s", "b", "m", "v"], training_mode=1)
    model = _model(node, {"x": (4, 3, 5)}, ["y"], initializers={**stats, "m": np.zeros(3), "v": np.ones(3)},
                   opset=15)
    module = kgen.from_onnx(model)
    xs = kgen.tensor(*module.inputs[0])
    x, r = rng.standard_normal((4, 3, 5)).astype(np.float32), rng.standard_normal((4, 3, 5)).astype(np.float32)
    params = dict(module.named_parameters())
    loss = ops.sum(ops.mul(module(xs), ops.constant(r)))
    got = kgen.function([xs], kgen.grad(loss, [xs, params["s"], params["b"]]))(x)
    leaves = [torch.tensor(v.astype(np.float32), requires_grad=True) for v in (x, stats["s"], stats["b"])]
    (F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True) * torch.tensor(r)).sum().backward()
    for g, leaf in zip(got, leaves):
        np.testing.assert_allclose(np.asarray(g), leaf.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_layer_norm_gradient():
    rng = np.random.default_rng(5)
    node = _node("LayerNormalization", ["x", "s", "b"], axis=1)
    _grads(node, {"x": (2, 3, 4)}, {"s": rng.standard_normal((3, 4)), "b": rng.standard_normal((3, 4))},
           lambda x, s, b: F.layer_norm(x, (3, 4), s, b))


# --- ONNX's own cases -------------------------------------------------------------------------
CASES = [
    "test_basic_conv_with_padding", "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
    "test_maxpool_2d_precomputed_same_upper", "test_maxpool_2d_ceil_output_size_reduce_by_one",
    "test_maxpool_with_argmax_2d_precomputed_strides", "test_maxpool_1d_default", "test_maxpool_3d_dilations",
    "test_averagepool_2d_pads", "test_averagepool_2d_precomputed_pads_count_include_pad",
    "test_averagepool_2d_ceil_last_window_starts_on_pad", "test_averagepool_2d_same_lower",
    "test_averagepool_2d_dilations", "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
    "test_globalaveragepool", "test_batchnorm_epsilon", "test_batchnorm_example_training_mode",
    "test_layer_normalization_4d_axis_negative_2", "test_layer_normalization_3d_axis0_epsilon",
    "test_layer_normalization_default_axis",
]


@pytest.fixture(scope="module")
def node_cases():
    return {case.name: case for case in conformance.load_cases("node") if case.name in CASES}


@pytest.mark.parametrize("name", CASES)
def test_conformance_case(name, node_cases):
    assert conformance.run_case(node_cases[name]) == ("pass", "")
