"""Optimizers as update expressions.

An optimizer does not run anything: `updates(grads)` returns (shared, new value) pairs for
the parameters and its own state (momentum buffers, moments, step counts). They join the
training step's graph, so fusion computes each parameter's update in the epilogue of the
kernel that produces its gradient (DESIGN.md rule 5), and the gradient never reaches
memory. Formulas follow torch.optim, weight decay included (added to the gradient, as L2,
except AdamW's, which is decoupled).

Hyper-parameters (lr, momentum, betas, weight decay, ...) are float32 device scalars that
the update kernels read, not constants of the graph: assigning `optimizer.lr = 0.05` (as a
schedule does, kgen.nn.schedules) takes effect in the next step with no new trace or
compile. Reading one gives back the Python float last assigned, so a schedule computes in
double precision as torch's does; only the kernels see it rounded to float32.

A setting whose "off" value leaves a term out of the step's graph (momentum or weight_decay
0, as torch skips them; clip_grad_norm None) cannot be turned on later: build the optimizer
with it on. Clipping scales every gradient by min(1, max_norm / (norm + 1e-6)), the norm taken
over all gradients together, as torch.nn.utils.clip_grad_norm_ does before a step.
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

from kgen import ops
from kgen.errors import KgenError, OptionError
from kgen.function import shared


_ALWAYS = object()  # a Hyper whose term is always in the step's graph


class Hyper:
    """A hyper-parameter: a float >= 0 (> 0 if `positive`, < `high` if given), mirrored
    into a float32 device scalar the update reads. `off` is the value that leaves its term
    out of the graph, when the optimizer is built with it."""

    def __init__(self, high: float | None = None, positive: bool = False, off=_ALWAYS):
        self.high, self.positive, self.off = high, positive, off

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        return optimizer._settings[self.name]

    def __set__(self, optimizer, value):
        cls = type(optimizer).__name__
        if self.name not in optimizer._settings and self.off is not _ALWAYS and value == self.off:
            optimizer._off.add(self.name)
            optimizer._settings[self.name] = self.off
            return
        if self.name in optimizer._off:
            if value == self.off:
                return
            raise OptionError(f"{cls}: built with {self.name}={self.off!r}, so its step has no {self.name} term; "
                              f"build it with {self.name} set to change it later (got {value!r})")
        value = self._checked(cls, value)
        optimizer._settings[self.name] = value
        scalar = optimizer._scalars.get(self.name)
        if scalar is None:
            optimizer._scalars[self.name] = shared(np.float32(value), name=f"{optimizer._prefix}_{self.name}")
        else:
            scalar.set_value(np.float32(value))

    def _checked(self, cls: str, value) -> float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            value = float(value)
            ok = (value > 0 if self.positive else value >= 0) and (self.high is None or value < self.high)
        if not ok:
            bound = "> 0" if self.positive else ">= 0" if self.high is None else f"in [0, {self.high:g})"
            raise OptionError(f"{cls}: {self.name} must be a number {bound}, got {value!r}")
        return value


class Optimizer:
    """The parameters, the hyper-parameters as device scalars, and optional global-norm
    gradient clipping; subclasses give the update rule (`_updates`)."""

    lr = Hyper()
    weight_decay = Hyper(off=0.0)
    clip_grad_norm = Hyper(positive=True, off=None)

    def __init__(self, params, lr: float, weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        self._settings, self._scalars, self._off = {}, {}, set()
        self._prefix = f"{type(self).__name__.lower()}{id(self):x}"
        self.params = list(params)
        if not self.params:
            raise KgenError(f"{type(self).__name__} got no parameters")
        self.lr, self.weight_decay, self.clip_grad_norm = lr, weight_decay, clip_grad_norm

    def scalar(self, name: str):
        """The device scalar holding hyper-parameter `name`, as the step's graph reads it."""
        return self._scalars[name]

    def updates(self, grads) -> list:
        """(shared variable, new value) pairs for one step given the parameters' gradients."""
        grads = list(grads)
        if len(grads) != len(self.params):
            raise KgenError(f"{type(self).__name__}: expected {len(self.params)} gradients (one per parameter), "
                            f"got {len(grads)}")
        if self.clip_grad_norm is not None:
            scale = clip_scale(grads, self.scalar("clip_grad_norm"))
            grads = [g * scale for g in grads]
        return self._updates(grads)

    def _updates(self, grads) -> list:
        raise NotImplementedError

    def _decayed(self, g, p):
        """torch's L2 weight decay: the parameter times weight_decay added to its gradient
        (no term when built with weight_decay 0, which keeps the zoo's pinned kernels)."""
        return g if "weight_decay" in self._off else g + self.scalar("weight_decay") * p

    def _state_like_params(self, what: str, fill: float = 0.0) -> list:
        """One float32 state tensor per parameter, named after it (`0.weight_m`), filled with `fill`."""
        return [shared(np.full(p.shape, fill, np.float32), name=f"{p.name}_{what}") for p in self.params]


def clip_scale(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)), the norm
    being the 2-norm of all gradients together. One scalar, computed once per step."""
    total = None
    for g in grads:
        part = ops.sum(g * g)
        total = part if total is None else total + part
    return ops.minimum(max_norm / (ops.sqrt(total) + 1e-6), 1.0)


class SGD(Optimizer):
    """torch.optim.SGD: v = momentum*v + g; p -= lr*v (p -= lr*(g + momentum*v) with
    nesterov; plain p -= lr*g without momentum), g including weight_decay*p."""

    momentum = Hyper(off=0.0)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.momentum = momentum
        if nesterov and not self.momentum:
            raise OptionError("SGD: nesterov needs a momentum > 0, got momentum=0")
        self.nesterov = bool(nesterov)
        self.velocity = self._state_like_params("velocity") if self.momentum else []

    def _updates(self, grads) -> list:
        out = []
        for i, (p, g) in enumerate(zip(self.params, grads)):
            g = self._decayed(g, p)
            if self.velocity:
                momentum, v = self.scalar("momentum"), self.velocity[i]
                buf = momentum * v + g
                out.append((v, buf))
                g = g + momentum * buf if self.nesterov else buf
            out.append((p, p - self.scalar("lr") * g))
        return out


class Adam(Optimizer):
    """torch.optim.Adam (and Keras's Adam with its epsilon): bias-corrected moments, the
    gradient including weight_decay*p."""

    beta1 = Hyper(high=1.0)
    beta2 = Hyper(high=1.0)
    eps = Hyper()
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.betas, self.eps = betas, eps
        self.step = shared(np.float32(0.0), name=f"adam{id(self):x}_step")
        self.m = self._state_like_params("m")
        self.v = self._state_like_params("v")

    @property
    def betas(self) -> tuple:
        return self.beta1, self.beta2

    @betas.setter
    def betas(self, betas) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise OptionError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1, self.beta2 = betas

    def _updates(self, grads) -> list:
        lr, beta1, beta2, eps = (self.scalar(n) for n in ("lr", "beta1", "beta2", "eps"))
        t = self.step + 1.0
        # the bias corrections read two scalars each, so every update kernel recomputes them
        # (R5) rather than a kernel of their own writing them
        correction1 = 1.0 / (1.0 - ops.pow(beta1, t))
        root2 = 1.0 / ops.sqrt(1.0 - ops.pow(beta2, t))
        out = [(self.step, t)]
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            p_decayed = p
            if not self.decoupled:
                g = self._decayed(g, p)
            elif "weight_decay" not in self._off:
                p_decayed = p * (1.0 - lr * self.scalar("weight_decay"))
            m_new = beta1 * m + (1.0 - beta1) * g
            v_new = beta2 * v + (1.0 - beta2) * g * g
            step = lr * (correction1 * m_new) / (ops.sqrt(v_new) * root2 + eps)
            out += [(m, m_new), (v, v_new), (p, p_decayed - step)]
        return out


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p *= 1 - lr*weight_decay before
    the Adam step (torch's default weight_decay 0.01)."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 clip_grad_norm: float | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, clip_grad_norm)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: s = alpha*s + (1-alpha)*g^2; p -= lr*g/(sqrt(s) + eps), with
    `centered` the mean gradient's square taken from s first, and `momentum` a buffer
    b = momentum*b + g/(sqrt(s) + eps) stepped instead."""

    alpha = Hyper()
    eps = Hyper()
    momentum = Hyper(off=0.0)

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum
        self.centered = bool(centered)
        self.square_avg = self._state_like_params("square_avg")
        self.grad_avg = self._state_like_params("grad_avg") if self.centered else []
        self.momentum_buffer = self._state_like_params("momentum_buffer") if self.momentum else []

    def _updates(self, grads) -> list:
        lr, alpha, eps = (self.scalar(n) for n in ("lr", "alpha", "eps"))
        out = []
        for i, (p, g, s) in enumerate(zip(self.params, grads, self.square_avg)):
            g = self._decayed(g, p)
            s_new = alpha * s + (1.0 - alpha) * g * g
            out.append((s, s_new))
            if self.centered:
                a = self.grad_avg[i]
                a_new = a + (1.0 - alpha) * (g - a)  # torch's lerp
                out.append((a, a_new))
                s_new = s_new - a_new * a_new
            ratio = g / (ops.sqrt(s_new) + eps)
            if self.momentum_buffer:
                b = self.momentum_buffer[i]
                ratio = self.scalar("momentum") * b + ratio
                out.append((b, ratio))
            out.append((p, p - lr * ratio))
        return out


class Adagrad(Optimizer):
    """torch.optim.Adagrad: s += g^2; p -= clr*g/(sqrt(s) + eps) with clr = lr / (1 +
    (t - 1)*lr_decay) at step t, the sums starting at initial_accumulator_value."""

    lr_decay = Hyper()
    eps = Hyper()

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.lr_decay, self.eps = lr_decay, eps
        initial = initial_accumulator_value
        if isinstance(initial, bool) or not isinstance(initial, numbers.Real) or not 0 <= initial < math.inf:
            raise OptionError(f"Adagrad: initial_accumulator_value must be a number >= 0, got {initial!r}")
        self.step = shared(np.float32(0.0), name=f"adagrad{id(self):x}_step")
        self.sum = self._state_like_params("sum", float(initial))

    def _updates(self, grads) -> list:
        lr, lr_decay, eps = (self.scalar(n) for n in ("lr", "lr_decay", "eps"))
        clr = lr / (1.0 + self.step * lr_decay)
        out = [(self.step, self.step + 1.0)]
        for p, g, s in zip(self.params, grads, self.sum):
            g = self._decayed(g, p)
            s_new = s + g * g
            out += [(s, s_new), (p, p - clr * g / (ops.sqrt(s_new) + eps))]
        return out


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(optimizer, params) -> Optimizer:
    """An optimizer from an instance, or a name ("sgd", "adam", "adamw", "rmsprop",
    "adagrad") with default settings."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _BY_NAME:
        return _BY_NAME[optimizer.lower()](params)
    raise KgenError(f"unknown optimizer {optimizer!r}: expected an Optimizer or one of {sorted(_BY_NAME)}")


def setting_of(shared_name: str):
    """The setting (lr, momentum, step, ...) that an optimizer's own device scalar holds, from
    the scalar's name ("adam7f..._lr" -> "lr"), or None for any other shared value."""
    kinds = "|".join(sorted({c.__name__.lower() for c in (SGD, Adam, AdamW, RMSprop, Adagrad)}, key=len,
                            reverse=True))
    found = re.fullmatch(rf"(?:{kinds})[0-9a-f]+_(\w+)", shared_name)
    return found.group(1) if found else None
