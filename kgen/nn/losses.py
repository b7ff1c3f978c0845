"""Losses as modules (PyTorch names) over kgen.ops' composites, which are built from
primitives and so differentiate and fuse with the rest of a training step."""
from __future__ import annotations

from kgen import ops
from kgen.errors import KgenError
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
    "binary_crossentropy": BCELoss, "mean_squared_error": MSELoss,
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
