"""What a from_torch module is as a kgen.nn.Module: state_dict round trips with torch both
ways, train/eval modes, the steps and tools that take kgen modules (kgen.check, stats,
compile_artifact, fit), .pt2 files, and clear refusals that name the op and its module."""
import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from kgen.lowering.stats import program_stats


class _BNMlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
        self.drop = torch.nn.Dropout(0.25)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.drop(self.body(x)))


def _model():
    torch.manual_seed(0)
    tm = _BNMlp()
    return tm, kgen.from_torch(tm, torch.randn(4, 6))


def test_state_dict_round_trips_both_ways():
    tm, model = _model()
    assert list(model.state_dict()) == list(tm.state_dict())
    assert model.state_dict()["body.1.num_batches_tracked"].dtype == np.int64
    other = _BNMlp()  # different weights and statistics
    with torch.no_grad():
        other.body[1].running_mean.uniform_()
    model.load_state_dict(other.state_dict())
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())
    back = _BNMlp()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)


def test_parameters_are_the_optimizers_and_buffers_are_state():
    tm, model = _model()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in tm.named_buffers()]


def test_train_updates_running_statistics_and_eval_reads_them():
    tm, model = _model()
    x, y = torch.randn(8, 6), torch.zeros(8, dtype=torch.int64)
    tm.eval()
    model.eval()
    predict = nn.predict_step(model, x.numpy())
    np.testing.assert_allclose(np.asarray(predict(x.numpy())), tm(x).detach().numpy(), rtol=1e-4, atol=1e-6)
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), 0.1), x.numpy(), y.numpy())
    step(x.numpy(), y.numpy())
    tm.train()
    torch.manual_seed(0)
    stats_before = {k: v.clone() for k, v in tm.state_dict().items()}
    tm.body(x)  # torch updates its statistics in the layers before the dropout
    for key in ("body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked"):
        np.testing.assert_allclose(model.state_dict()[key], tm.state_dict()[key].numpy(), rtol=1e-5, atol=1e-7)
        assert not np.array_equal(model.state_dict()[key], stats_before[key].numpy())


def test_calling_returns_what_torch_returns():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            y = self.fc(x)
            return y, y.sum(dim=1)

    model = kgen.from_torch(TwoHeads(), torch.randn(4, 3))
    out = model(kgen.tensor("x", ("N", 3)))
    assert isinstance(out, tuple) and [o.type_str() for o in out] == ["f32[N,2]", "f32[N]"]


def test_check_stats_artifact_and_fit(tmp_path):
    tm, model = _model()
    x, y = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32), np.arange(16) % 3
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), 0.1, momentum=0.9), x, y)
    assert kgen.check(step, [x[:8], y[:8]]).ok
    stats = program_stats(step.program, {"N": 8})
    assert stats["launches"] < 20  # the optimizer's updates ride in the gradient kernels
    art = kgen.compile_artifact(step, tmp_path / "art", targets=("sm_80",), sizes={"N": 8})
    assert (tmp_path / "art" / "manifest.json").exists() and art is not None
    model.compile(nn.SGD(model.parameters(), 0.1), "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=False)
    assert len(history["loss"]) == 2


def test_pt2_file_is_a_model(tmp_path):
    tm, _ = _model()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(tm.eval(), (torch.randn(4, 6),),
                                          dynamic_shapes=({0: torch.export.Dim("N")},)), path)
    model = kgen.from_torch(torch.export.load(path))
    x = torch.randn(5, 6)
    f = kgen.function([xs := kgen.tensor("x", ("N", 6))], model(xs))
    np.testing.assert_allclose(np.asarray(f(x.numpy())), tm(x).detach().numpy(), rtol=1e-4, atol=1e-6)


class _Attention(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)  # no kgen translation


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.attn = torch.nn.Linear(4, 4), _Attention()

    def forward(self, x):
        return self.attn(self.fc(x))


def test_untranslatable_op_names_the_op_its_module_and_shapes():
    model = torch.nn.Sequential()
    model.add_module("layer2", torch.nn.Sequential(_Block()))
    with pytest.raises(kgen.UnknownOpError) as e:
        kgen.from_torch(model, torch.randn(3, 4))
    message = str(e.value)
    assert "aten.cumsum" in message and "`layer2.0.attn`" in message and "f32[N,4]" in message, message


@pytest.mark.parametrize("example, expected", [
    (torch.randn(4, 6, dtype=torch.float64), "float64"),
    (torch.randn(1, 6), "dim 0 of at least 2"),
    ([1, 2], "must be a torch.Tensor"),
])
def test_bad_examples_are_refused(example, expected):
    with pytest.raises(kgen.InputError, match=expected):
        kgen.from_torch(_BNMlp(), example)


class _Branchy(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # Python control flow on a value: torch.export cannot trace it


def test_what_torch_export_refuses_is_a_capture_error_with_torchs_reason():
    with pytest.raises(kgen.CaptureError, match="could not capture _Branchy in train mode: .*data-dependent"):
        kgen.from_torch(_Branchy(), torch.randn(4, 3))


def test_not_a_module_is_refused():
    with pytest.raises(kgen.InputError, match="expected a torch.nn.Module or a torch.export.ExportedProgram"):
        kgen.from_torch(lambda x: x, torch.randn(4, 6))


def test_wrong_input_shape_is_refused():
    _, model = _model()
    with pytest.raises(kgen.ShapeError, match=r"input .x. must have shape \[N,6\], got f32\[N,5\]"):
        model(kgen.tensor("x", ("N", 5)))
