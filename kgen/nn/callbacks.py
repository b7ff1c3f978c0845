"""Keras's callbacks for `fit`: hooks a training loop calls at its beginning and end, each
epoch's and each batch's, with the logs so far (loss and metrics, val_* at an epoch's end).

The names, arguments and decisions follow Keras 3 (keras.callbacks), so Keras code runs with
its import line changed: `History`, `EarlyStopping`, `ModelCheckpoint`,
`LearningRateScheduler`, `ReduceLROnPlateau`, `CSVLogger`, `TerminateOnNaN`, and the progress
display `ProgbarLogger`, which fit adds itself when verbose. A callback's `model` is the kgen
module being trained: setting `model.stop_training = True` ends fit after the current epoch
(after the current batch, where a callback sets it from a batch hook).
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
import warnings
from numbers import Real
from pathlib import Path

import numpy as np

from kgen.errors import OptionError
from kgen.files import atomic_write


class Callback:
    """The protocol: every hook does nothing unless a subclass overrides it. `model` and
    `params` (epochs, steps per epoch, verbose, and the names logged: `metrics`) are set by
    fit before `on_train_begin`. One that `writes_files` runs only on rank 0 of a data-parallel
    fit (kgen.nn.distributed); the others run on every rank, as they steer training."""

    writes_files = False

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass


class CallbackList(Callback):
    """The callbacks of one fit, called in order: the user's, then a `History` (unless one
    was given), then the progress display when `verbose` (unless a ProgbarLogger was
    given), as Keras orders them, so the History records what the user's callbacks logged."""

    def __init__(self, callbacks, model, params: dict, verbose):
        super().__init__()
        self.callbacks = _checked_list(callbacks)
        self.history = next((c for c in self.callbacks if isinstance(c, History)), None)
        if self.history is None:
            self.history = History()
            self.callbacks.append(self.history)
        if verbose and not any(isinstance(c, ProgbarLogger) for c in self.callbacks):
            self.callbacks.append(ProgbarLogger())
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params(params)

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_train_begin(self, logs=None): self._call("on_train_begin", logs)
    def on_train_end(self, logs=None): self._call("on_train_end", logs)
    def on_epoch_begin(self, epoch, logs=None): self._call("on_epoch_begin", epoch, logs)
    def on_epoch_end(self, epoch, logs=None): self._call("on_epoch_end", epoch, logs)
    def on_train_batch_begin(self, batch, logs=None): self._call("on_train_batch_begin", batch, logs)
    def on_train_batch_end(self, batch, logs=None): self._call("on_train_batch_end", batch, logs)
    def on_test_begin(self, logs=None): self._call("on_test_begin", logs)
    def on_test_end(self, logs=None): self._call("on_test_end", logs)
    def on_test_batch_begin(self, batch, logs=None): self._call("on_test_batch_begin", batch, logs)
    def on_test_batch_end(self, batch, logs=None): self._call("on_test_batch_end", batch, logs)


def _checked_list(callbacks) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise OptionError(f"fit: callbacks must be a list of kgen.nn.callbacks.Callback, "
                          f"got {type(callbacks).__name__}") from None
    for c in callbacks:
        if not isinstance(c, Callback):
            raise OptionError(f"fit: callbacks must be kgen.nn.callbacks.Callback instances (subclass Callback "
                              f"and override its on_* hooks), got {type(c).__name__}")
    return callbacks


class History(Callback):
    """Every epoch's logs: `history` maps each name (loss, metrics, val_*) to its values by
    epoch, and `epoch` lists the epochs' indices. fit returns `history`; the History itself
    is `model.history` afterwards, as in Keras."""

    def __init__(self):
        super().__init__()
        self.history, self.epoch = {}, []

    def on_train_begin(self, logs=None):
        self.epoch = []
        for name in self.params.get("metrics", ()):  # fit(epochs=0) returns the names, with no values
            self.history.setdefault(name, [])
        self.model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)


def _improves(callback: str, mode: str, monitor: str, min_delta: float):
    """Keras's `monitor_op` with its `min_delta`: a function (current, best) -> bool, and the
    best value to start from. mode "auto" maximizes a name holding "acc", minimizes others."""
    if mode not in ("auto", "min", "max"):
        raise OptionError(f"{callback}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "max" or (mode == "auto" and "acc" in monitor):
        return (lambda current, best: current - abs(min_delta) > best), -math.inf
    return (lambda current, best: current + abs(min_delta) < best), math.inf


def _monitored(callback: str, monitor: str, logs):
    """The monitored value of this epoch's logs, or None (and a warning naming the logs
    there are) where it is missing, as Keras warns."""
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(f"{callback}: the monitored {monitor!r} is not in the logs (they hold {sorted(logs or {})}); "
                      f"skipping this epoch", stacklevel=3)
    return value


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than `min_delta` for
    `patience` epochs. With `restore_best_weights`, the model ends with the weights (its
    state_dict) of the best epoch seen, as Keras 3 does, whether or not training stopped early."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline=None, restore_best_weights: bool = False):
        super().__init__()
        self.monitor, self.patience, self.verbose, self.baseline = monitor, patience, verbose, baseline
        self.restore_best_weights = restore_best_weights
        self.improves, self.start = _improves("EarlyStopping", mode, monitor, min_delta)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best, self.best_weights = self.start, None

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored("EarlyStopping", self.monitor, logs)
        if current is None:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.state_dict(), epoch  # the first epoch: the best so far
        self.wait += 1
        if self.improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            if self.baseline is None or self.improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"restoring the weights of the best epoch, {self.best_epoch + 1}")
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves after each epoch; `filepath` may hold Keras's fields, `{epoch:02d}` (counted
    from 1) and any log's name (`{val_loss:.3f}`). With `save_best_only`, only when `monitor`
    improves on the best so far. `save_weights_only` writes `model.save_weights(path)`; else
    (Keras's default) the whole training state, weights and the optimizer's state with the
    epoch (`nn.save(path, model, optimizer, epoch=...)`), from which `nn.load` and
    `fit(initial_epoch=...)` resume exactly. kgen has no whole-model file: a model is code."""

    writes_files = True

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", save_freq="epoch"):
        super().__init__()
        if save_freq != "epoch":
            raise OptionError(f"ModelCheckpoint: save_freq must be 'epoch' (kgen saves after epochs), "
                              f"got {save_freq!r}")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.improves, self.best = _improves("ModelCheckpoint", mode, monitor, 0.0)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            current = _monitored("ModelCheckpoint", self.monitor, logs)
            if current is None or not self.improves(current, self.best):
                return
            if self.verbose:
                print(f"epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}")
            self.best = current
        path = self._path(epoch, logs)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            # checkpoints sit beside fit in nn; imported when one is written (safetensors)
            from kgen.nn.checkpoint import save
            save(path, self.model, self.model.optimizer, epoch=epoch + 1)

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise OptionError(f"ModelCheckpoint: filepath {self.filepath!r} does not format with epoch and the "
                              f"logs {sorted(logs)}: {e!r}") from None


def _learning_rate(model) -> float:
    lr = model.optimizer.lr  # a Python float, or a device scalar (a shared value) that holds it
    return float(lr.get_value() if hasattr(lr, "get_value") else lr)


class LearningRateScheduler(Callback):
    """Sets the optimizer's lr at each epoch's beginning to `schedule(epoch, lr)` (or
    `schedule(epoch)`, Keras's older form), epochs counted from 0."""

    def __init__(self, schedule, verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise OptionError(f"LearningRateScheduler: schedule must be a function (epoch, lr) -> lr, "
                              f"got {type(schedule).__name__}")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        try:
            lr = self.schedule(epoch, _learning_rate(self.model))
        except TypeError:  # Keras's older schedules take the epoch alone
            lr = self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (Real, np.floating)) or not lr > 0:
            raise OptionError(f"LearningRateScheduler: the schedule must return a positive number, got {lr!r} "
                              f"at epoch {epoch}")
        self.model.optimizer.lr = float(lr)
        if self.verbose:
            print(f"epoch {epoch + 1}: learning rate {float(lr):.6g}")


class ReduceLROnPlateau(Callback):
    """Multiplies the lr by `factor` when `monitor` has not improved by more than
    `min_delta` for `patience` epochs, waiting `cooldown` epochs after each cut, never
    below `min_lr` (Keras's rule)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        super().__init__()
        if not 0 < factor < 1:
            raise OptionError(f"ReduceLROnPlateau: factor must be between 0 and 1 (it cuts the lr), got {factor!r}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self.improves, self.start = _improves("ReduceLROnPlateau", mode, monitor, min_delta)

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = self.start, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored("ReduceLROnPlateau", self.monitor, logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.improves(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(epoch)

    def _reduce(self, epoch: int) -> None:
        old = _learning_rate(self.model)
        if old > np.float32(self.min_lr):
            new = max(old * self.factor, self.min_lr)
            self.model.optimizer.lr = new
            if self.verbose:
                print(f"epoch {epoch + 1}: ReduceLROnPlateau reduced the learning rate to {new:.6g}")
            self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Each epoch's logs as a CSV row (`epoch` first, then the names in sorted order, as
    Keras writes them). The whole file is rewritten atomically after each epoch, so a
    reader never sees half a row; with `append`, rows already in the file are kept."""

    writes_files = True

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename, self.separator, self.append = Path(filename), separator, append

    def on_train_begin(self, logs=None):
        self.text = self.filename.read_text() if self.append and self.filename.exists() else ""
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.separator, lineterminator="\n")
        if self.keys is None:
            self.keys = sorted(logs)
            if not self.text:
                writer.writerow(["epoch", *self.keys])
        writer.writerow([epoch, *(logs.get(k, "NA") for k in self.keys)])
        self.text += out.getvalue()
        atomic_write(self.filename, self.text)


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose running loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class ProgbarLogger(Callback):
    """fit's progress: on a terminal, a tqdm bar per epoch (steps, the running loss and
    metrics, rate, ETA) left as the epoch's line with its val_* values; elsewhere (a file, a
    pipe, a log) or with verbose=2, one plain line per epoch."""

    def on_train_begin(self, logs=None):
        self.bar_mode = self.params.get("verbose") != 2 and sys.stdout.isatty()
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        if self.bar_mode:
            # tqdm only here: the display needs it, `import kgen.nn` does not
            from tqdm import tqdm
            self.bar = tqdm(total=self.params["steps"], desc=f"epoch {epoch + 1}/{self.params['epochs']}",
                            unit="step", file=sys.stdout, leave=True, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(_format_logs(logs), refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(_format_logs(logs), refresh=False)
            self.bar.close()
            self.bar = None
            return
        took = time.perf_counter() - self.start
        print(f"epoch {epoch + 1}/{self.params['epochs']}  {_format_logs(logs, '  ', ' ')}  ({took:.1f}s)", flush=True)


def _format_logs(logs, between: str = ", ", equals: str = "=") -> str:
    return between.join(f"{name}{equals}{value:.4f}" for name, value in (logs or {}).items())


__all__ = ["Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "ReduceLROnPlateau", "CSVLogger", "TerminateOnNaN", "ProgbarLogger"]
