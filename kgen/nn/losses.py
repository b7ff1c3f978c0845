"""Losses as modules (PyTorch names) over kgen.ops' composites, which are built from
primitives and so differentiate and fuse with the rest of a training step."""
from __future__ import annotations

import math
import numbers

from kgen import ops
from kgen.errors import KgenError, OptionError
from kgen.nn.module import Module


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss: cross-entropy of logits [N, C] (or [N, C, d1, ...], or [C])
    and class indices or class probabilities, with torch's keywords (ops.cross_entropy)."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        return ops.cross_entropy(logits, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)

    def __call__(self, prediction, target):
        return self.forward(prediction, target)


class NLLLoss(CrossEntropyLoss):
    """torch.nn.NLLLoss: negative log-likelihood given log-probabilities (after log_softmax)."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(weight, ignore_index, reduction)

    def forward(self, log_probs, target):
        return ops.nll_loss(log_probs, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(CrossEntropyLoss):
    """torch.nn.MSELoss: squared errors, averaged, summed or kept (`reduction`)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction)

    def forward(self, prediction, target):
        return ops.mse(prediction, target, self.reduction)


class BCELoss(CrossEntropyLoss):
    """torch.nn.BCELoss: binary cross-entropy of probabilities (after a sigmoid), each
    element's loss times `weight` if given; `eps` as ops.binary_cross_entropy takes it."""

    def __init__(self, weight=None, reduction: str = "mean", eps: float = 1e-7):
        super().__init__(weight, reduction=reduction)
        self.eps = eps

    def forward(self, prob, target):
        return ops.binary_cross_entropy(prob, target, self.weight, self.reduction, self.eps)


class BCEWithLogitsLoss(CrossEntropyLoss):
    """torch.nn.BCEWithLogitsLoss: binary cross-entropy of logits, a sigmoid and BCELoss in
    one, computed as (1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x), which stays
    finite for any logit. `pos_weight` (broadcast over the last axis, one per class) weighs
    the positive examples, `weight` each element's loss."""

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None):
        super().__init__(weight, reduction=reduction)
        self.pos_weight = pos_weight

    def forward(self, logits, target):
        target = ops.cast(target, logits.dtype)
        log_weight = 1.0
        if self.pos_weight is not None:
            log_weight = 1.0 + (ops.cast(ops.constant(self.pos_weight), logits.dtype) - 1.0) * target
        # no linear cut-off (threshold): softplus(-x) to full precision for every logit, as torch's
        loss = (1.0 - target) * logits + log_weight * ops.softplus(-logits, threshold=math.inf)
        if self.weight is not None:
            loss = loss * ops.cast(ops.constant(self.weight), logits.dtype)
        return _reduced(loss, self.reduction, "BCEWithLogitsLoss")


class HuberLoss(CrossEntropyLoss):
    """torch.nn.HuberLoss (Keras's Huber): 0.5 * d^2 where |d| < delta, else
    delta * (|d| - 0.5 * delta), d being prediction - target."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction=reduction)
        self.delta = _positive("HuberLoss", "delta", delta, zero=False)

    def forward(self, prediction, target):
        d = prediction - target
        a = ops.abs(d)
        loss = ops.where(ops.less(a, self.delta), 0.5 * d * d, self.delta * (a - 0.5 * self.delta))
        return _reduced(loss, self.reduction, "HuberLoss")


class SmoothL1Loss(CrossEntropyLoss):
    """torch.nn.SmoothL1Loss: 0.5 * d^2 / beta where |d| < beta, else |d| - 0.5 * beta (the
    Huber loss divided by beta); beta 0 is the L1 loss."""

    def __init__(self, reduction: str = "mean", beta: float = 1.0):
        super().__init__(reduction=reduction)
        self.beta = _positive("SmoothL1Loss", "beta", beta, zero=True)

    def forward(self, prediction, target):
        d = prediction - target
        a = ops.abs(d)
        if self.beta == 0:  # the quadratic branch would divide by zero (NaN gradients)
            return _reduced(a, self.reduction, "SmoothL1Loss")
        return _reduced(ops.where(ops.less(a, self.beta), 0.5 * d * d / self.beta, a - 0.5 * self.beta),
                        self.reduction, "SmoothL1Loss")


def _reduced(loss, reduction: str, name: str):
    """Per-element losses averaged, summed or kept, as torch's `reduction` says."""
    if reduction not in ("mean", "sum", "none"):
        raise OptionError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return loss if reduction == "none" else ops.mean(loss) if reduction == "mean" else ops.sum(loss)


def _positive(loss: str, name: str, value, zero: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and \
        (value >= 0 if zero else value > 0)
    if not ok:
        raise OptionError(f"{loss}: {name} must be a number {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)


class SparseCategoricalCrossentropy(CrossEntropyLoss):
    """Keras's loss of integer labels; `from_logits=False` means the model ends in softmax."""

    def __init__(self, from_logits: bool = False):
        super().__init__()
        self.from_logits = from_logits

    def forward(self, prediction, labels):
        if self.from_logits:
            return ops.cross_entropy(prediction, labels)
        return ops.nll_loss(ops.log(ops.maximum(prediction, 1e-7)), labels)


class CategoricalCrossentropy(Module):
    """Keras's loss of one-hot (or probability) targets [N, C]: the mean over rows of
    -sum(target * log(prediction)), the prediction a softmax output (clipped at 1e-7 as
    Keras does) unless `from_logits`."""

    def __init__(self, from_logits: bool = False):
        super().__init__()
        self.from_logits = from_logits

    def forward(self, prediction, target):
        logs = ops.log_softmax(prediction, -1) if self.from_logits else ops.log(ops.maximum(prediction, 1e-7))
        return ops.neg(ops.mean(ops.sum(ops.mul(target, logs), -1)))


_BY_NAME = {
    "cross_entropy": CrossEntropyLoss, "nll": NLLLoss, "mse": MSELoss, "bce": BCELoss,
    "binary_crossentropy": BCELoss, "mean_squared_error": MSELoss, "bce_with_logits": BCEWithLogitsLoss,
    "huber": HuberLoss, "huber_loss": HuberLoss, "smooth_l1": SmoothL1Loss,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
}


def get(loss) -> Module:
    """A loss module from a module, a callable, or a Keras/PyTorch-style name."""
    if isinstance(loss, str):
        if loss not in _BY_NAME:
            raise KgenError(f"unknown loss {loss!r}: expected one of {', '.join(sorted(_BY_NAME))}")
        return _BY_NAME[loss]()
    if callable(loss):
        return loss
    raise KgenError(f"a loss must be a name or a callable, got {type(loss).__name__}")
