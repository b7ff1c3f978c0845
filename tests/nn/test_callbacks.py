"""Keras's callbacks on kgen's fit: the protocol's order, and each callback's decisions on a
crafted sequence of monitored values (a callback ahead of it writes them into the epoch's
logs), with the epochs Keras's rules give worked out by hand beside each test;
validation_split and initial_epoch against runs that do the same by hand; the lr a
schedule sets against torch.optim.SGD stepped with the same rates."""
import csv

import numpy as np
import pytest
import torch

import kgen
from kgen import nn


def tiny_model(seed=0, lr=0.05, optimizer="adam"):
    nn.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.LogSoftmax(dim=1))
    opt = nn.Adam(model.parameters(), lr=lr) if optimizer == "adam" else nn.SGD(model.parameters(), lr=lr)
    return model.compile(opt, "nll", metrics=["accuracy"])


def data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, size=n).astype(np.int32)


class Feed(nn.Callback):
    """Writes the next of `values` into each epoch's logs under `name`, for the callbacks after it."""

    def __init__(self, name, values):
        super().__init__()
        self.name, self.values = name, list(values)

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = self.values[epoch]


class Record(nn.Callback):
    """Every hook call, as (hook, argument)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: self.calls.append((name[3:], *args[:1]) if args and isinstance(args[0], int)
                                                   else (name[3:],))
        return super().__getattribute__(name)


class EachEpoch(nn.Callback):
    """`what(model)` at each epoch's end, by epoch."""

    def __init__(self, what, at="on_epoch_end"):
        super().__init__()
        self.what, self.seen = what, {}
        setattr(self, at, lambda epoch, logs=None: self.seen.__setitem__(epoch, what(self.model)))


def test_hooks_run_in_keras_order_with_model_and_params():
    model, record = tiny_model(), Record()
    x, y = data(16)
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(x[:4], y[:4]), callbacks=[record],
                        verbose=False)
    epoch = lambda e: [("epoch_begin", e), ("train_batch_begin", 0), ("train_batch_end", 0),
                       ("train_batch_begin", 1), ("train_batch_end", 1), ("test_begin",),
                       ("test_batch_begin", 0), ("test_batch_end", 0), ("test_end",), ("epoch_end", e)]
    assert record.calls == [("train_begin",), *epoch(0), *epoch(1), ("train_end",)]
    assert record.model is model
    assert record.params == {"epochs": 2, "steps": 2, "verbose": False,
                             "metrics": ["loss", "accuracy", "val_loss", "val_accuracy"]}
    assert isinstance(model.history, nn.History) and model.history.history == history
    assert model.history.epoch == [0, 1]


def test_batch_logs_are_running_means_and_epoch_logs_are_the_history():
    model = tiny_model()
    batch_logs, epoch_logs = [], []

    class Logs(nn.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_logs.append(dict(logs))

        def on_epoch_end(self, epoch, logs=None):
            epoch_logs.append(dict(logs))

    x, y = data(16)
    history = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, callbacks=[Logs()], verbose=False)
    assert [logs["loss"] for logs in epoch_logs] == history["loss"]
    assert epoch_logs[0] == batch_logs[1]  # two equal batches: the epoch's mean is the last running mean
    assert set(batch_logs[0]) == {"loss", "accuracy"}


def test_early_stopping_waits_patience_epochs_without_improvement():
    # val_loss 1.0, 0.8 (best), 0.9 (wait 1), 0.85 (wait 2 = patience): stop after epoch 3
    model, stop = tiny_model(), nn.EarlyStopping(patience=2)
    history = model.fit(*data(), epochs=8, batch_size=16, verbose=False,
                        callbacks=[Feed("val_loss", [1.0, 0.8, 0.9, 0.85, 0.7, 0.6, 0.5, 0.4]), stop])
    assert len(history["loss"]) == 4 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    assert history["val_loss"] == [1.0, 0.8, 0.9, 0.85]


def test_early_stopping_min_delta_and_mode():
    # min_delta 0.1: 0.95 and 0.92 are no improvement on 1.0; patience 2 stops after epoch 2
    stop = nn.EarlyStopping(monitor="val_loss", min_delta=0.1, patience=2)
    history = tiny_model().fit(*data(), epochs=6, batch_size=16, verbose=False,
                               callbacks=[Feed("val_loss", [1.0, 0.95, 0.92, 0.5, 0.4, 0.3]), stop])
    assert len(history["loss"]) == 3
    # an accuracy is maximized ("auto"): 0.5, 0.6 (best), 0.55 (wait 1 = patience): stop after epoch 2
    stop = nn.EarlyStopping(monitor="val_accuracy", patience=1)
    history = tiny_model().fit(*data(), epochs=6, batch_size=16, verbose=False,
                               callbacks=[Feed("val_accuracy", [0.5, 0.6, 0.55, 0.7, 0.8, 0.9]), stop])
    assert len(history["loss"]) == 3 and stop.best == 0.6
    with pytest.raises(kgen.OptionError, match="EarlyStopping: mode must be 'auto', 'min' or 'max', got 'up'"):
        nn.EarlyStopping(mode="up")


def test_a_missing_monitor_warns_and_stops_nothing(tmp_path, monkeypatch):
    model, saved = tiny_model(), []
    monkeypatch.setattr(model, "save_weights", saved.append, raising=False)
    callbacks = [nn.EarlyStopping(patience=0), nn.ModelCheckpoint(str(tmp_path / "w"), save_best_only=True)]
    with pytest.warns(UserWarning) as caught:
        history = model.fit(*data(), epochs=3, batch_size=16, verbose=False, callbacks=callbacks)
    assert len(history["loss"]) == 3 and saved == []
    assert sorted({str(w.message) for w in caught}) == [
        f"{name}: the monitored 'val_loss' is not in the logs (they hold ['accuracy', 'loss']); skipping this epoch"
        for name in ("EarlyStopping", "ModelCheckpoint")]


def test_restore_best_weights_restores_the_best_epoch_s_weights():
    # best val_loss at epoch 1; patience 2 stops after epoch 3, and the model ends with epoch 1's weights
    model = tiny_model()
    x, y = data()
    weights = EachEpoch(lambda m: m.state_dict())
    outputs = EachEpoch(lambda m: m.predict(x))
    stop = nn.EarlyStopping(patience=2, restore_best_weights=True)
    model.fit(x, y, epochs=10, batch_size=8, verbose=False,
              callbacks=[weights, outputs, Feed("val_loss", [0.5, 0.1, 0.3, 0.4] + [0.0] * 6), stop])
    assert sorted(weights.seen) == [0, 1, 2, 3]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, weights.seen[1][name], err_msg=name)
    assert not np.array_equal(model.state_dict()["0.weight"], weights.seen[3]["0.weight"])
    np.testing.assert_array_equal(model.predict(x), outputs.seen[1])  # the compiled step reads the restored weights


def test_model_checkpoint_saves_only_on_improvement(tmp_path, monkeypatch):
    model, saved = tiny_model(), []
    monkeypatch.setattr(model, "save_weights", saved.append, raising=False)
    path = str(tmp_path / "ckpt" / "w-{epoch:02d}-{val_loss:.2f}.safetensors")
    check = nn.ModelCheckpoint(path, monitor="val_loss", save_best_only=True, save_weights_only=True)
    model.fit(*data(), epochs=5, batch_size=16, verbose=False,
              callbacks=[Feed("val_loss", [0.5, 0.6, 0.4, 0.45, 0.3]), check])
    assert [p.rsplit("/", 1)[1] for p in saved] == ["w-01-0.50.safetensors", "w-03-0.40.safetensors",
                                                     "w-05-0.30.safetensors"]
    assert (tmp_path / "ckpt").is_dir()  # made for the model to write into


def test_model_checkpoint_saves_every_epoch_and_maximizes_accuracy(tmp_path, monkeypatch):
    model, saved = tiny_model(), []
    monkeypatch.setattr(model, "save_weights", saved.append, raising=False)
    every = nn.ModelCheckpoint(str(tmp_path / "e{epoch}"), save_weights_only=True)
    best = nn.ModelCheckpoint(str(tmp_path / "best-{epoch}"), monitor="val_accuracy", save_best_only=True,
                              save_weights_only=True)
    model.fit(*data(), epochs=3, batch_size=16, verbose=False,
              callbacks=[Feed("val_accuracy", [0.5, 0.4, 0.7]), every, best])
    assert [p.rsplit("/", 1)[1] for p in saved] == ["e1", "best-1", "e2", "e3", "best-3"]
    bad = nn.ModelCheckpoint(str(tmp_path / "{val_los}"))
    with pytest.raises(kgen.OptionError, match=r"filepath .*\{val_los\}.* does not format"):
        model.fit(*data(), epochs=1, verbose=False, callbacks=[bad])


def test_model_checkpoint_writes_the_whole_training_state_by_default(tmp_path):
    model = tiny_model()
    model.fit(*data(), epochs=2, batch_size=16, verbose=False,
              callbacks=[nn.ModelCheckpoint(str(tmp_path / "last.safetensors"))])
    again = tiny_model()
    meta = nn.load(str(tmp_path / "last.safetensors"), again, again.optimizer)
    assert meta["epoch"] == 2
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value, err_msg=name)


def test_csv_logger_writes_each_epoch_s_row(tmp_path):
    model, path = tiny_model(), tmp_path / "log.csv"
    x, y = data()
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(x, y), callbacks=[nn.CSVLogger(path)],
                        verbose=False)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]  # Keras: sorted names
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for name, values in history.items():
        assert [float(r[name]) for r in rows] == values
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, validation_data=(x, y),
              callbacks=[nn.CSVLogger(path, append=True)], verbose=False)
    assert [int(r["epoch"]) for r in csv.DictReader(path.open())] == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name != "log.csv"]  # no temporary file left


def test_terminate_on_nan_stops_at_the_batch():
    model, record = tiny_model(), Record()
    x, y = data(24)
    x[10] = np.nan  # in the second batch of 8 (no shuffling)
    history = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=False,
                        callbacks=[nn.TerminateOnNaN(), record])
    assert [c for c in record.calls if c[0] == "train_batch_end"] == [("train_batch_end", 0), ("train_batch_end", 1)]
    assert len(history["loss"]) == 1 and np.isnan(history["loss"][0])


def test_stop_training_set_by_a_callback_ends_fit_after_the_epoch():
    class StopAfterSecond(nn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    model = tiny_model()
    assert len(model.fit(*data(), epochs=5, batch_size=8, verbose=False, callbacks=[StopAfterSecond()])["loss"]) == 2
    assert len(model.fit(*data(), epochs=1, batch_size=8, verbose=False)["loss"]) == 1  # the next fit starts anew


def test_learning_rate_scheduler_sets_the_lr_each_epoch():
    model = tiny_model(optimizer="sgd", lr=0.1)
    seen = EachEpoch(lambda m: m.optimizer.lr, at="on_epoch_begin")
    model.fit(*data(), epochs=3, batch_size=16, verbose=False,
              callbacks=[nn.LearningRateScheduler(lambda epoch, lr: 0.2 * 0.5 ** epoch), seen])
    assert seen.seen == {0: 0.2, 1: 0.1, 2: 0.05}
    seen = EachEpoch(lambda m: m.optimizer.lr, at="on_epoch_begin")
    model.fit(*data(), epochs=5, initial_epoch=3, batch_size=16, verbose=False,
              callbacks=[nn.LearningRateScheduler(lambda epoch: 0.01 * epoch), seen])  # Keras's older form
    assert seen.seen == {3: 0.03, 4: 0.04}
    with pytest.raises(kgen.OptionError, match="schedule must return a positive number, got None at epoch 0"):
        model.fit(*data(), epochs=1, verbose=False, callbacks=[nn.LearningRateScheduler(lambda epoch, lr: None)])


def test_learning_rate_scheduler_trains_as_torch_with_the_same_rates():
    """The rate is a device scalar of the compiled step (kgen/nn/optim.py): a new one needs no new compile."""
    schedule = [0.2, 0.05, 0.01]
    model = tiny_model(optimizer="sgd", lr=0.2)
    twin = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3),
                               torch.nn.LogSoftmax(dim=1))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x, y = data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=False,
              callbacks=[nn.LearningRateScheduler(lambda epoch, lr: schedule[epoch])])
    opt = torch.optim.SGD(twin.parameters(), lr=schedule[0])
    for lr in schedule:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        torch.nn.functional.nll_loss(twin(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
        opt.step()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, twin.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_reduce_lr_on_plateau_follows_keras_s_rule():
    # patience 2: epochs 1 and 2 do not improve on 1.0 -> cut after epoch 2; 0.5 at epoch 3 is the new
    # best; epochs 4 and 5 do not improve -> cut after epoch 5 (to min_lr where that is higher)
    for min_lr, last in ((0.0, 0.025), (0.04, 0.04)):
        model = tiny_model(optimizer="sgd", lr=0.1)
        seen = EachEpoch(lambda m: m.optimizer.lr)
        model.fit(*data(), epochs=6, batch_size=16, verbose=False,
                  callbacks=[Feed("val_loss", [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]),
                             nn.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=min_lr), seen])
        assert list(seen.seen.values()) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, last])
    with pytest.raises(kgen.OptionError, match="factor must be between 0 and 1"):
        nn.ReduceLROnPlateau(factor=1.5)


def test_validation_split_holds_out_the_last_samples_before_shuffling():
    x, y = data(10)
    split = tiny_model().fit(x, y, epochs=2, batch_size=4, validation_split=0.2, verbose=False)
    by_hand = tiny_model().fit(x[:8], y[:8], epochs=2, batch_size=4, validation_data=(x[8:], y[8:]),
                               verbose=False)
    assert split == by_hand and set(split) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for bad in (1.0, -0.1, True, "0.2"):
        with pytest.raises(kgen.OptionError, match=r"validation_split must be a fraction in \[0, 1\)"):
            tiny_model().fit(x, y, validation_split=bad, verbose=False)
    with pytest.raises(kgen.OptionError, match="validation_split=0.5 of 1 samples leaves no training sample"):
        tiny_model().fit(x[:1], y[:1], validation_split=0.5, verbose=False)
    with pytest.raises(kgen.InputError, match=r"validation_data must be a pair \(x_val, y_val\), got tuple of 3"):
        tiny_model().fit(x, y, validation_data=(x, y, y), verbose=False)


def test_initial_epoch_resumes_bit_identically():
    x, y = data(20)
    whole = tiny_model()
    whole.fit(x, y, epochs=4, batch_size=8, verbose=False)
    resumed = tiny_model()
    resumed.fit(x, y, epochs=2, batch_size=8, verbose=False)
    history = resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=False)
    assert len(history["loss"]) == 2 and resumed.history.epoch == [2, 3]
    for name, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    assert tiny_model().fit(x, y, epochs=2, initial_epoch=2, verbose=False) == {"loss": [], "accuracy": []}
    with pytest.raises(kgen.OptionError, match="initial_epoch must be an integer >= 0, got -1"):
        tiny_model().fit(x, y, initial_epoch=-1, verbose=False)


def test_callbacks_must_be_callbacks():
    with pytest.raises(kgen.OptionError, match="callbacks must be kgen.nn.callbacks.Callback instances.*got function"):
        tiny_model().fit(*data(), callbacks=[lambda logs: None], verbose=False)
