"""Losses as modules (PyTorch names) over kgen.ops' composites, which are built from
primitives and so differentiate and fuse with the rest of a training step."""
from __future__ import annotations

from kgen import ops
from kgen.errors import KgenError
from kgen.nn.module import Module


class CrossEntropyLoss(Module):
    """Mean cross-entropy of integer class labels given logits [N, C]."""

    def forward(self, logits, labels):
        return ops.cross_entropy(logits, labels)

    def __call__(self, prediction, target):
        return self.forward(prediction, target)


class NLLLoss(CrossEntropyLoss):
    """Mean negative log-likelihood given log-probabilities [N, C] (after log_softmax)."""

    def forward(self, log_probs, labels):
        return ops.nll_loss(log_probs, labels)


class MSELoss(CrossEntropyLoss):
    def forward(self, prediction, target):
        return ops.mse(prediction, target)


class BCELoss(CrossEntropyLoss):
    """Mean binary cross-entropy of probabilities (after a sigmoid)."""

    def forward(self, prob, target):
        return ops.binary_cross_entropy(prob, target)


class SparseCategoricalCrossentropy(CrossEntropyLoss):
    """Keras's loss of integer labels; `from_logits=False` means the model ends in softmax."""

    def __init__(self, from_logits: bool = False):
        super().__init__()
        self.from_logits = from_logits

    def forward(self, prediction, labels):
        if self.from_logits:
            return ops.cross_entropy(prediction, labels)
        return ops.nll_loss(ops.log(ops.maximum(prediction, 1e-7)), labels)


_BY_NAME = {
    "cross_entropy": CrossEntropyLoss, "nll": NLLLoss, "mse": MSELoss, "bce": BCELoss,
    "binary_crossentropy": BCELoss, "mean_squared_error": MSELoss,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
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
