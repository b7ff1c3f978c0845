"""kgen.from_onnx as a user meets it: the module's inputs and weights, training an imported
model, shape chains folded at import, the kgen command on .onnx files, and bad files."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from kgen.cli import main  # noqa: E402

RNG = np.random.default_rng(0)
W1, B1 = RNG.standard_normal((6, 8)).astype(np.float32), RNG.standard_normal(8).astype(np.float32)
W2, B2 = RNG.standard_normal((8, 3)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)


def _mlp(opset: int = 17, batch="batch") -> onnx.ModelProto:
    """x [batch, 2, 3] -> flatten (a Shape -> Gather -> Concat -> Reshape chain, as exporters
    write x.view(x.size(0), -1)) -> linear -> relu -> linear."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat"], axis=0),
        helper.make_node("Reshape", ["x", "flat"], ["xf"]),
        helper.make_node("MatMul", ["xf", "fc1.weight"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "fc2.weight"], ["o0"], name="fc2"),
        helper.make_node("Add", ["o0", "fc2.bias"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(v, name) for name, v in [
        ("fc1.weight", W1), ("fc1.bias", B1), ("fc2.weight", W2), ("fc2.bias", B2),
        ("zero", np.array(0, np.int64)), ("axes0", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64))]]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _expected(x):
    return np.maximum(x.reshape(len(x), -1) @ W1 + B1, 0) @ W2 + B2


def test_inputs_weights_and_values():
    model = kgen.from_onnx(_mlp())
    (name, shape, dtype), = model.inputs
    assert name == "x" and str(shape[0]) == "batch" and shape[1:] == (2, 3) and dtype == kgen.float32
    assert list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # ONNX names
    np.testing.assert_array_equal(model.state_dict()["fc1.weight"], W1)
    x = kgen.tensor(*model.inputs[0])
    f = kgen.function([x], [model(x)])
    for rows in (5, 2):  # one graph, any batch: dim_param is a size symbol
        data = RNG.standard_normal((rows, 2, 3)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(f(data)[0]), _expected(data), rtol=1e-5, atol=1e-5)


def test_from_a_file_and_load_state_dict_round_trip(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), str(path))
    model = kgen.from_onnx(str(path))
    state = {k: v * 2 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.state_dict()["fc2.bias"], B2 * 2)


def test_train_step_trains_an_imported_model_like_torch():
    import torch
    model = kgen.from_onnx(_mlp())
    data = RNG.standard_normal((8, 2, 3)).astype(np.float32)
    labels = RNG.integers(0, 3, 8).astype(np.int32)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), 0.1), data, labels)
    twin = [torch.tensor(v, requires_grad=True) for v in (W1, B1, W2, B2)]
    opt = torch.optim.SGD(twin, 0.1)
    for _ in range(3):
        step(data, labels)
        opt.zero_grad()
        t = torch.tensor(data).reshape(8, -1)
        torch.nn.functional.cross_entropy(torch.relu(t @ twin[0] + twin[1]) @ twin[2] + twin[3],
                                          torch.tensor(labels, dtype=torch.long)).backward()
        opt.step()
    for (name, got), want in zip(model.state_dict().items(), twin):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_fit_and_check_on_an_imported_model():
    model = kgen.from_onnx(_mlp())
    model.compile(nn.SGD(model.parameters(), 0.05), "sparse_categorical_crossentropy", ["accuracy"])
    data = RNG.standard_normal((32, 2, 3)).astype(np.float32)
    labels = (data.reshape(32, -1).sum(1) > 0).astype(np.int64)
    history = model.fit(data, labels, epochs=3, batch_size=16, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), 0.1), data, labels)
    assert kgen.check(step, [data[:8], labels[:8]], strict=True).ok


def test_a_shape_that_is_computed_at_run_time_is_a_clear_error():
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_it")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    with pytest.raises(kgen.KgenError, match="Reshape node 'reshape_it': input 1 .'shape'. must be known when the "
                                             "model is imported"):
        kgen.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model = kgen.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                           constants={"shape": np.array([3, 2])})
    assert [name for name, _, _ in model.inputs] == ["x"]


# --- bad files and models: clear errors, and the process goes on ---------------------------------
def _single(op, opset=17, domain="", **attrs):
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="the_node", domain=domain, **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports)


def test_bad_files_are_clear_errors(tmp_path):
    good = _mlp().SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.onnx").write_text("this is not a model\n" * 10)
    with pytest.raises(kgen.InputError, match="cut.onnx: not an ONNX model"):
        kgen.from_onnx(str(tmp_path / "cut.onnx"))
    with pytest.raises(kgen.InputError, match="text.onnx: not an ONNX model"):
        kgen.from_onnx(str(tmp_path / "text.onnx"))
    with pytest.raises(kgen.InputError, match="nope.onnx: no such file"):
        kgen.from_onnx(str(tmp_path / "nope.onnx"))
    with pytest.raises(kgen.InputError, match="expected an onnx.ModelProto or the path"):
        kgen.from_onnx(42)


def test_bad_graphs_are_clear_errors():
    with pytest.raises(kgen.InputError, match="ONNX opset 99 is not one kgen knows"):
        kgen.from_onnx(_single("Relu", opset=99))
    with pytest.raises(kgen.UnknownOpError, match="Hardmax node 'the_node' has no kgen translation"):
        kgen.from_onnx(_single("Hardmax"))
    with pytest.raises(kgen.UnknownOpError, match="in the op domain 'com.example'"):
        kgen.from_onnx(_single("Relu", domain="com.example"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cycle = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                               helper.make_node("Relu", ["a"], ["b"], name="second"),
                               helper.make_node("Relu", ["a"], ["y"])], "g", [x], [y])
    with pytest.raises(kgen.InputError, match="the graph has a cycle through"):
        kgen.from_onnx(helper.make_model(cycle, opset_imports=[helper.make_opsetid("", 17)]))
    dangling = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], "g", [x], [y])
    with pytest.raises(kgen.InputError, match="Add node 'adder' reads 'ghost', which no node, input or initializer"):
        kgen.from_onnx(helper.make_model(dangling, opset_imports=[helper.make_opsetid("", 17)]))
    double = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                               [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])],
                               [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    with pytest.raises(kgen.DTypeError, match="input 'x': ONNX type DOUBLE is not one kgen computes in"):
        kgen.from_onnx(helper.make_model(double, opset_imports=[helper.make_opsetid("", 17)]))
    # and the process goes on
    assert kgen.from_onnx(_mlp()).inputs[0][0] == "x"


# --- the kgen command ----------------------------------------------------------------------------
def test_the_command_checks_measures_and_compiles_an_onnx_file(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), str(path))
    assert main(["check", str(path), "--batch", "4"]) == 0
    assert main(["stats", str(path), "--train", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "launches" in out, out
    assert main(["compile", str(path), "--out", str(tmp_path / "mlp.kgen"), "--batch", "8",
                 "--target", "sm_80"]) == 0
    artifact = kgen.load(str(tmp_path / "mlp.kgen"))
    assert artifact is not None
    (tmp_path / "bad.onnx").write_text("nope")
    assert main(["stats", str(tmp_path / "bad.onnx")]) != 0
    assert "bad.onnx: not an ONNX model" in capsys.readouterr().err


def test_opset_6_broadcast_aligns_the_second_input_at_axis():
    """Older exporters (opset 6) write Add(x [N,C,H,W], b [C], broadcast=1, axis=1)."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
                              [numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")])
    model = kgen.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]))
    x = kgen.tensor(*model.inputs[0])
    data = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    got = np.asarray(kgen.function([x], [model(x)])(data)[0])
    np.testing.assert_allclose(got, data + np.arange(3, dtype=np.float32)[:, None], rtol=1e-6)
