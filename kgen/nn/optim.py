"""Optimizers as update expressions.

An optimizer does not run anything: `updates(params, grads)` returns (shared, new value)
pairs for the parameters and its own state (momentum buffers, Adam's moments and step).
They join the training step's graph, so fusion computes each parameter's update in the
epilogue of the kernel that produces its gradient (DESIGN.md rule 5), and the gradient
never reaches memory. Formulas follow torch.optim.
"""
from __future__ import annotations

import numpy as np

from kgen import ops
from kgen.errors import KgenError
from kgen.function import shared


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise KgenError(f"{type(self).__name__} got no parameters")
        if lr <= 0:
            raise KgenError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.lr = lr

    def updates(self, grads) -> list:
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: v = momentum*v + g; p -= lr*v (plain p -= lr*g without momentum)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = [shared(np.zeros(p.shape, np.float32), name=f"{p.name}_velocity")
                         for p in self.params] if momentum else []

    def updates(self, grads) -> list:
        out = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity[i]
                step = self.momentum * v + g
                out.append((v, step))
                g = step
            out.append((p, p - self.lr * g))
        return out


class Adam(Optimizer):
    """torch.optim.Adam (and Keras's Adam with its epsilon): bias-corrected moments."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step = shared(np.float32(0.0), name=f"adam{id(self):x}_step")
        self.m = [shared(np.zeros(p.shape, np.float32), name=f"{p.name}_m") for p in self.params]
        self.v = [shared(np.zeros(p.shape, np.float32), name=f"{p.name}_v") for p in self.params]

    def updates(self, grads) -> list:
        t = self.step + 1.0
        lr_t = self.lr / (1.0 - ops.pow(self.beta1, t))  # bias corrections, as scalars
        root_t = 1.0 / ops.sqrt(1.0 - ops.pow(self.beta2, t))
        out = [(self.step, t)]
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m_new = self.beta1 * m + (1.0 - self.beta1) * g
            v_new = self.beta2 * v + (1.0 - self.beta2) * g * g
            out += [(m, m_new), (v, v_new), (p, p - lr_t * m_new / (ops.sqrt(v_new) * root_t + self.eps))]
        return out


_BY_NAME = {"sgd": SGD, "adam": Adam}


def get(optimizer, params) -> Optimizer:
    """An optimizer from an instance, or a name ("sgd", "adam") with default settings."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()](params)
    raise KgenError(f"unknown optimizer {optimizer!r}: expected an Optimizer or one of {sorted(_BY_NAME)}")
