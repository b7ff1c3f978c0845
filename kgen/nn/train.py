"""Compiled training and evaluation steps, and the Keras-style compile/fit/evaluate/predict.

A training step is one kgen.function: forward, loss, backward (kgen.grad) and the
optimizer's updates, compiled together, so the updates fuse into the kernels that produce
the gradients. Shapes come from the data: the batch dimension is the size symbol `N`, so
one compiled step serves every batch size (the last, smaller batch included).
"""
from __future__ import annotations

import time
import numpy as np

from kgen import ops
from kgen.errors import KgenError
from kgen.function import function, tensor
from kgen.ir import dtypes
from kgen.ir.autodiff import grad
from kgen.nn import losses, optim
from kgen.nn.data import batches


PROGRESS_EVERY_S = 30.0  # fit prints a progress line this often within an epoch


def _inputs(x_example, y_example=None):
    """Symbolic inputs shaped like a batch of the data, with a symbolic batch size."""
    def spec(name, array):
        array = np.asarray(array)
        dt = dtypes.float32 if array.dtype.kind == "f" else dtypes.dtype(array.dtype)
        return tensor(name, ("N",) + array.shape[1:], dt)
    return spec("x", x_example), (spec("y", y_example) if y_example is not None else None)


def accuracy(prediction, labels):
    """Fraction of rows whose largest score is at the label (integer labels), or, for one
    output column of probabilities, whose rounding equals a 0/1 target."""
    if prediction.ndim == 2 and prediction.shape[1] != 1 and not labels.dtype.is_float:
        picked = ops.sum(prediction * ops.one_hot(labels, prediction.shape[1], prediction.dtype), axis=1)
        return ops.mean(ops.cast(ops.greater_equal(picked, ops.max(prediction, axis=1)), "float32"))
    return ops.mean(ops.cast(ops.equal(ops.greater(prediction, 0.5), ops.greater(labels, 0.5)), "float32"))


def train_step(model, loss_fn, optimizer, x_example, y_example, metrics=()):
    """A compiled step(x, y) -> [loss, *metrics] that also applies the optimizer's updates."""
    x, y = _inputs(x_example, y_example)
    model.train()
    prediction = model(x)
    loss = loss_fn(prediction, y)
    grads = grad(loss, optimizer.params)
    outputs = [loss] + [accuracy(prediction, y) for m in metrics if m == "accuracy"]
    return function([x, y], outputs, updates=optimizer.updates(grads) + model.state_updates())


def eval_step(model, loss_fn, x_example, y_example, metrics=()):
    """A compiled step(x, y) -> [loss, *metrics] with the model in evaluation mode."""
    x, y = _inputs(x_example, y_example)
    model.eval()
    prediction = model(x)
    outputs = [loss_fn(prediction, y)] + [accuracy(prediction, y) for m in metrics if m == "accuracy"]
    model.train()
    return function([x, y], outputs)


def predict_step(model, x_example):
    x, _ = _inputs(x_example)
    model.eval()
    out = function([x], model(x))
    model.train()
    return out


class Trainer:
    """Keras's compile/fit/evaluate/predict for a kgen.nn module."""

    def __init__(self, model, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=()):
        for m in metrics:
            if m != "accuracy":
                raise KgenError(f"unknown metric {m!r}: kgen offers 'accuracy'")
        self.model = model
        self.optimizer = optim.get(optimizer, model.parameters())
        self.loss = losses.get(loss)
        self.metrics = tuple(metrics)
        self._steps = {}

    def _step(self, kind, x, y=None):
        key = (kind, np.asarray(x).shape[1:], np.asarray(x).dtype.kind,
               None if y is None else (np.asarray(y).shape[1:], np.asarray(y).dtype.kind))
        if key not in self._steps:
            if kind == "train":
                self._steps[key] = train_step(self.model, self.loss, self.optimizer, x, y, self.metrics)
            elif kind == "eval":
                self._steps[key] = eval_step(self.model, self.loss, x, y, self.metrics)
            else:
                self._steps[key] = predict_step(self.model, x)
        return self._steps[key]

    @property
    def names(self):
        return ["loss"] + list(self.metrics)

    def fit(self, x, y, epochs: int = 1, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
            validation_data=None, verbose: bool = True) -> dict:
        """Train; returns the history (per-epoch means of loss and metrics, and val_* too)."""
        x, y = _as_arrays(x, y)
        history = {name: [] for name in self.names}
        steps = -(-len(x) // batch_size)
        for epoch in range(epochs):
            start = shown = time.perf_counter()
            sums, count = np.zeros(len(self.names)), 0
            for i, (xb, yb) in enumerate(batches(x, y, batch_size, shuffle=shuffle, seed=seed, epoch=epoch)):
                values = self._step("train", xb, yb)(xb, yb)
                sums += [float(v) * len(xb) for v in values]
                count += len(xb)
                if verbose and time.perf_counter() - shown >= PROGRESS_EVERY_S and i + 1 < steps:
                    shown = time.perf_counter()  # long epochs (the interpreter) show their progress
                    print(f"epoch {epoch + 1}/{epochs}  batch {i + 1}/{steps}  loss {sums[0] / count:.4f}  "
                          f"({shown - start:.1f}s)", flush=True)
            for name, total in zip(self.names, sums):
                history[name].append(total / count)
            line = "  ".join(f"{n} {history[n][-1]:.4f}" for n in self.names)
            if validation_data is not None:
                for name, value in zip(self.names, self.evaluate(*validation_data, verbose=False)):
                    history.setdefault(f"val_{name}", []).append(value)
                    line += f"  val_{name} {value:.4f}"
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}  {line}  ({time.perf_counter() - start:.1f}s)", flush=True)
        return history

    def evaluate(self, x, y, batch_size: int = 256, verbose: bool = True) -> list:
        x, y = _as_arrays(x, y)
        sums = np.zeros(len(self.names))
        for xb, yb in batches(x, y, batch_size, shuffle=False):
            sums += [float(v) * len(xb) for v in self._step("eval", xb, yb)(xb, yb)]
        result = list(sums / len(x))
        if verbose:
            print("  ".join(f"{n} {v:.4f}" for n, v in zip(self.names, result)))
        return result

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        x, _ = _as_arrays(x, None)
        return np.concatenate([self._step("predict", xb)(xb).cpu().numpy()
                               for xb, _ in batches(x, np.zeros(len(x)), batch_size, shuffle=False)])


def _as_arrays(x, y):
    x = np.asarray(x)
    x = x.astype(np.float32) if x.dtype == np.float64 else x
    if y is not None:
        y = np.asarray(y)
        y = y.astype(np.float32) if y.dtype == np.float64 else (y.astype(np.int32) if y.dtype == np.int64 else y)
    return x, y
