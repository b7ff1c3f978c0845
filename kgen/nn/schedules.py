"""Learning-rate schedules, with torch.optim.lr_scheduler's formulas and calling order.

A schedule sets `optimizer.lr`, a device scalar the compiled step reads (kgen.nn.optim),
so a new learning rate costs no trace and no compile. As torch's, a schedule applies its
epoch-0 value when built and `step()` moves it on by one: call it after each epoch
(`interval == "epoch"`), or after each batch for OneCycleLR and InverseTimeDecay
(`interval == "batch"`); fit steps an optimizer's `lr_schedule` after each batch itself.
ReduceLROnPlateau's step takes the monitored value.

Values are computed in closed form from the starting learning rate (torch's chainable
forms give the same numbers up to rounding), so assigning `optimizer.lr` by hand between
steps is overridden by the next step rather than compounded.
"""
from __future__ import annotations

import math
import numbers
from bisect import bisect_right

from kgen.errors import OptionError


class Schedule:
    """A schedule of `optimizer.lr` over epochs: `lr_at(epoch)` is its formula; `step()`
    advances `last_epoch` and applies it. `base_lr` is the optimizer's lr when built."""

    interval = "epoch"

    def __init__(self, optimizer):
        if not hasattr(optimizer, "lr"):
            raise OptionError(f"{type(self).__name__}: expected a kgen.nn optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = -1
        self.step()

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Move on by one epoch (one batch for a per-batch schedule) and set the optimizer's lr."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The learning rate the last step set (torch's name; one value, one parameter group)."""
        return self.optimizer.lr


class StepLR(Schedule):
    """torch's StepLR: lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _count(self, "step_size", step_size)
        self.gamma = _number(self, "gamma", gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(Schedule):
    """torch's MultiStepLR: lr = base_lr * gamma ** (the milestones passed, repeats counted)."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1):
        self.milestones = sorted(_count(self, "milestones", m, minimum=0) for m in milestones)
        self.gamma = _number(self, "gamma", gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** bisect_right(self.milestones, epoch)


class ExponentialLR(Schedule):
    """torch's ExponentialLR: lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma: float):
        self.gamma = _number(self, "gamma", gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(Schedule):
    """torch's CosineAnnealingLR, eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2,
    after an optional linear warm-up: with `warmup` = w > 0, epochs 0..w-1 ramp from
    base_lr * warmup_start_factor towards base_lr (torch's LinearLR) and the cosine's t counts
    from epoch w, as torch's SequentialLR([LinearLR(start_factor, total_iters=w),
    CosineAnnealingLR(T_max, eta_min)], milestones=[w]) does."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, warmup: int = 0,
                 warmup_start_factor: float = 1.0 / 3):
        self.T_max = _count(self, "T_max", T_max)
        self.eta_min = _number(self, "eta_min", eta_min)
        self.warmup = _count(self, "warmup", warmup, minimum=0)
        if not (isinstance(warmup_start_factor, numbers.Real) and 0 < warmup_start_factor <= 1):
            raise OptionError(f"CosineAnnealingLR: warmup_start_factor must be a number in (0, 1], "
                              f"got {warmup_start_factor!r}")
        self.warmup_start_factor = float(warmup_start_factor)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup:
            s = self.warmup_start_factor
            return self.base_lr * (s + (1.0 - s) * epoch / self.warmup)
        t = epoch - self.warmup
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class InverseTimeDecay(Schedule):
    """Keras's InverseTimeDecay, stepped per batch: lr = base_lr / (1 + decay_rate * t /
    decay_steps) at step t (t // decay_steps with `staircase`). Keras's legacy
    `SGD(decay=d)` is decay_steps=1, decay_rate=d, lr / (1 + d * iterations); kgen.nn.keras's
    SGD builds it as the optimizer's `lr_schedule`, which fit steps after every batch."""

    interval = "batch"

    def __init__(self, optimizer, decay_rate: float, decay_steps: int = 1, staircase: bool = False):
        self.decay_rate = _number(self, "decay_rate", decay_rate)
        self.decay_steps = _count(self, "decay_steps", decay_steps)
        self.staircase = bool(staircase)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        t = epoch // self.decay_steps if self.staircase else epoch / self.decay_steps
        return self.base_lr / (1.0 + self.decay_rate * t)


class OneCycleLR(Schedule):
    """torch's OneCycleLR, stepped per batch: lr rises from max_lr / div_factor to max_lr over
    the first pct_start of total_steps, then anneals to that / final_div_factor ("cos" or
    "linear"); with three_phase it first comes back down to the start. With cycle_momentum
    (torch's default) the optimizer's momentum, or Adam's beta1, moves the other way,
    between max_momentum and base_momentum. Building it sets the optimizer's lr."""

    interval = "batch"

    def __init__(self, optimizer, max_lr: float, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False):
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        if not (isinstance(pct_start, numbers.Real) and 0 <= pct_start <= 1):
            raise OptionError(f"OneCycleLR: pct_start must be a number in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise OptionError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal = _cos if anneal_strategy == "cos" else _linear
        top = _number(self, "max_lr", max_lr)
        initial = top / _number(self, "div_factor", div_factor)
        low = initial / _number(self, "final_div_factor", final_div_factor)
        up = float(pct_start * self.total_steps) - 1
        if three_phase:
            self.phases = [(up, initial, top, max_momentum, base_momentum),
                           (float(2 * pct_start * self.total_steps) - 2, top, initial, base_momentum, max_momentum),
                           (self.total_steps - 1, initial, low, max_momentum, max_momentum)]
        else:
            self.phases = [(up, initial, top, max_momentum, base_momentum),
                           (self.total_steps - 1, top, low, base_momentum, max_momentum)]
        self.momentum_name = _momentum_name(optimizer) if cycle_momentum else None
        optimizer.lr = initial
        super().__init__(optimizer)

    def _at(self, step: int) -> tuple:
        """(lr, momentum) at `step`: the phase it falls in, interpolated (torch's phase search)."""
        if step > self.total_steps:
            raise OptionError(f"OneCycleLR: stepped {step} times, more than its total_steps {self.total_steps}")
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                return self.anneal(lr0, lr1, pct), self.anneal(m0, m1, pct)
            start = end

    def lr_at(self, epoch: int) -> float:
        return self._at(epoch)[0]

    def step(self) -> None:
        super().step()
        if self.momentum_name is not None:
            setattr(self.optimizer, self.momentum_name, self._at(self.last_epoch)[1])


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


def _momentum_name(optimizer) -> str:
    """The setting OneCycleLR cycles: SGD's or RMSprop's momentum, or Adam's beta1."""
    if hasattr(type(optimizer), "beta1"):
        return "beta1"
    if hasattr(type(optimizer), "momentum") and optimizer.momentum:
        return "momentum"
    raise OptionError(f"OneCycleLR: cycle_momentum needs an optimizer with a momentum > 0 or betas, got "
                      f"{type(optimizer).__name__}; pass cycle_momentum=False")


def _total_steps(total_steps, epochs, steps_per_epoch) -> int:
    if total_steps is not None:
        return _count(OneCycleLR, "total_steps", total_steps)
    if epochs is None or steps_per_epoch is None:
        raise OptionError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
    return _count(OneCycleLR, "epochs", epochs) * _count(OneCycleLR, "steps_per_epoch", steps_per_epoch)


class ReduceLROnPlateau:
    """torch's ReduceLROnPlateau: `step(metric)` once per epoch; after more than `patience`
    epochs without an improvement by `threshold` (relative or absolute, `threshold_mode`)
    in `mode` "min" or "max", lr becomes max(lr * factor, min_lr) (unless that changes it by
    no more than eps), then `cooldown` epochs pass before bad epochs count again."""

    interval = "epoch"

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8):
        if mode not in ("min", "max"):
            raise OptionError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise OptionError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not (isinstance(factor, numbers.Real) and 0 <= factor < 1):
            raise OptionError(f"ReduceLROnPlateau: factor must be a number in [0, 1), got {factor!r}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode, self.factor = mode, threshold_mode, float(factor)
        self.patience = _count(self, "patience", patience, minimum=0)
        self.cooldown = _count(self, "cooldown", cooldown, minimum=0)
        self.threshold = _number(self, "threshold", threshold)
        self.min_lr, self.eps = _number(self, "min_lr", min_lr), _number(self, "eps", eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0
        self.last_epoch = 0

    def is_better(self, value: float) -> bool:
        if self.mode == "min":
            return value < (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                            else self.best - self.threshold)
        return value > (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                        else self.best + self.threshold)

    def step(self, metric) -> None:
        """Count one epoch whose monitored value was `metric`, and lower lr if it is time."""
        value = float(metric)
        self.last_epoch += 1
        if self.is_better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def get_last_lr(self) -> float:
        return self.optimizer.lr


def _count(owner, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise OptionError(f"{_name(owner)}: {name} must be {want}, got {value!r}")
    return int(value)


def _number(owner, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise OptionError(f"{_name(owner)}: {name} must be a number >= 0, got {value!r}")
    return float(value)


def _name(owner) -> str:
    return owner.__name__ if isinstance(owner, type) else type(owner).__name__
