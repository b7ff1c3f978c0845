"""Mixed precision (kgen.nn.precision): fp16 training steps against the float32 run from the
same weights, every kernel against the reference, dynamic loss scaling (a skipped step, the
backoff, the growth), bf16 compiled ahead of time for sm_80 and sm_90, checkpoints and
artifacts of the scaled step, and Keras's legacy SGD decay.

Tolerances. An fp16 GEMM rounds each operand to an 11-bit significand (unit roundoff
2**-11 = 4.9e-4) and accumulates in float32; everything else is float32. So each step's
forward values and gradients carry relative errors of a few 1e-4, and after a few steps the
loss agrees with the float32 run to rtol 2e-3 and the weights, which SGD moves by lr times
the gradient, to atol 2e-3 (measured: 5e-5 and 1.6e-4, see the report in the commit).
kgen.check judges each kernel by the coarsest dtype it touches: 1e-2 for a kernel with a
float16 value, of max |got - want| / max(|want|, 1)."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import nn
from kgen.kernels import aot
from kgen.lowering.stats import program_stats
from kgen.nn import keras
from nn_helpers import data, small_mlp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _sgd(model):
    return nn.SGD(model.parameters(), lr=0.2, momentum=0.9)


def _run(precision, steps=4, loss_scaler=None, optimizer=_sgd):
    model = small_mlp()
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), optimizer(model), x, y, precision=precision, loss_scaler=loss_scaler)
    losses = [float(step(x, y)[0]) for _ in range(steps)]
    return step, losses, model.state_dict()


def _check_kernels(step, inputs):
    """kgen.check of every kernel of a loss-scaled step, at loss scale 1 (the scale is a
    device scalar, so the program is the same): at 2**16 the scaled gradients are in the
    hundreds, where the error measure is relative, and a half GEMM's rounding of large
    terms that cancel, fp16's own error, would count against the kernel."""
    scale = step.loss_scaler.scale
    kept = scale.get_value().copy()
    scale.set_value(np.float32(1.0))
    try:
        kgen.check(step, inputs, strict=True)
    finally:
        scale.set_value(kept)


def _gemm_nodes(step):
    return [n for n in step.graph.nodes if n.opdef.gemm]


def test_fp16_mlp_steps_match_float32_within_fp16_tolerance():
    _, want_losses, want = _run("fp32")
    step, losses, got = _run("fp16")
    np.testing.assert_allclose(losses, want_losses, rtol=2e-3)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=2e-3, err_msg=name)
        assert not np.array_equal(got[name], want[name])  # half precision did change the numbers
    assert step.loss_scaler.get_scale() == 2.0 ** 16 and step.loss_scaler.get_skipped_steps() == 0
    _check_kernels(step, list(data()))


def test_fp16_cnn_step_matches_float32_and_every_kernel_checks():
    """The zoo's MNIST CNN (convs, pools, dense) on 4 images: two SGD steps agree with
    float32; every kernel of the step checks against the reference. (SGD, not the zoo's
    Adam: Adam moves a weight by about lr whatever its gradient's size, so a gradient near 0
    whose sign half precision flips moves it 2 lr the other way, which says nothing of
    fp16's accuracy.)"""
    spec = nn.zoo.get("cnn")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4).astype(np.int32)
    results = {}
    for precision in ("fp32", "fp16"):
        nn.manual_seed(0)
        model = spec.model()
        step = nn.train_step(model, nn.losses.get(spec.loss), nn.SGD(model.parameters(), lr=0.05, momentum=0.9),
                             x, y, precision=precision)
        results[precision] = [float(step(x, y)[0]) for _ in range(2)], model.state_dict(), step
    (want_losses, want, _), (losses, got, step) = results["fp32"], results["fp16"]
    np.testing.assert_allclose(losses, want_losses, rtol=2e-3)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=2e-3, err_msg=name)
    assert {n.op for n in _gemm_nodes(step)} >= {"conv2d", "conv2d_input_grad", "conv2d_weight_grad", "matmul"}
    _check_kernels(step, [x, y])


def test_gemm_operands_are_half_and_the_dots_take_them():
    """Every GEMM of the step (forward and backward) reads float16 operands and runs a
    float16 tl.dot (float32 accumulator); the parameters stay float32 master weights."""
    model = small_mlp()
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), _sgd(model), x, y, precision="fp16")
    gemms = _gemm_nodes(step)
    assert len(gemms) == 5  # two forward matmuls, two weight gradients, one input gradient (x needs none)
    for node in gemms:
        assert [i.dtype for i in node.inputs] == [kgen.float16] * 2, step.graph.line(node)
    for kernel in step.kernels:
        for part in kernel.parts or (kernel,):
            if part.kind == "matmul":
                assert "tl.dot(" in part.text and ".to(tl.float16)" in part.text
                assert 'input_precision="ieee"' not in part.text  # no float32 dot left
    assert all(p.dtype is kgen.float32 for p in model.parameters())


@pytest.mark.parametrize("name, fp32, scaled", [("mlp128", 6, 8), ("cnn", 10, 12)])
def test_launches_fp32_against_fp16(name, fp32, scaled):
    """The casts run inside the GEMMs (their tiles are cast as they load), so fp16 and bf16
    take fp32's launches; dynamic loss scaling adds two: the finiteness check reads every
    gradient, so the updates leave the epilogues that produced them."""
    spec = nn.zoo.get(name)
    x = np.zeros((8,) + ((784,) if name == "mlp128" else (1, 28, 28)), np.float32)
    y = np.zeros(8, np.int32)
    counts = {}
    for precision, scaler in (("fp32", None), ("fp16", False), ("bf16", None), ("fp16", None)):
        nn.manual_seed(0)
        model = spec.model()
        step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y,
                             precision=precision, loss_scaler=scaler)
        counts[precision, step.loss_scaler is not None] = program_stats(step.program, {"N": 64})["launches"]
    assert counts == {("fp32", False): fp32, ("fp16", False): fp32, ("bf16", False): fp32, ("fp16", True): scaled}


def test_an_overflow_skips_the_step_and_halves_the_scale():
    """A scale of 2**40 overflows float16 in the backward GEMMs: the step changes no
    parameter and no optimizer state (Adam's moments and step count), halves the scale and
    counts the skip; the next good steps grow it after growth_interval of them."""
    model = small_mlp()
    x, y = data()
    optimizer = nn.Adam(model.parameters(), lr=0.01)
    scaler = nn.GradScaler(init_scale=2.0 ** 40, growth_interval=2)
    step = nn.train_step(model, nn.NLLLoss(), optimizer, x, y, precision="fp16", loss_scaler=scaler)
    state = [v for v in step.shared if v.name not in {s.name for s in scaler.named_state().values()}]
    before = {v.name: v.get_value().copy() for v in state}
    (loss,) = step(x, y)
    assert np.isfinite(float(loss))  # the loss itself is float32 and unscaled
    for v in state:
        np.testing.assert_array_equal(v.get_value(), before[v.name], err_msg=v.name)
    assert scaler.get_scale() == 2.0 ** 39 and scaler.get_skipped_steps() == 1 and scaler.get_growth_tracker() == 0
    assert optimizer.loss_scaler is scaler

    scaler.scale.set_value(np.float32(2.0 ** 8))  # small enough for these gradients
    scales = []
    for _ in range(4):
        step(x, y)
        scales.append((scaler.get_scale(), scaler.get_growth_tracker()))
    assert scales == [(2.0 ** 8, 1), (2.0 ** 9, 0), (2.0 ** 9, 1), (2.0 ** 10, 0)]
    assert scaler.get_skipped_steps() == 1 and float(optimizer.step.get_value()) == 4.0


def test_scaled_steps_equal_unscaled_ones():
    """Scaling by a power of two and back is exact where nothing over- or underflows."""
    _, scaled_losses, scaled = _run("fp16", steps=3, loss_scaler=nn.GradScaler(init_scale=2.0 ** 4))
    _, losses, unscaled = _run("fp16", steps=3, loss_scaler=False)
    np.testing.assert_allclose(scaled_losses, losses, rtol=1e-6)
    for name in unscaled:
        np.testing.assert_allclose(scaled[name], unscaled[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_scale_never_grows_past_float32():
    scaler = nn.GradScaler(init_scale=2.0 ** 127, growth_factor=2.0, growth_interval=1)
    model = small_mlp()
    x, y = data()
    step = nn.train_step(model, nn.NLLLoss(), _sgd(model), x, y, precision="fp32", loss_scaler=scaler)
    step(x, y)  # a good step at growth_interval 1, but 2**128 is no float32: the scale stays
    assert scaler.get_scale() == 2.0 ** 127
    assert scaler.get_skipped_steps() == 0 and scaler.get_growth_tracker() == 0  # torch's tracker resets


def test_bf16_step_compiles_ahead_of_time_for_sm80_and_sm90():
    """bf16 runs on GPUs only (Triton's interpreter computes bfloat16 dots wrongly, and a
    bf16 step refuses to run there); its kernels compile for sm_80 (mma.sync) and sm_90,
    the GEMMs on bfloat16 tensor-core instructions."""
    step, *_ = _run("bf16", steps=0)
    assert step.loss_scaler is None
    assert all([i.dtype for i in n.inputs] == [kgen.bfloat16] * 2 for n in _gemm_nodes(step))
    binaries = aot.compile_program(step.program, targets=("sm_80", "sm_90"))
    assert len(binaries) == 2 * len(step.kernels) and all(b.cubin[:4] == b"\x7fELF" for b in binaries)
    gemm_kernels = {k.name for k in step.kernels if any(n.opdef.gemm for n in k.nodes)}
    assert gemm_kernels
    for b in binaries:
        if b.kernel in gemm_kernels:
            assert any("mma" in line and "bf16" in line for line in b.ptx.splitlines()), (b.kernel, b.target)
    x, y = data()
    with pytest.raises(kgen.DTypeError, match="bfloat16 dot, which Triton's interpreter computes wrongly"):
        step(x, y)


def test_compile_fit_evaluate_predict_in_fp16():
    x, y = data(32)
    results = {}
    for precision in ("fp32", "fp16"):
        model = small_mlp()
        model.compile(nn.SGD(model.parameters(), lr=0.1), "nll", ["accuracy"], precision=precision)
        history = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=False)
        results[precision] = history["loss"], model.evaluate(x, y, verbose=False), model.predict(x), model
    (losses, evaluated, predicted, _), (losses16, evaluated16, predicted16, model16) = results.values()
    np.testing.assert_allclose(losses16, losses, rtol=2e-3)
    np.testing.assert_allclose(evaluated16, evaluated, rtol=2e-3)
    np.testing.assert_allclose(predicted16, predicted, atol=2e-3)
    assert model16.optimizer.loss_scaler.get_scale() == 2.0 ** 16
    steps = model16._compiled()._steps.values()
    assert len(steps) == 3 and all(n.inputs[0].dtype is kgen.float16 for s in steps for n in _gemm_nodes(s))


def test_bad_precision_and_scaler_are_refused():
    model = small_mlp()
    x, y = data()
    with pytest.raises(kgen.OptionError, match="train_step: precision must be one of 'fp32', 'fp16', 'bf16', "
                                               "got 'fp8'"):
        nn.train_step(model, nn.NLLLoss(), _sgd(model), x, y, precision="fp8")
    with pytest.raises(kgen.OptionError, match="compile: precision must be one of 'fp32', 'fp16', 'bf16', "
                                               "got 'float16'"):
        model.compile("sgd", "nll", precision="float16")
    with pytest.raises(kgen.OptionError, match="predict_step: precision must be"):
        nn.predict_step(model, x, precision=16)
    with pytest.raises(kgen.OptionError, match="loss_scaler must be a kgen.nn.GradScaler, None or False, got float"):
        nn.train_step(model, nn.NLLLoss(), _sgd(model), x, y, precision="fp16", loss_scaler=1024.0)
    with pytest.raises(kgen.OptionError, match="GradScaler: growth_interval must be a positive integer, got 0"):
        nn.GradScaler(growth_interval=0)
    with pytest.raises(kgen.OptionError, match="GradScaler: backoff_factor must be a number in \\(0, 1\\)"):
        nn.GradScaler(backoff_factor=2.0)
    optimizer = _sgd(model)
    nn.GradScaler().bind(optimizer)
    with pytest.raises(kgen.OptionError, match="SGD already has a loss scaler"):
        nn.train_step(model, nn.NLLLoss(), optimizer, x, y, precision="fp16")


def test_loss_scale_is_checkpointed_with_the_optimizer(tmp_path):
    pytest.importorskip("safetensors")
    x, y = data()
    model = small_mlp()
    model.compile(nn.SGD(model.parameters(), lr=0.1, momentum=0.9), "nll", precision="fp16",
                  loss_scaler=nn.GradScaler(init_scale=2.0 ** 40))
    model.fit(x, y, epochs=1, batch_size=13, verbose=False)  # one batch: an overflow, skipped
    assert model.optimizer.loss_scaler.get_scale() == 2.0 ** 39
    nn.save(tmp_path / "ckpt.safetensors", model, model.optimizer)

    fresh = small_mlp(seed=5)
    fresh.compile(nn.SGD(fresh.parameters(), lr=0.1, momentum=0.9), "nll", precision="fp16")
    nn.load(tmp_path / "ckpt.safetensors", fresh, fresh.optimizer)
    scaler = fresh.optimizer.loss_scaler
    assert (scaler.get_scale(), scaler.get_skipped_steps()) == (2.0 ** 39, 1)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)


def test_fp16_step_artifact_keeps_its_loss_scale(tmp_path):
    """compile_artifact of a loss-scaled step (sm_90 binaries); loaded and run here (the
    interpreter), it skips the overflowing step and halves its scale like the step itself."""
    model = small_mlp()
    x, y = data()
    scaler = nn.GradScaler(init_scale=2.0 ** 40)
    step = nn.train_step(model, nn.NLLLoss(), _sgd(model), x, y, precision="fp16", loss_scaler=scaler)
    path = kgen.compile_artifact(step, tmp_path / "art", targets=("sm_90",), sizes={"N": 13})
    artifact = kgen.load(path)
    weight = model.state_dict()["0.weight"]
    (loss,) = artifact(x, y)
    assert float(loss) == float(step(x, y)[0])
    assert artifact.get_state(scaler.scale.name) == 2.0 ** 39 == scaler.get_scale()
    np.testing.assert_array_equal(artifact.get_state(model[0].weight.name), weight)


def test_keras_sgd_legacy_decay_is_inverse_time_decay_per_batch():
    """Keras's SGD(lr, decay): batch i (from 0) steps with lr / (1 + decay * i); the same
    weights as torch's SGD under a LambdaLR of that factor stepped per batch."""
    import torch
    lr, decay = 0.3, 0.5
    x, y = data(24)
    model = keras.Sequential([keras.Dense(5, activation="relu", input_dim=6), keras.Dense(3, activation="softmax")])
    twin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    with torch.no_grad():
        for i, layer in ((0, 0), (1, 2)):
            twin[layer].weight.copy_(torch.from_numpy(model[i].kernel.get_value().T.copy()))
            twin[layer].bias.copy_(torch.from_numpy(model[i].bias.get_value()))
    model.compile(keras.SGD(lr=lr, momentum=0.5, decay=decay), "sparse_categorical_crossentropy")
    seen = []

    class Recorder(nn.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(model.optimizer.lr)

    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=False, callbacks=[Recorder()])
    assert seen == pytest.approx([lr / (1 + decay * i) for i in range(6)], rel=1e-12)

    theirs = torch.optim.SGD(twin.parameters(), lr=lr, momentum=0.5)
    schedule = torch.optim.lr_scheduler.LambdaLR(theirs, lambda i: 1 / (1 + decay * i))
    for _ in range(2):
        for start in range(0, 24, 8):
            theirs.zero_grad()
            probs = torch.softmax(twin(torch.from_numpy(x[start:start + 8])), dim=1)
            torch.nn.functional.nll_loss(torch.log(probs), torch.from_numpy(y[start:start + 8]).long()).backward()
            theirs.step()
            schedule.step()
    np.testing.assert_allclose(model[0].kernel.get_value(), twin[0].weight.detach().numpy().T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[1].bias.get_value(), twin[2].bias.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(kgen.OptionError, match="SGD: decay must be a number >= 0, got -1"):
        keras.SGD(decay=-1)


def test_inverse_time_decay_formula_and_staircase():
    optimizer = nn.SGD(small_mlp().parameters(), lr=0.1)
    smooth = nn.schedules.InverseTimeDecay(optimizer, decay_rate=0.5, decay_steps=2)
    values = [optimizer.lr]
    for _ in range(4):
        smooth.step()
        values.append(optimizer.lr)
    assert values == pytest.approx([0.1 / (1 + 0.5 * t / 2) for t in range(5)])
    stairs = nn.schedules.InverseTimeDecay(nn.SGD(small_mlp().parameters(), lr=0.1), 1.0, 2, staircase=True)
    assert [stairs.lr_at(t) for t in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.1 / 3])
    assert smooth.interval == "batch"
