"""The bad-input table (docs/bad_inputs.md), one test per row: each bad input is tried as a
user would, through kgen.function, the kgen.nn steps and fit/evaluate/predict, a loaded
artifact (the Python side of `kgen run`) and kgen.check, and must give a kgen error naming
the input or option, what was expected and what was given, change no state, write no
partial file, and leave the process usable."""
import os

import numpy as np
import pytest
import torch

import kgen
from kgen import files, nn
from kgen.artifact.commands import npz_inputs
from kgen.autotune.cache import TuneCache
from kgen.errors import ArgumentError, NonFiniteError, OptionError, check_arguments
from kgen.kernels.inputs import device_problem, label_classes


# --- a classifier: as a function, as a loaded artifact, as a kgen.nn model -------------------
def classifier():
    x = kgen.tensor("x", ("N", 4))
    y = kgen.tensor("y", ("N",), "int32")
    w = kgen.shared(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), name="w_bad")
    loss = kgen.ops.cross_entropy(x @ w, y)
    (gw,) = kgen.grad(loss, [w])
    return kgen.function([x, y], loss, updates=[(w, w - 0.1 * gw)]), w


@pytest.fixture(scope="module")
def step_and_artifact(tmp_path_factory):
    step, w = classifier()
    path = kgen.compile_artifact(step, tmp_path_factory.mktemp("bad") / "art", targets=("sm_90",), sizes={"N": 8})
    return step, w, path


@pytest.fixture
def step(step_and_artifact):
    return step_and_artifact[0]


@pytest.fixture
def artifact(step_and_artifact):
    return kgen.load(step_and_artifact[2])


@pytest.fixture
def model():
    nn.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3))
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


X = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], np.int32)


def usable(fn, *args):
    """A good call after an error works: the process and the callee are unharmed."""
    out = fn(*(args or (X[:5], Y[:5])))
    assert np.isfinite(np.asarray(out if not isinstance(out, list) else out[0], np.float64)).all()


def both_paths(step, artifact):
    """The function and the artifact compiled from it, each as a call(x, y)."""
    return [("function", step), ("artifact", artifact)]


# --- shapes and ranks ----------------------------------------------------------------------------
def test_wrong_shape_names_the_input_on_every_path(step, artifact, model):
    with pytest.raises(kgen.ShapeError, match=r"input 'x'.*expected shape \[N,4\].*got \[5, 3\]"):
        step(X[:5, :3], Y[:5])
    with pytest.raises(kgen.ShapeError, match=r"input 'x': expected shape \[N,4\] with N=5, got \[5, 3\]"):
        artifact(X[:5, :3], Y[:5])
    with pytest.raises(kgen.ShapeError, match=r"input 'y': axis 0 is 4, but N = 5 from an earlier input"):
        step(X[:5], Y[:4])
    with pytest.raises(kgen.ShapeError, match=r"fit: the model and its loss cannot take x of shape \[N,5\]"
                                              r".*inner dims"):
        model.fit(np.ones((10, 5), np.float32), Y, epochs=1, verbose=False)
    usable(step)
    usable(artifact)


def test_wrong_rank_names_the_input(step, artifact):
    with pytest.raises(kgen.ShapeError, match=r"input 'x': expected shape \[N,4\] \(rank 2\), got \[20\] \(rank 1\)"):
        step(X[:5].reshape(-1), Y[:5])
    with pytest.raises(kgen.ShapeError, match=r"input 'y': expected shape \[N\]"):
        artifact(X[:5], Y[:5, None])
    usable(step)


def test_fit_x_and_y_lengths_and_empty_data(model):
    with pytest.raises(kgen.InputError, match=r"fit: x has 10 samples but y has 5"):
        model.fit(X, Y[:5], verbose=False)
    with pytest.raises(kgen.InputError, match=r"fit: x: expected at least one sample.*got shape \[0, 4\]"):
        model.fit(X[:0], Y[:0], verbose=False)
    with pytest.raises(kgen.InputError, match=r"evaluate: x: expected at least one sample"):
        model.evaluate(X[:0], Y[:0], verbose=False)


# --- dtypes ----------------------------------------------------------------------------------------
def test_float64_arrays_are_refused_by_calls_and_converted_by_fit(step, artifact, model):
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=r"input 'x': expected float32, got float64 \(convert with "
                                                  r"\.astype\(np\.float32\) first\)"):
            call(X[:5].astype(np.float64), Y[:5])
    with pytest.raises(kgen.InputError, match=r"input 'x': expected float32, got float64 .*\.to\(torch\.float32\)"):
        step(torch.from_numpy(X[:5]).double(), Y[:5])
    history = model.fit(X.astype(np.float64), Y, epochs=1, batch_size=5, verbose=False)  # as Keras does
    assert np.isfinite(history["loss"][0])


def test_int64_labels_are_converted_the_same_on_every_path(step_and_artifact, tmp_path):
    """int64 labels for an int32 input: converted after a range check, by a function call, a
    nn step, fit, kgen.check, a loaded artifact and the .npz inputs of `kgen run`."""
    _, _, path = step_and_artifact
    labels64 = Y[:5].astype(np.int64)
    results = {}
    for how in ("int32", "int64", "torch int64", "uint8"):
        fn, w = classifier()  # fresh state each time: every path starts from the same weights
        given = {"int32": Y[:5], "int64": labels64, "torch int64": torch.from_numpy(labels64),
                 "uint8": Y[:5].astype(np.uint8)}[how]
        results[how] = float(fn(X[:5], given))
    art = kgen.load(path)
    results["artifact int64"] = float(art(X[:5], labels64))
    np.savez(tmp_path / "inputs.npz", x=X[:5], y=labels64)
    art = kgen.load(path)
    results["kgen run --inputs (npz)"] = float(art(*npz_inputs(tmp_path / "inputs.npz", art.arguments)))
    assert len({round(v, 6) for v in results.values()}) == 1, results
    assert kgen.check(classifier()[0], [X[:5], labels64]).ok

    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    step = nn.train_step(model, nn.CrossEntropyLoss(), nn.SGD(model.parameters(), lr=0.1), X[:5], labels64)
    assert step.inputs[1].dtype == kgen.int32  # integer labels are declared int32 on every path
    assert np.isfinite(float(step(X[:5], labels64)[0]))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.fit(X, Y.astype(np.int64), epochs=1, batch_size=4, verbose=False)["loss"][0])


def test_int64_labels_that_do_not_fit_int32_are_refused(step, artifact):
    big = np.array([0, 1, 2**40, 0, 1], np.int64)
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=r"input 'y': expected int32 values, got int64 values from 0 to "
                                                  r"1099511627776, which int32 cannot hold"):
            call(X[:5], big)
    usable(step)


def test_float_labels_are_refused_naming_the_input(step, artifact, model):
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=r"input 'y': expected dtype int32, got float32"):
            call(X[:5], Y[:5].astype(np.float32))
    with pytest.raises(kgen.DTypeError, match=r"fit: the model and its loss cannot take .*y of shape \[N\] "
                                              r"\(float32\).*one_hot: labels must be integers"):
        model.fit(X, Y.astype(np.float32), verbose=False)


def test_python_lists_take_the_declared_dtype(step):
    want = float(classifier()[0](X[:5], Y[:5]))
    fn, _ = classifier()
    assert float(fn(X[:5].tolist(), Y[:5].tolist())) == pytest.approx(want)


# --- values that are not arrays ------------------------------------------------------------------
@pytest.mark.parametrize("value, given", [("hello", "str"), (None, "NoneType"), ({"a": 1}, "dict"),
                                          (b"raw", "bytes"), ([["a", "b"]], r"list of <U1"),
                                          ([[1.0, 2.0], [3.0]], "list that is not one"), (object(), "object")])
def test_non_array_inputs_name_the_input(step, artifact, model, value, given):
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=rf"input 'x': expected (a numeric )?(an )?array or tensor, "
                                                  rf"got (a )?{given}"):
            call(value, Y[:5])
    with pytest.raises(kgen.InputError, match=r"fit: x: expected (a numeric )?(an )?array or tensor of samples"):
        model.fit(value, Y, verbose=False)
    with pytest.raises(kgen.InputError, match=r"predict: x: expected (a numeric )?(an )?array or tensor of samples"):
        model.predict(value)
    with pytest.raises(kgen.InputError, match=r"input 'x': expected"):
        kgen.check(step, [value, Y[:5]])
    usable(step)


# --- devices -----------------------------------------------------------------------------------
def test_meta_tensors_name_the_input_and_the_device(step, artifact, model):
    meta = torch.ones(5, 4, device="meta")
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=r"input 'x': expected a tensor with data on the CPU, got a tensor "
                                                  r"on the meta device"):
            call(meta, Y[:5])
    with pytest.raises(kgen.InputError, match=r"fit: x: expected a tensor with data on the CPU.*meta"):
        model.fit(meta, Y[:5], verbose=False)
    w = kgen.shared(np.ones(3, np.float32), name="s_meta")
    with pytest.raises(kgen.InputError, match=r"shared 's_meta': expected a tensor with data.*meta"):
        w.set_value(torch.ones(3, device="meta"))
    np.testing.assert_array_equal(w.get_value(), np.ones(3))
    usable(step)


def test_the_device_decision():
    """What device_problem accepts, with CUDA present or not (this machine has none)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert device_problem(cpu, cpu) == "" and device_problem(cpu, cuda) == ""
    assert device_problem(cuda, cpu, cuda_available=True) == ""  # copied to the program's device
    assert device_problem(torch.device("cuda:1"), cuda, cuda_available=True) == ""
    assert device_problem(cuda, cpu, cuda_available=False) == (
        "expected a tensor on the CPU, got one on cuda:0 (this machine has no usable CUDA device)")
    assert device_problem(torch.device("mps"), cuda) == "expected a tensor on cuda:0 or the CPU, got one on mps"
    assert "meta device, which holds no values" in device_problem(torch.device("meta"), cuda)


# --- unknown keywords ------------------------------------------------------------------------------
def test_unknown_keyword_names_the_op_and_what_it_takes():
    x, w = kgen.tensor("a", (1, 2, 5, 5)), kgen.tensor("b", (2, 1, 3, 3))
    with pytest.raises(ArgumentError, match=r"kgen\.ops\.conv2d: unknown keyword 'padding_mode' \(convolutions "
                                            r"pad with zeros only\); expected one of: x, w, bias, stride, padding, "
                                            r"dilation, layout, groups"):
        kgen.ops.conv2d(x, w, padding_mode="reflect")
    assert issubclass(ArgumentError, TypeError) and issubclass(ArgumentError, kgen.KgenError)
    with pytest.raises(ArgumentError, match=r"kgen\.ops\.sum: unknown keyword 'dim' \(kgen's ops take axis="):
        kgen.ops.sum(x, dim=1)
    with pytest.raises(ArgumentError, match=r"kgen\.ops\.add: missing a required argument: 'b'"):
        kgen.ops.add(x)
    with pytest.raises(ArgumentError, match=r"kgen\.function: unknown keyword 'update'; expected one of: inputs, "
                                            r"outputs, updates, device, check_finite"):
        kgen.function([x], x, update=[])
    assert kgen.ops.conv2d(x, kgen.tensor("c", (4, 2, 3, 3)), padding=1).shape == (1, 4, 5, 5)  # still fine


def test_every_public_op_rejects_unknown_keywords():
    for name in kgen.ops.__all__:
        with pytest.raises(ArgumentError, match=rf"kgen\.ops\.{name}: unknown keyword 'bogus'"):
            getattr(kgen.ops, name)(bogus=1)


def test_keyword_check_passes_errors_from_inside_unchanged(model):
    def inner(a, b=1):
        raise TypeError("from inside")
    with pytest.raises(TypeError, match="from inside") as caught:
        check_arguments(inner, "inner")(1, b=2)
    assert not isinstance(caught.value, ArgumentError)
    with pytest.raises(ArgumentError, match=r"fit: unknown keyword 'epoch'; expected one of: x, y, epochs"):
        model.fit(X, Y, epoch=2)


# --- class labels --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_labels_are_refused_on_every_path(step_and_artifact, model, bad):
    step, w, path = step_and_artifact
    artifact = kgen.load(path)
    labels = np.array([0, 1, bad, 0, 1], np.int32)
    message = rf"input 'y': expected class labels in \[0, 3\) \(3 classes.*got {bad} at index \[2\]"
    before, state = w.get_value(), artifact.get_state("w_bad")
    for _, call in both_paths(step, artifact):
        with pytest.raises(kgen.InputError, match=message):
            call(X[:5], labels)
    with pytest.raises(kgen.InputError, match=message):
        kgen.check(step, [X[:5], labels])
    np.testing.assert_array_equal(w.get_value(), before)  # refused before any kernel ran
    np.testing.assert_array_equal(artifact.get_state("w_bad"), state)

    weights = [p.get_value() for p in model.parameters()]
    all_labels = Y.copy()
    all_labels[7] = bad
    with pytest.raises(kgen.InputError, match=rf"fit: y: expected class labels in \[0, 3\).*got {bad} at index \[7\]"):
        model.fit(X, all_labels, epochs=1, batch_size=4, verbose=False)
    for p, value in zip(model.parameters(), weights):  # checked before the first step
        np.testing.assert_array_equal(p.get_value(), value)
    with pytest.raises(kgen.InputError, match=rf"evaluate: y: .*got {bad} at index \[7\]"):
        model.evaluate(X, all_labels, verbose=False)
    usable(step)
    usable(artifact)


def test_labels_are_found_for_one_hot_nll_loss_and_accuracy():
    logits, lab = kgen.tensor("logits", ("N", 5)), kgen.tensor("lab", ("N",), "int64")
    other = kgen.tensor("k", ("N",), "int32")
    graphs = {
        "one_hot": kgen.Graph([lab], [kgen.ops.one_hot(lab, 7)]),
        "nll_loss": kgen.Graph([logits, lab], [kgen.ops.nll_loss(kgen.ops.log_softmax(logits), lab)]),
        "accuracy": kgen.Graph([logits, lab], [nn.train.accuracy(logits, lab)]),
        "no labels": kgen.Graph([logits, other], [logits * kgen.ops.cast(other, "float32")[:, None]]),
    }
    found = {name: label_classes(str(kgen.compile(g).graph)) for name, g in graphs.items()}
    assert found == {"one_hot": {"lab": 7}, "nll_loss": {"lab": 5}, "accuracy": {"lab": 5}, "no labels": {}}
    with pytest.raises(kgen.InputError, match=r"input 'lab': expected class labels in \[0, 7\).*got 7 at index \[1\]"):
        kgen.function([lab], kgen.ops.one_hot(lab, 7))(np.array([0, 7]))


# --- NaN and infinity ----------------------------------------------------------------------------
def log_and_divide(check_finite=None):
    z, d = kgen.tensor("z", ("N",)), kgen.tensor("d", ("N",))
    s = kgen.shared(np.ones(3, np.float32), name="s_finite")
    fn = kgen.function([z, d], [kgen.ops.log(z), z / d], updates=[(s, s + kgen.ops.sum(z))],
                       check_finite=check_finite)
    return fn, s


ONES = np.ones(3, np.float32)


def test_nan_and_inf_propagate_as_in_torch_by_default():
    fn, _ = log_and_divide()
    z, d = np.array([-1.0, 0.0, 2.0], np.float32), np.array([1.0, 0.0, -0.0], np.float32)
    logs, quotients = fn(z, d)
    torch.testing.assert_close(logs, torch.log(torch.from_numpy(z)), equal_nan=True)
    torch.testing.assert_close(quotients, torch.from_numpy(z) / torch.from_numpy(d), equal_nan=True)


def test_check_finite_names_the_kernel_that_made_the_nan():
    fn, s = log_and_divide(check_finite=True)
    with pytest.raises(NonFiniteError) as caught:
        fn(np.array([1.0, -1.0, 2.0], np.float32), ONES)
    message = str(caught.value)
    kernel = fn.kernels[0].name
    assert message.startswith(f"check_finite: kernel {kernel} wrote nan at index [1] to %0: f32[N] = log z")
    assert "  %0: f32[N] = log z" in message  # the nodes it computes, as its source names them
    assert "Every value it read was finite: this kernel made the NaN/inf" in message
    with pytest.raises(NonFiniteError, match=r"wrote inf at index \[1\] to %\d+: f32\[N\] = div z d"):
        fn(np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(s.get_value(), ONES)  # no update kept from a failed call
    fn(ONES, ONES)
    np.testing.assert_array_equal(s.get_value(), ONES + 3)  # and a good call updates as before


def test_check_finite_blames_the_non_finite_input():
    fn, _ = log_and_divide(check_finite=True)
    with pytest.raises(NonFiniteError, match=r"(?s)It read inputs that were already non-finite, the cause:\n"
                                             r"  z: f32\[N\] = input: nan at index \[2\]"):
        fn(np.array([1.0, 2.0, np.nan], np.float32), ONES)


def test_check_finite_from_the_environment_and_on_artifacts(tmp_path, monkeypatch):
    fn, s = log_and_divide()
    path = kgen.compile_artifact(fn, tmp_path / "art", targets=("sm_90",), sizes={"N": 4})
    art = kgen.load(path)
    bad = np.array([1.0, -1.0, 2.0], np.float32)
    assert np.isnan(fn(bad, ONES)[0][1].item()) and np.isnan(art(bad, ONES)[0][1].item())  # off by default
    s.set_value(ONES)
    art.set_state("s_finite", ONES)
    monkeypatch.setenv("KGEN_CHECK_FINITE", "1")
    with pytest.raises(NonFiniteError, match=r"kernel \w+ wrote nan at index \[1\] to %0: f32\[N\] = log z"):
        fn(bad, ONES)
    with pytest.raises(NonFiniteError, match=r"kernel \w+ wrote nan at index \[1\] to %0: f32\[N\] = log z"):
        art(bad, ONES)
    with pytest.raises(NonFiniteError, match=r"(?s)z: f32\[N\] = input: inf at index \[0\]"):
        art.run({"z": np.array([np.inf, 1.0, 1.0], np.float32), "d": ONES})
    np.testing.assert_array_equal(s.get_value(), ONES)
    np.testing.assert_array_equal(art.get_state("s_finite"), ONES)
    assert np.isnan(art(bad, ONES, check_finite=False)[0][1].item())  # the argument wins over the setting
    fn.check_finite = False
    assert np.isnan(fn(bad, ONES)[0][1].item())


# --- options and paths -----------------------------------------------------------------------------
def test_cache_path_that_is_a_file(tmp_path, monkeypatch):
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("mine")
    z = kgen.tensor("z", ("N",))
    monkeypatch.setenv("KGEN_CACHE_DIR", str(a_file))
    with pytest.raises(OptionError, match=rf"KGEN_CACHE_DIR={a_file}: expected a directory \(or a path where one "
                                          rf"can be made\), but it is a file"):
        kgen.function([z], kgen.ops.exp(z) * 3.671)(ONES)
    monkeypatch.setenv("KGEN_CACHE_DIR", str(a_file / "below"))
    with pytest.raises(OptionError, match=rf"KGEN_CACHE_DIR={a_file / 'below'}: .*but {a_file} is a file"):
        files.cache_dir()
    with pytest.raises(OptionError, match=rf"the autotune cache {a_file}: expected a directory"):
        TuneCache(a_file)
    assert a_file.read_text() == "mine"
    monkeypatch.setenv("KGEN_CACHE_DIR", str(tmp_path / "cache"))
    np.testing.assert_allclose(kgen.function([z], kgen.ops.exp(z) * 3.671)(ONES).numpy(), np.e * 3.671, rtol=1e-6)


def test_fit_with_zero_epochs_returns_an_empty_history(model):
    weights = [p.get_value() for p in model.parameters()]
    assert model.fit(X, Y, epochs=0, verbose=False) == {"loss": [], "accuracy": []}
    for p, value in zip(model.parameters(), weights):
        np.testing.assert_array_equal(p.get_value(), value)
    for epochs in (-1, 1.5, "2", True):
        with pytest.raises(OptionError, match=rf"fit: epochs must be an integer >= 0, got {epochs!r}"):
            model.fit(X, Y, epochs=epochs, verbose=False)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, None])
def test_bad_batch_size_names_the_option(model, batch_size):
    for call in (lambda: model.fit(X, Y, batch_size=batch_size, verbose=False),
                 lambda: model.evaluate(X, Y, batch_size=batch_size, verbose=False),
                 lambda: model.predict(X, batch_size=batch_size)):
        with pytest.raises(OptionError, match=rf"(fit|evaluate|predict): batch_size must be a positive integer, "
                                              rf"got {batch_size!r}"):
            call()
    assert len(model.fit(X, Y, batch_size=4, verbose=False)["loss"]) == 1


# --- nothing half-written --------------------------------------------------------------------------
def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "module.py"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):  # fails midway through writing the temporary file
        files.atomic_write(target, "x = 1\n" * 10000 + "\ud800")
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []

    fn, _ = log_and_divide()
    dump = tmp_path / "dump.py"
    with pytest.raises(OSError, match="disk full"):
        fn.dump(dump)
    assert not dump.exists() and leftovers(tmp_path) == []

    cache = TuneCache(tmp_path / "tune")
    kernel = fn.kernels[0]
    config = {p.name: 128 for p in kernel.params if p.kind == "constexpr"}
    with pytest.raises(OSError, match="disk full"):
        cache.store(kernel, {"N": 3}, "sm_90", dict(config, num_warps=4), {"source": "test"})
    assert list(cache.entries_dir.iterdir()) == []
    monkeypatch.undo()
    assert cache.store(kernel, {"N": 3}, "sm_90", dict(config, num_warps=4), {"source": "test"}).exists()
    assert cache.lookup(kernel, {"N": 3}, "sm_90") == dict(config, num_warps=4)


def test_a_failed_artifact_write_leaves_nothing(tmp_path, monkeypatch):
    from kgen.kernels import aot

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(aot, "compile_parallel", fail)
    with pytest.raises(OSError, match="disk full"):
        kgen.compile_artifact(classifier()[0], tmp_path / "art", targets=("sm_90",))
    assert os.listdir(tmp_path) == []
