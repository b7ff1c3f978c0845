"""Mixed precision: half-precision GEMMs in a float32 training step, and dynamic loss scaling.

`precision="fp16"` or `"bf16"` (`train_step`, `Module.compile`) is torch.autocast's policy
for matmuls and convolutions, applied to the traced graph rather than by dispatch:
`autocast` rewrites every GEMM template op of the forward (an op whose op table entry has
a `gemm` fact: matmul and conv2d, so Linear, Conv2d, Conv1d, Keras's Dense and Conv2D, the
input projections of LSTM and GRU, and a `from_torch` model's mm and convolution alike) to
read half-precision casts of its operands and hand its result on cast back to float32:

    %3: f32[N,5] = matmul %1 %2        ->   %3h: f16[N,5] = matmul (cast f16 %1) (cast f16 %2)
                                            %3:  f32[N,5] = cast f32 %3h

Everything else (bias, activations, normalisation, softmax, losses, reductions, the
optimizer) stays float32, and the parameters stay float32 master weights: the casts read
them. kgen.grad then differentiates the rewritten graph, so the backward GEMMs are half
too (a cast's gradient is the cast back), each accumulating in float32 on tensor cores
(kgen.kernels.matmul, conv). The cast back to float32 is an epilogue of the GEMM's own
kernel (fusion rule E1), which hands it the float32 accumulator: the half-precision
result is never rounded or written, so in effect a GEMM takes half operands and gives a
float32 result. Nor are the casts to half kernels or buffers of their own: a GEMM casts
its operand tiles as it loads them (fusion rule R3), so the weights, the activations and
the gradients a GEMM reads stay float32 in memory, and a mixed-precision step takes the
float32 step's launches and bytes (mlp128: 6, cnn: 10). What changes is the dot:
half-precision tensor-core products where float32 takes exact FMAs. Each operand is cast
under its views (the transpose of the cast of a weight), so the gradient's transposes meet
the GEMMs as the simplifier's rules expect and updates stay in the GEMMs' epilogues.

Scan bodies, the LSTM's and GRU's recurrences among them, stay float32: the rewrite does
not enter them (the input products before the loop and the weight gradients after it are
GEMMs of the graph, and are rewritten).

fp16's range is narrow: small gradients flush to zero. `GradScaler` is torch.amp's
dynamic loss scaling, inside the compiled step with no host synchronisation: the loss is
multiplied by `scale` (a device scalar, 2**16 to start), the gradients by 1/scale; a
reduction over all of them finds a non-finite one (`found_inf`), and then every optimizer
update is a select between its new and its old value, so an overflowing step changes no
parameter and no optimizer state (Adam's step count included), the scale halves
(`backoff_factor`) and `skipped_steps` counts it. After `growth_interval` steps in a row
without one, the scale doubles (`growth_factor`), unless that would overflow float32. The
price is two launches: the finiteness check reads every gradient, so the updates cannot
run in the epilogues of the kernels producing them, as they do otherwise (mlp128: 8, cnn:
12). Under KGEN_CHECK_FINITE=1 an overflowing step stops at the first non-finite value,
before the scaler can skip it.
bf16 has float32's range and needs no scaling (as in torch).

The scaler's device scalars are training state: bound to an optimizer (`bind`, which
train_step does), they are its `loss_scaler`, and kgen.nn.checkpoint saves them with the
optimizer's state (`optimizer.loss_scaler.scale`, `.growth_tracker`, `.skipped_steps`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from kgen import ops
from kgen.errors import OptionError
from kgen.function import shared
from kgen.ir import dtypes
from kgen.ir.graph import topological_order
from kgen.ir.node import Node

PRECISIONS = {"fp32": None, "fp16": dtypes.float16, "bf16": dtypes.bfloat16}  # name -> the GEMMs' operand dtype
FLOAT32_MAX = float(np.finfo(np.float32).max)


def half_dtype(precision, where: str):
    """The operand dtype of the GEMMs under `precision` (None for "fp32"); a clear error
    for anything else."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise OptionError(f"{where}: precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, "
                          f"got {precision!r}")
    return PRECISIONS[precision]


def autocast(values, half) -> list:
    """`values` (nodes of one traced graph) with every float32 GEMM they depend on computed
    from `half` operands and cast back to float32 (see the module docstring). Nodes that
    reach no GEMM are the same objects; rebuilt ones keep their dtype and shape."""
    values = list(values)
    if half is None:
        return values
    rebuilt = {}
    for node in topological_order(values):
        inputs = tuple(rebuilt.get(i, i) for i in node.inputs)
        if node.opdef.gemm is not None and all(i.dtype is dtypes.float32 for i in inputs):
            product = Node(node.op, tuple(_narrowed(i, half) for i in inputs), node.attrs)
            rebuilt[node] = ops.cast(product, dtypes.float32)
        elif any(a is not b for a, b in zip(inputs, node.inputs)):
            rebuilt[node] = Node(node.op, inputs, node.attrs, node.dtype, node.shape)
    return [rebuilt.get(v, v) for v in values]


def _narrowed(operand, half):
    """`operand` cast to `half` under its views (a transpose of a weight is the transpose of
    its cast): the gradient of the cast then meets the GEMM's result in the layout the
    simplifier's transpose rules expect (transpose of a matmul), so a weight's update stays
    in the epilogue of the GEMM computing its gradient."""
    if operand.opdef.kind == "view" and len(operand.inputs) == 1:
        return Node(operand.op, (_narrowed(operand.inputs[0], half),), operand.attrs)
    return ops.cast(operand, half)


class GradScaler:
    """torch.amp.GradScaler's dynamic loss scaling, as device state of a compiled step:
    `scale` starts at `init_scale`; a step whose gradients hold an inf or a NaN is skipped
    and multiplies it by `backoff_factor`; `growth_interval` good steps in a row multiply
    it by `growth_factor`. `enabled=False` scales nothing (the step is unscaled)."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True):
        _check("init_scale", init_scale, lambda v: 0 < v < math.inf, "a finite number > 0")
        _check("growth_factor", growth_factor, lambda v: 1 < v < math.inf, "a finite number > 1")
        _check("backoff_factor", backoff_factor, lambda v: 0 < v < 1, "a number in (0, 1)")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, numbers.Integral) \
                or growth_interval < 1:
            raise OptionError(f"GradScaler: growth_interval must be a positive integer, got {growth_interval!r}")
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.enabled = int(growth_interval), bool(enabled)
        prefix = f"gradscaler{id(self):x}"
        self.scale = shared(np.float32(init_scale), name=f"{prefix}_scale")
        self.growth_tracker = shared(np.int32(0), name=f"{prefix}_growth_tracker")
        self.skipped_steps = shared(np.int32(0), name=f"{prefix}_skipped_steps")

    # --- reading the state (each a host read of a device scalar) ------------------------------
    def get_scale(self) -> float:
        """The current loss scale (torch's name), 1.0 when disabled."""
        return float(self.scale.get_value()) if self.enabled else 1.0

    def get_growth_tracker(self) -> int:
        """Good steps since the scale last changed."""
        return int(self.growth_tracker.get_value())

    def get_skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient so far."""
        return int(self.skipped_steps.get_value())

    def named_state(self) -> dict:
        """The device scalars by name: what a checkpoint saves (kgen.nn.checkpoint)."""
        return {"scale": self.scale, "growth_tracker": self.growth_tracker, "skipped_steps": self.skipped_steps}

    def bind(self, optimizer) -> "GradScaler":
        """Make this the optimizer's `loss_scaler`, so its state is checkpointed with the
        optimizer's; an optimizer takes one scaler."""
        current = getattr(optimizer, "loss_scaler", None)
        if current is not None and current is not self:
            raise OptionError(f"{type(optimizer).__name__} already has a loss scaler; build the step with that "
                              f"one (optimizer.loss_scaler) or a new optimizer")
        optimizer.loss_scaler = self
        return self

    # --- the step's graph ---------------------------------------------------------------------
    def scale_loss(self, loss):
        """The loss whose gradients the step takes: times `scale`."""
        return loss * self.scale if self.enabled else loss

    def updates(self, optimizer, scaled_grads) -> list:
        """The optimizer's updates from gradients of the scaled loss: unscaled, each update
        kept only when every gradient is finite, plus the scaler's own state updates."""
        if not self.enabled:
            return optimizer.updates(scaled_grads)
        inverse = 1.0 / self.scale  # torch multiplies by the reciprocal, computed once
        grads = [g * inverse for g in scaled_grads]
        found_inf = _any_not_finite(grads)
        kept = [(var, ops.where(found_inf, var, new)) for var, new in optimizer.updates(grads)]
        grown = self.growth_tracker + 1
        grow = ops.greater_equal(grown, self.growth_interval)
        bigger = self.scale * self.growth_factor
        after_good = ops.where(grow, ops.where(ops.less_equal(bigger, FLOAT32_MAX), bigger, self.scale), self.scale)
        return kept + [
            (self.scale, ops.where(found_inf, self.scale * self.backoff_factor, after_good)),
            (self.growth_tracker, ops.where(found_inf, 0, ops.where(grow, 0, grown))),
            (self.skipped_steps, self.skipped_steps + ops.cast(found_inf, dtypes.int32)),
        ]


def _any_not_finite(grads):
    """True when any gradient element is an inf or a NaN: g * 0 is 0 for a finite g and NaN
    otherwise, so the sum of every g * 0 is NaN exactly then (and NaN != NaN). One sum over
    the gradients joined end to end, so the check is one reduction kernel, not a chain of
    sums each adding the one before in its epilogue (E1)."""
    total = ops.sum(ops.concatenate([ops.reshape(g * 0.0, (-1,)) for g in grads]))
    return ops.not_equal(total, total)


def _check(name: str, value, ok, want: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(float(value)):
        raise OptionError(f"GradScaler: {name} must be {want}, got {value!r}")
