"""Compiled training and evaluation steps, and the Keras-style compile/fit/evaluate/predict.

A training step is one kgen.function: forward, loss, backward (kgen.grad) and the
optimizer's updates, compiled together, so the updates fuse into the kernels that produce
the gradients. Shapes come from the data: the batch dimension is the size symbol `N`, so
one compiled step serves every batch size (the last, smaller batch included).

With a torch.distributed process group, train_step and fit run data-parallel
(kgen.nn.distributed): each rank takes its part of every global batch, the gradients are
averaged over the ranks, and only rank 0 prints and writes files.
"""
from __future__ import annotations

import numpy as np
import torch

from kgen import ops
from kgen.errors import DTypeError, InputError, OptionError, ShapeError, check_arguments
from kgen.function import function, tensor
from kgen.ir import dtypes
from kgen.ir.autodiff import grad
from kgen.kernels.inputs import check_labels, device_problem
from kgen.nn import distributed, losses, optim
from kgen.nn.callbacks import CallbackList
from kgen.nn.data import batches
from kgen.nn.metrics import get as get_metric, name as metric_name
from kgen.nn.precision import GradScaler, autocast, half_dtype

VALIDATION_BATCH = 256  # fit's validation runs in batches of evaluate's default size


def _inputs(x_example, y_example=None):
    """Symbolic inputs shaped like a batch of the data, with a symbolic batch size."""
    def spec(name, array):  # float data is float32, integer data (labels) int32 (docs/bad_inputs.md)
        array = np.asarray(array)
        kind = array.dtype.kind
        dt = dtypes.float32 if kind == "f" else dtypes.int32 if kind in "iu" else dtypes.dtype(array.dtype)
        return tensor(name, ("N",) + array.shape[1:], dt)
    return spec("x", x_example), (spec("y", y_example) if y_example is not None else None)


def accuracy(prediction, labels):
    """Fraction of rows whose largest score is at the label (integer labels), or, for one
    output column of probabilities, whose rounding equals a 0/1 target."""
    if prediction.ndim == 2 and prediction.shape[1] != 1 and not labels.dtype.is_float:
        picked = ops.sum(prediction * ops.one_hot(labels, prediction.shape[1], prediction.dtype), axis=1)
        return ops.mean(ops.cast(ops.greater_equal(picked, ops.max(prediction, axis=1)), "float32"))
    return ops.mean(ops.cast(ops.equal(ops.greater(prediction, 0.5), ops.greater(labels, 0.5)), "float32"))


def train_step(model, loss_fn, optimizer, x_example, y_example, metrics=(), precision: str = "fp32",
               loss_scaler=None, process_group=None, shard_optimizer: bool = False, bucket_bytes: int = None):
    """A compiled step(x, y) -> [loss, *metrics] that also applies the optimizer's updates.
    `precision` "fp16" or "bf16" runs the matmuls and convolutions on half-precision
    operands, accumulating in float32, the parameters staying float32 (kgen.nn.precision);
    under "fp16" the loss is scaled dynamically by `loss_scaler` (a new GradScaler when
    None; False for none), which the returned step holds as `step.loss_scaler`.
    With a torch.distributed process group initialised (`process_group`, None: the default
    group) of more than one rank, a data-parallel step (kgen.nn.distributed.DataParallelStep):
    x and y are this rank's samples, the loss and metrics the means over every rank's, the
    gradients averaged over the ranks in buckets of `bucket_bytes` (25 MiB); with
    `shard_optimizer`, each rank updates its shard of the parameters and optimizer state
    (ZeRO stage 1). Without a group, the single fused program."""
    half = half_dtype(precision, "train_step")
    group = distributed.group_of(process_group)
    distributed.check_shardable(shard_optimizer)
    scaler = _scaler(precision, False if group is not None and loss_scaler is None else loss_scaler, "train_step")
    if group is not None and scaler is not None:
        raise _scaling_under_a_group("train_step")
    if group is not None:
        return data_parallel_step(model, loss_fn, optimizer, x_example, y_example, metrics, precision, group,
                                  shard_optimizer, bucket_bytes)
    (x, y), outputs, state = _training_graph(model, loss_fn, x_example, y_example, metrics, half)
    if scaler is None:
        updates = optimizer.updates(grad(outputs[0], optimizer.params))
    else:
        updates = scaler.bind(optimizer).updates(optimizer, grad(scaler.scale_loss(outputs[0]), optimizer.params))
    step = function([x, y], outputs, updates=updates + state)
    step.loss_scaler = scaler
    return step


def data_parallel_step(model, loss_fn, optimizer, x_example, y_example, metrics=(), precision: str = "fp32",
                       group=None, shard_optimizer: bool = False, bucket_bytes: int = None):
    """The data-parallel step train_step builds under the process group `group`. With group
    None, the same step built as for a group of one rank: it cannot run (it has no group to
    exchange gradients in), but its programs and buckets are those of every rank's step
    whatever the number of ranks (ZeRO-1's pieces change sizes, not kernels), which is what
    `kgen stats --world-size` counts (kgen/nn/parallel_stats.py)."""
    half = half_dtype(precision, "train_step")
    (x, y), outputs, state = _training_graph(model, loss_fn, x_example, y_example, metrics, half)
    return distributed.DataParallelStep([x, y], outputs[0], outputs, optimizer, state, group, shard_optimizer,
                                        bucket_bytes)


def _training_graph(model, loss_fn, x_example, y_example, metrics, half) -> tuple:
    """A training step's graph before the optimizer: its inputs (x, y), its outputs [loss,
    *metrics] and the model's state updates, the GEMMs' operands in `half` precision."""
    x, y = _inputs(x_example, y_example)
    model.train()
    prediction = model(x)
    outputs = [loss_fn(prediction, y)] + [get_metric(m)(prediction, y) for m in metrics]
    state = model.state_updates()
    rewritten = autocast(outputs + [new for _, new in state], half)
    return (x, y), rewritten[:len(outputs)], \
        [(var, new) for (var, _), new in zip(state, rewritten[len(outputs):])]


def _scaling_under_a_group(where: str) -> OptionError:
    return OptionError(f"{where}: dynamic loss scaling (fp16's GradScaler) under a process group is not built; "
                       f"pass loss_scaler=False, or use precision='bf16' or 'fp32'")


def _scaler(precision: str, loss_scaler, where: str):
    """The GradScaler a step uses: the one given, a new one for fp16, none for False or
    (given None) the other precisions."""
    if loss_scaler is None:
        return GradScaler() if precision == "fp16" else None
    if loss_scaler is False:
        return None
    if not isinstance(loss_scaler, GradScaler):
        raise OptionError(f"{where}: loss_scaler must be a kgen.nn.GradScaler, None or False, "
                          f"got {type(loss_scaler).__name__}")
    return loss_scaler


def eval_step(model, loss_fn, x_example, y_example, metrics=(), precision: str = "fp32"):
    """A compiled step(x, y) -> [loss, *metrics] with the model in evaluation mode."""
    half = half_dtype(precision, "eval_step")
    x, y = _inputs(x_example, y_example)
    model.eval()
    prediction = model(x)
    outputs = autocast([loss_fn(prediction, y)] + [get_metric(m)(prediction, y) for m in metrics], half)
    model.train()
    return function([x, y], outputs)


def predict_step(model, x_example, precision: str = "fp32"):
    half = half_dtype(precision, "predict_step")
    x, _ = _inputs(x_example)
    model.eval()
    (prediction,) = autocast([model(x)], half)
    out = function([x], prediction)
    model.train()
    return out


class Trainer:
    """Keras's compile/fit/evaluate/predict for a kgen.nn module. Under a torch.distributed
    process group (`process_group`, None: the default one when initialised) fit trains
    data-parallel: N processes at batch_size B train as one process at N*B does, each on its
    part of every batch (`shard_optimizer`: ZeRO stage 1, see kgen.nn.distributed);
    evaluate splits its batches likewise; only rank 0 prints and runs the callbacks that
    write files."""

    def __init__(self, model, optimizer="adam", loss="sparse_categorical_crossentropy", metrics=(),
                 precision: str = "fp32", loss_scaler=None, process_group=None, shard_optimizer: bool = False):
        for m in metrics:
            get_metric(m)  # an unknown name fails here, before any step is built
        half_dtype(precision, "compile")  # a bad precision fails here too
        self.model = model
        self.optimizer = optim.get(optimizer, model.parameters())
        self.loss = losses.get(loss)
        self.metrics = tuple(metrics)
        self.precision = precision
        self.process_group, self.shard_optimizer = process_group, bool(shard_optimizer)
        # one scaler for every step built (each batch shape has its own), kept as the optimizer's
        self.loss_scaler = _scaler(precision, loss_scaler, "compile")
        if self.loss_scaler is not None and distributed.group_of(process_group) is not None:
            raise _scaling_under_a_group("compile")  # here, not at fit's first step
        if self.loss_scaler is not None:
            self.loss_scaler.bind(self.optimizer)
        self._steps = {}

    @property
    def _group(self):
        return distributed.group_of(self.process_group)

    def _step(self, kind, x, y=None):
        key = (kind, np.asarray(x).shape[1:], np.asarray(x).dtype.kind,
               None if y is None else (np.asarray(y).shape[1:], np.asarray(y).dtype.kind),
               id(self._group) if kind == "train" else None)
        if key not in self._steps:
            try:
                if kind == "train":
                    self._steps[key] = train_step(self.model, self.loss, self.optimizer, x, y, self.metrics,
                                                  self.precision, self.loss_scaler or False,
                                                  self.process_group, self.shard_optimizer)
                elif kind == "eval":
                    self._steps[key] = eval_step(self.model, self.loss, x, y, self.metrics, self.precision)
                else:
                    self._steps[key] = predict_step(self.model, x, self.precision)
            except (ShapeError, DTypeError) as e:  # the data does not fit the model: say which data
                given = f"x of shape {_batch_shape(x)} ({x.dtype})"
                given += "" if y is None else f" and y of shape {_batch_shape(y)} ({y.dtype})"
                caller = {"train": "fit", "eval": "evaluate"}.get(kind, kind)
                raise type(e)(f"{caller}: the model{' and its loss' if y is not None else ''} cannot take "
                              f"{given}: {e}") from None
        return self._steps[key]

    def _check_labels(self, kind: str, caller: str, x, y) -> None:
        """All of y's class labels checked before the first step, so a bad one is named by its
        index in y and no step has changed the model (each call checks its batch as well)."""
        classes = self._step(kind, x[:1], y[:1]).program.label_classes.get("y")
        if classes is not None and y.dtype.kind in "iu":
            check_labels(torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), f"{caller}: y", classes)

    @property
    def names(self):
        return ["loss"] + [metric_name(m) for m in self.metrics]

    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
            validation_data=None, validation_split: float = 0.0, initial_epoch: int = 0, callbacks=None,
            verbose=True, steps_per_epoch: int = None) -> dict:
        """Train epochs `initial_epoch` .. `epochs - 1` (Keras's counting: `epochs` is the last
        epoch's number, so a resumed run passes the epochs done as `initial_epoch`, and epoch
        e shuffles as it would have in one run). Returns the history, per-epoch means of loss
        and metrics, and val_* for `validation_data`, or for `validation_split`, the last
        fraction of x and y held out before shuffling (validation_data wins where both are
        given, as in Keras). `callbacks` are kgen.nn.callbacks.Callback instances; verbose
        shows a progress bar on a terminal, plain lines elsewhere or with verbose=2.
        epochs=0 trains nothing and returns an empty history, as Keras does.
        x may also be a data source, with y None: a torch DataLoader or any iterable of
        (x, y) batches (one pass per epoch), or a generator (`steps_per_epoch` batches per
        epoch); its batches are used as they come (no shuffle, no batch_size), and under a
        process group as each rank's own (a DistributedSampler's)."""
        with distributed.quiet_unless_main():
            return self._fit(x, y, epochs, batch_size, shuffle, seed, validation_data, validation_split,
                             initial_epoch, callbacks, verbose, steps_per_epoch)

    def _fit(self, x, y, epochs, batch_size, shuffle, seed, validation_data, validation_split, initial_epoch,
             callbacks, verbose, steps_per_epoch) -> dict:
        _check_count("fit", "epochs", epochs, minimum=0)
        _check_count("fit", "batch_size", batch_size, minimum=1)
        _check_count("fit", "initial_epoch", initial_epoch, minimum=0)
        source = Source.of("fit", x, y, steps_per_epoch)
        if source is not None:
            if validation_split:
                raise OptionError("fit: validation_split needs arrays to split; a data source takes "
                                  "validation_data=(another source, or arrays)")
            steps = source.steps
        else:
            x, y = _as_arrays("fit", x, y)
            self._check_labels("train", "fit", x, y)
            x, y, validation_data = _held_out(x, y, validation_split, validation_data)
        rank, world = distributed.rank_and_world(self._group)
        if source is None:
            steps = -(-len(x) // (batch_size * world))
        validation = Source.of("fit: validation_data", validation_data, None, None) \
            if validation_data is not None and not isinstance(validation_data, (tuple, list)) else None
        if validation_data is not None and validation is None:
            validation_data = _as_arrays("fit: validation_data", *validation_data)
            self._check_labels("eval", "fit: validation_data", *validation_data)
        names = self.names + ([f"val_{n}" for n in self.names] if validation_data is not None else [])
        if rank and isinstance(callbacks, (list, tuple)):  # only rank 0 writes files
            callbacks = [c for c in callbacks if not getattr(c, "writes_files", False)]
        verbose = verbose if not rank else False
        callbacks = CallbackList(callbacks, self.model, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                                         "metrics": names}, verbose)
        self.model.stop_training = False
        logs = None
        callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            data = source.batches() if source is not None else \
                self._shards(batches(x, y, batch_size * world, shuffle=shuffle, seed=seed, epoch=epoch))
            logs = self._train_epoch(data, callbacks)
            if validation is not None:
                values = self._evaluate(validation.batches(), callbacks)
            elif validation_data is not None:
                values = self._evaluate(self._shards(batches(*validation_data, VALIDATION_BATCH * world,
                                                             shuffle=False)), callbacks)
            if validation_data is not None:
                logs.update((f"val_{n}", v) for n, v in zip(self.names, values))
            self._gather_state()
            callbacks.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callbacks.on_train_end(logs)
        return callbacks.history.history

    def _train_epoch(self, data, callbacks) -> dict:
        """One epoch's steps over the (x, y) batches of `data`; the logs each batch's callbacks
        see are the running means so far. A short last batch reuses the compiled step (its
        batch size is the symbol N)."""
        sums, count, logs = np.zeros(len(self.names)), 0, {}
        for i, (xb, yb) in enumerate(data):
            callbacks.on_train_batch_begin(i)
            step = self._step("train", xb, yb)
            values = step(xb, yb)
            schedule = getattr(self.optimizer, "lr_schedule", None)  # a per-batch schedule (Keras's decay)
            if schedule is not None:
                schedule.step()
            samples = getattr(step, "samples", len(xb))  # a data-parallel step's: the global batch's
            sums += [float(v) * samples for v in values]
            count += samples
            logs = dict(zip(self.names, (sums / count).tolist()))
            callbacks.on_train_batch_end(i, logs)
            if self.model.stop_training:  # TerminateOnNaN stops at the batch, as in Keras
                break
        return logs

    def evaluate(self, x, y=None, batch_size: int = 256, verbose: bool = True, callbacks=None,
                 steps: int = None) -> list:
        """Loss and metrics over (x, y), or over the batches of a data source x (`steps` of
        them from an endless one)."""
        _check_count("evaluate", "batch_size", batch_size, minimum=1)
        source = Source.of("evaluate", x, y, steps)
        if source is None:
            x, y = _as_arrays("evaluate", x, y)
            self._check_labels("eval", "evaluate", x, y)
        count = source.steps if source is not None else -(-len(x) // batch_size)
        callbacks = CallbackList(callbacks, self.model, {"steps": count, "verbose": verbose,
                                                         "metrics": self.names}, verbose=False)
        world = distributed.rank_and_world(self._group)[1]
        data = source.batches() if source is not None else \
            self._shards(batches(x, y, batch_size * world, shuffle=False))
        result = self._evaluate(data, callbacks)
        if verbose and distributed.is_main():
            print("  ".join(f"{n} {v:.4f}" for n, v in zip(self.names, result)))
        return result

    def _evaluate(self, data, callbacks) -> list:
        callbacks.on_test_begin()
        sums, count = np.zeros(len(self.names)), 0
        for i, (xb, yb) in enumerate(data):
            callbacks.on_test_batch_begin(i)
            if len(xb):  # under a process group a rank's part of a small batch may be empty
                sums += [float(v) * len(xb) for v in self._step("eval", xb, yb)(xb, yb)]
                count += len(xb)
            callbacks.on_test_batch_end(i)
        group = self._group
        if group is not None:  # every rank's sums: the means over all their samples
            total = torch.tensor([count, *sums], dtype=torch.float64)
            distributed.all_reduce_on_host(total, group, "evaluate", "the loss and metric sums")
            count, sums = int(total[0]), total[1:].numpy()
        if not count:
            raise InputError("evaluate: the data gave no batches")
        result = (sums / count).tolist()
        callbacks.on_test_end(dict(zip(self.names, result)))
        return result

    def _shards(self, data):
        """This rank's part of each (x, y) batch of `data` (all of it without a group)."""
        rank, world = distributed.rank_and_world(self._group)
        for xb, yb in data:
            lo, hi = distributed.shard_bounds(len(xb), rank, world)
            yield xb[lo:hi], yb[lo:hi]

    def _gather_state(self) -> None:
        """A sharded optimizer's state made whole on every rank (each must call it), so the
        callbacks that write checkpoints at the epoch's end see all of it."""
        for step in self._steps.values():
            if isinstance(step, distributed.DataParallelStep):
                step.gather_state()

    def predict(self, x, batch_size: int = 256, steps: int = None) -> np.ndarray:
        """The model's outputs for x, or for the inputs of a data source's batches (x, or
        (x, y) pairs whose y is ignored)."""
        _check_count("predict", "batch_size", batch_size, minimum=1)
        source = Source.of("predict", x, None, steps, inputs_only=True)
        if source is not None:
            data = source.batches()
        else:
            x, _ = _as_arrays("predict", x, None)
            data = batches(x, np.zeros(len(x)), batch_size, shuffle=False)
        return np.concatenate([self._step("predict", xb)(xb).cpu().numpy() for xb, _ in data])

    # fit(epoch=3) is a kgen ArgumentError naming the keywords fit takes
    fit = check_arguments(fit, "fit")
    evaluate = check_arguments(evaluate, "evaluate")
    predict = check_arguments(predict, "predict")


class Source:
    """Batches from a data source: a torch DataLoader, any iterable of (x, y) pairs (one pass
    per epoch), or an iterator / generator, from which each epoch takes `steps` batches."""

    def __init__(self, caller: str, data, steps, inputs_only: bool):
        self.caller, self.data, self.inputs_only = caller, data, inputs_only
        self.endless = iter(data) is data  # a generator: epochs continue where the last stopped
        if steps is not None:
            _check_count(caller, "steps_per_epoch", steps, minimum=1)
        elif self.endless:
            raise OptionError(f"{caller}: a generator gives batches without end: pass steps_per_epoch "
                              f"(steps, for evaluate and predict)")
        self.steps = steps if steps is not None else (len(data) if hasattr(data, "__len__") else None)
        self.chosen = steps is not None
        self._iterator = None

    @staticmethod
    def of(caller: str, x, y, steps, inputs_only: bool = False):
        """A Source for x when it is one (y must then be None), else None."""
        if isinstance(x, (np.ndarray, torch.Tensor, list, tuple, str, bytes, dict)) or x is None \
                or not hasattr(x, "__iter__"):
            return None
        if y is not None:
            raise InputError(f"{caller}: x is a data source of (x, y) batches ({type(x).__name__}); pass y=None")
        return Source(caller, x, steps, inputs_only)

    def batches(self):
        if not self.chosen:
            yield from (self._arrays(batch) for batch in self.data)
            return
        for _ in range(self.steps):
            if self._iterator is None:
                self._iterator = iter(self.data)
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.endless:
                    raise InputError(f"{self.caller}: the generator ran out of batches before steps_per_epoch "
                                     f"({self.steps}) were taken") from None
                self._iterator = iter(self.data)  # a pass ended: the next batch starts another
                batch = next(self._iterator)
            yield self._arrays(batch)

    def _arrays(self, batch):
        if self.inputs_only and not isinstance(batch, (tuple, list)):
            return _samples(self.caller, "a batch's x", batch), None
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InputError(f"{self.caller}: expected each batch to be a pair (x, y), got "
                             f"{type(batch).__name__}{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}")
        xb = _samples(self.caller, "a batch's x", batch[0])
        return xb, None if self.inputs_only else _samples(self.caller, "a batch's y", batch[1])


def _as_arrays(caller: str, x, y):
    """The data as NumPy arrays of samples, float64 narrowed to float32 (as Keras does);
    integer labels keep their type: the step converts them where they fit its int32
    (kgen.kernels.inputs), as a kgen.function and a loaded artifact do."""
    x = _samples(caller, "x", x)
    if y is not None:
        y = _samples(caller, "y", y)
        if len(x) != len(y):
            raise InputError(f"{caller}: x has {len(x)} samples but y has {len(y)}; expected one label or "
                             f"target per sample")
    return x, y


def _samples(caller: str, name: str, value) -> np.ndarray:
    what = f"{caller}: {name}"
    if isinstance(value, torch.Tensor):
        problem = device_problem(value.device, torch.device("cpu"), cuda_available=torch.cuda.is_available())
        if problem:
            raise InputError(f"{what}: {problem}")
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if value is None or isinstance(value, (str, bytes, dict)):
        raise InputError(f"{what}: expected an array or tensor of samples, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what}: expected an array or tensor of samples, got a {type(value).__name__} "
                         f"that is not one ({e})") from None
    if array.dtype.kind not in "fiub":
        raise InputError(f"{what}: expected a numeric array or tensor of samples, got {type(value).__name__} "
                         f"of {array.dtype}")
    if array.ndim == 0 or not len(array):
        raise InputError(f"{what}: expected at least one sample (an array whose first axis counts them), "
                         f"got shape {list(array.shape)}")
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _held_out(x, y, validation_split, validation_data):
    """(x, y, validation data): Keras's split, the last `validation_split` of the samples
    held out (validation_data, where given, wins), every array checked as fit's data is."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.floating)) \
            or not 0 <= validation_split < 1:
        raise OptionError(f"fit: validation_split must be a fraction in [0, 1), got {validation_split!r}")
    if validation_data is not None:
        is_sequence = isinstance(validation_data, (tuple, list))
        if not is_sequence or len(validation_data) != 2:
            given = type(validation_data).__name__ + (f" of {len(validation_data)}" if is_sequence else "")
            raise InputError(f"fit: validation_data must be a pair (x_val, y_val), got {given}")
        return (x, y, _as_arrays("fit: validation_data", *validation_data))
    if not validation_split:
        return x, y, None
    split = int(np.floor(len(x) * (1.0 - validation_split)))
    if split == 0:
        raise OptionError(f"fit: validation_split={validation_split} of {len(x)} samples leaves no training sample; "
                          f"give more data or a smaller fraction")
    return x[:split], y[:split], (x[split:], y[split:])


def _check_count(caller: str, option: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise OptionError(f"{caller}: {option} must be {want}, got {value!r}")


def _batch_shape(array) -> str:
    """A batch's shape as the step declares it: [N,784]."""
    return "[" + ",".join(["N"] + [str(d) for d in np.shape(array)[1:]]) + "]"
