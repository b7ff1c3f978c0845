"""ONNX shape and data-movement ops (kgen/frontends/onnx/ops_shape.py) in each attribute
form and opset the standard has had: small hand-built models checked against ONNX's own
reference evaluator, gradients through gathers, reversed slices and reflected pads against
torch, and a fixed list of the conformance suite's cases."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import kgen  # noqa: E402
from kgen.frontends.onnx.backend import KgenBackend  # noqa: E402

RNG = np.random.default_rng(0)
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _model(op, inputs: dict, known: dict, opset: int, outputs: int = 1, **attrs) -> onnx.ModelProto:
    """One `op` node reading `inputs` (graph inputs, by name) and `known` (initializers:
    shapes, axes, pads), in that order of names; None in `known` leaves an optional input out."""
    names = list(inputs) + [name if value is not None else "" for name, value in known.items()]
    outs = [f"y{i}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, name="the_node", **attrs)], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in known.items() if v is not None])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(op, inputs: dict, known: dict | None = None, opset: int = 18, outputs: int = 1, want=None, **attrs):
    """kgen's outputs equal `want`, or else the reference evaluator's, in dtype, shape and value."""
    model = _model(op, inputs, known or {}, opset, outputs, **attrs)
    want = ReferenceEvaluator(model).run(None, inputs) if want is None else want
    got = KgenBackend.prepare(model).run(inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_array_equal(g, w)


def _x(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype) if dtype == np.float32 else \
        RNG.integers(-50, 50, shape).astype(dtype)


def _i64(*values):
    return np.array(values, np.int64)


# --- views ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset, shape, allowzero", [(7, (0, -1), 0), (14, (2, 0, 4, 1), 0), (14, (-1, 4), 1)])
def test_reshape_zero_and_minus_one(opset, shape, allowzero):
    attrs = {"allowzero": allowzero} if opset >= 14 else {}
    _check("Reshape", {"x": _x(3, 2, 4)} if opset == 7 else {"x": _x(2, 3, 4)}, {"s": _i64(*shape)}, opset, **attrs)


@pytest.mark.parametrize("axis", [0, 1, 3, 4, -1, -4])
def test_flatten_axes(axis):
    _check("Flatten", {"x": _x(2, 3, 1, 5)}, axis=axis)


@pytest.mark.parametrize("perm", [None, [1, 0, 2], [2, 0, 1]])
def test_transpose(perm):
    _check("Transpose", {"x": _x(2, 3, 4, dtype=np.int64)}, **({} if perm is None else {"perm": perm}))


def test_squeeze_and_unsqueeze_axes_as_attribute_and_input():
    x = _x(1, 3, 1, 5)
    _check("Squeeze", {"x": x}, opset=11, axes=[0, -2])
    _check("Squeeze", {"x": x}, {"axes": _i64(-4)}, opset=13)
    _check("Squeeze", {"x": x}, opset=13)  # no axes: every axis of size 1
    _check("Unsqueeze", {"x": _x(3, 4)}, opset=11, axes=[-1, 0])
    _check("Unsqueeze", {"x": _x(3, 4)}, {"axes": _i64(3, -5, 1)}, opset=13)


@pytest.mark.parametrize("x_shape, shape", [((3, 1), (2, 1, 6)), ((3, 1), (3, 4)), ((2, 3), (1,)), ((1, 3), (4, 1))])
def test_expand_broadcasts_both_ways(x_shape, shape):
    _check("Expand", {"x": _x(*x_shape)}, {"shape": _i64(*shape)})


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_concat_dtypes_and_empty_parts(dtype):
    a, b = _x(2, 3, dtype=np.int64).astype(dtype), _x(2, 4, dtype=np.int64).astype(dtype)
    _check("Concat", {"a": a, "b": b, "c": np.zeros((2, 0), dtype)}, axis=-1)


# --- split ------------------------------------------------------------------------------------
def test_split_forms_by_opset():
    x = _x(4, 7)
    _check("Split", {"x": x}, opset=11, outputs=3, axis=1, split=[2, 4, 1])
    _check("Split", {"x": x}, {"split": _i64(1, 3)}, opset=13, outputs=2, axis=0)
    _check("Split", {"x": x[:, :6]}, opset=13, outputs=3, axis=-1)  # equal parts, as many as outputs
    _check("Split", {"x": x}, opset=18, outputs=3, axis=1, num_outputs=3)  # 3, 3, 1: the last is shorter


def test_split_into_unequal_parts_without_sizes_is_refused():
    model = _model("Split", {"x": _x(7)}, {}, 13, outputs=2)
    with pytest.raises(kgen.ShapeError, match="Split node 'the_node': axis 0 of size 7 does not split into 2"):
        KgenBackend.prepare(model).run({"x": _x(7)})


# --- slice ------------------------------------------------------------------------------------
@pytest.mark.parametrize("starts, ends, axes, steps", [
    ((1, 0), (3, INT64_MAX), (0, 2), (1, 2)),
    ((-1, 20), (INT64_MIN, -100), (1, 0), (-1, -3)),  # reversed; bounds clamp
    ((5, -2), (1, 0), (-1, -3), (-2, -1)),
    ((0,), (-1,), None, None),
])
def test_slice_inputs(starts, ends, axes, steps):
    known = {"starts": _i64(*starts), "ends": _i64(*ends), "axes": None if axes is None else _i64(*axes),
             "steps": None if steps is None else _i64(*steps)}
    if axes is None:
        known.pop("steps"), known.pop("axes")
    _check("Slice", {"x": _x(20, 10, 6)}, known, opset=13)


def test_slice_attributes_before_opset_10():
    _check("Slice", {"x": _x(5, 6)}, opset=9, starts=[1, -4], ends=[INT64_MAX, 5], axes=[0, 1])
    _check("Slice", {"x": _x(5, 6, dtype=np.int32)}, opset=9, starts=[2], ends=[100])


# --- pad --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
@pytest.mark.parametrize("pads", [(1, 0, 2, 3), (2, -1, -1, 2)])
def test_pad_modes_and_negative_pads(mode, pads):
    """A negative pad crops that side (the reference evaluator refuses those, so NumPy is the
    oracle: crop, then pad)."""
    x = _x(4, 5)
    cropped = x[max(-pads[0], 0):4 - max(-pads[2], 0), max(-pads[1], 0):5 - max(-pads[3], 0)]
    widths = [(max(pads[0], 0), max(pads[2], 0)), (max(pads[1], 0), max(pads[3], 0))]
    want = np.pad(cropped, widths, mode, **({"constant_values": 1.5} if mode == "constant" else {}))
    _check("Pad", {"x": x}, {"pads": _i64(*pads), "value": np.array(1.5, np.float32)}, 13, want=[want], mode=mode)


def test_pad_forms_by_opset():
    x = _x(2, 3, 4, dtype=np.int32)
    _check("Pad", {"x": x}, opset=7, pads=[0, 1, 0, 0, 2, 1], value=7.0)
    _check("Pad", {"x": x}, opset=10, mode="reflect", pads=[0, 0, 2, 0, 0, 1])
    _check("Pad", {"x": x}, {"pads": _i64(1, 1, 2, 0), "value": None, "axes": _i64(-1, 0)}, opset=18)
    _check("Pad", {"x": x.astype(np.float32)}, {"pads": _i64(0, 2, 1, 1), "value": np.array(-2.0, np.float32),
                                               "axes": _i64(2, 1)}, opset=18, mode="edge")


def test_pad_an_unknown_mode_is_refused():
    model = _model("Pad", {"x": _x(3)}, {"pads": _i64(1, 1)}, 13, mode="mirror")
    with pytest.raises(kgen.OptionError, match="Pad node 'the_node': mode 'mirror'"):
        KgenBackend.prepare(model).run({"x": _x(3)})


# --- gather -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("axis, indices", [(0, np.array(-1)), (1, _i64(2, -3, 2)), (-1, np.array([[0, 3], [-1, 1]]))])
def test_gather_indices_as_a_tensor(dtype, axis, indices):
    data = _x(3, 4, 4, dtype=np.int64).astype(dtype)
    _check("Gather", {"data": data, "indices": indices.astype(np.int64)}, axis=axis)


@pytest.mark.parametrize("indices", [np.array(1), _i64(3, 2, 1, 0), _i64(0, 0, 3, 1, 2), np.arange(12) % 4])
def test_gather_indices_known_at_import(indices):
    _check("Gather", {"data": _x(2, 4, 3)}, {"indices": indices.astype(np.int64)}, axis=1)


# --- gradients ----------------------------------------------------------------------------------
def _grad(model, x: np.ndarray, seed: np.ndarray):
    """d(sum(seed * model(x)))/dx through kgen."""
    module = kgen.from_onnx(model)
    name, _, dtype = module.inputs[0]
    t = kgen.tensor(name, x.shape, dtype)
    y = module(t)
    loss = kgen.ops.sum(kgen.ops.mul(y, kgen.ops.constant(seed)))
    return np.asarray(kgen.function([t], [kgen.grad(loss, t)])(x)[0])


def test_gradients_match_torch():
    import torch
    table = _x(6, 3)
    indices = _i64(4, 0, 4, -1, 2)  # repeated rows add their gradients
    gather = _model("Gather", {"data": table}, {"indices": indices}, 13)
    seed = _x(5, 3)
    t = torch.tensor(table, requires_grad=True)
    (t[torch.tensor(indices) % 6] * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(_grad(gather, table, seed), t.grad.numpy(), rtol=1e-6)

    x = _x(2, 5)
    pad = _model("Pad", {"x": x}, {"pads": _i64(0, 3, 0, 2)}, 13, mode="reflect")
    seed = _x(2, 10)
    t = torch.tensor(x, requires_grad=True)
    (torch.nn.functional.pad(t, (3, 2), mode="reflect") * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(_grad(pad, x, seed), t.grad.numpy(), rtol=1e-6)

    x = _x(12, 3)
    flip = _model("Slice", {"x": x}, {"starts": _i64(-2), "ends": _i64(INT64_MIN), "axes": _i64(0),
                                      "steps": _i64(-1)}, 13)
    seed = _x(11, 3)
    t = torch.tensor(x, requires_grad=True)
    (torch.flip(t[:11], (0,)) * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(_grad(flip, x, seed), t.grad.numpy(), rtol=1e-6)


# --- the conformance suite's own cases ------------------------------------------------------------
CASES = """
test_reshape_allowzero_reordered test_reshape_negative_extended_dims test_reshape_zero_and_negative_dim
test_flatten_axis0 test_flatten_negative_axis1 test_transpose_default test_transpose_all_permutations_4
test_squeeze_negative_axes test_unsqueeze_unsorted_axes test_unsqueeze_negative_axes test_expand_dim_changed
test_concat_3d_axis_negative_2 test_split_1d_uneven_split_opset18 test_split_zero_size_splits_opset13
test_split_variable_parts_2d_opset13 test_split_equal_parts_default_axis_opset18 test_slice_neg_steps
test_slice_end_out_of_bounds test_slice_negative_axes test_edge_pad test_reflect_pad test_wrap_pad
test_constant_pad_negative_axes test_gather_2d_indices test_gather_negative_indices
""".split()


@pytest.fixture(scope="module")
def suite():
    from kgen.frontends.onnx.conformance import load_cases
    return {case.name: case for case in load_cases("node") if case.name in CASES}


@pytest.mark.parametrize("name", CASES)
def test_conformance_case(suite, name):
    from kgen.frontends.onnx.conformance import run_case
    assert run_case(suite[name]) == ("pass", "")
