"""Metrics by name, as `model.compile(metrics=[...])` takes them: each is a function of the
model's output and the labels giving one float32 scalar, the batch's mean, computed in the
compiled step beside the loss.

Names are Keras's: "accuracy" (kgen.nn.train.accuracy: the label's class scored highest,
or for one output column a probability rounding to its 0/1 target), "binary_accuracy",
"top_k_accuracy" / "sparse_top_k_categorical_accuracy" / "top5" (the label among the 5
highest scores), and "top1".."top10".
"""
from __future__ import annotations

import re

from kgen import ops
from kgen.errors import KgenError, OptionError, ShapeError


def accuracy(prediction, labels):
    """kgen.nn.train.accuracy, which the training steps have always computed."""
    from kgen.nn.train import accuracy as train_accuracy  # a cycle within nn: train.py resolves names here
    return train_accuracy(prediction, labels)


def binary_accuracy(prediction, labels, threshold: float = 0.5):
    """Keras's binary_accuracy: the fraction of elements where prediction > threshold agrees
    with a 0/1 target (> 0.5)."""
    return ops.mean(ops.cast(ops.equal(ops.greater(prediction, threshold), ops.greater(labels, 0.5)), "float32"))


def top_k_accuracy(prediction, labels, k: int = 5):
    """The fraction of rows whose label is among the k highest scores of `prediction` [N, C],
    labels being class indices [N] or one-hot rows [N, C]. As tf.math.in_top_k (Keras's
    sparse_top_k_categorical_accuracy), a label tied with the k-th score counts: the label
    is in the top k when fewer than k classes score strictly higher."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptionError(f"top_k_accuracy: k must be a positive integer, got {k!r}")
    if prediction.ndim != 2:
        raise ShapeError(f"top_k_accuracy: expected scores [N, C], got {prediction.type_str()}")
    classes = prediction.shape[1]
    hot = ops.cast(labels, prediction.dtype) if labels.dtype.is_float else \
        ops.one_hot(labels, classes, prediction.dtype)
    picked = ops.sum(prediction * hot, axis=1, keepdims=True)
    higher = ops.sum(ops.cast(ops.greater(prediction, picked), "float32"), axis=1)
    return ops.mean(ops.cast(ops.less(higher, float(k)), "float32"))


def _top(k: int):
    def metric(prediction, labels):
        return top_k_accuracy(prediction, labels, k)
    metric.__name__ = f"top{k}"
    return metric


_BY_NAME = {"accuracy": accuracy, "acc": accuracy, "binary_accuracy": binary_accuracy,
            "top_k_accuracy": _top(5), "sparse_top_k_categorical_accuracy": _top(5)}
_TOP = re.compile(r"top([1-9]|10)")


def get(metric):
    """The metric function for a name (see the module's docstring) or a callable
    (prediction, labels) -> scalar, returned as it is."""
    if isinstance(metric, str):
        if metric in _BY_NAME:
            return _BY_NAME[metric]
        if _TOP.fullmatch(metric):
            return _top(int(metric[3:]))
        raise KgenError(f"unknown metric {metric!r}: expected a callable or one of "
                        f"{', '.join(sorted(_BY_NAME))}, top1 .. top10")
    if callable(metric):
        return metric
    raise KgenError(f"a metric must be a name or a callable, got {type(metric).__name__}")


def name(metric) -> str:
    """The metric's name in a history: the name it was given, or its function's name."""
    return metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)
