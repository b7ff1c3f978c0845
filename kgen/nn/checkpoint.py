"""Checkpoints: a model's state_dict, its optimizer's state and JSON metadata in one
safetensors file. safetensors holds raw tensors and a string header, so loading a
checkpoint runs no code (no pickle anywhere).

Names are torch's, so a checkpoint moves between kgen and torch: the model's tensors are
its state_dict names (`0.weight`, `1.running_mean`); `safetensors.torch.load_file` then
`load_state_dict(strict=False)` reads a kgen checkpoint into the torch twin, and a torch
state_dict written by `safetensors.torch.save_file` loads here. The optimizer's state sits
under `optimizer.`, named after its parameter as torch names it (`optimizer.0.weight.exp_avg`,
`optimizer.step`; an fp16 loss scale as `optimizer.loss_scaler.scale`); device state of the
layers that torch has no name for (a Dropout's seed, which an exact resumption needs) under
`kgen.`. torch's strict=False skips both.

A checkpoint that does not fit changes nothing: every name, shape and dtype is checked
before any value is set. Files are written whole or not at all (kgen.files.atomic_write).
"""
from __future__ import annotations

import json
from pathlib import Path

from kgen.errors import InputError, OptionError, ShapeError
from kgen.files import atomic_write
from kgen.function import SharedVariable
from kgen.nn.module import Module
from kgen.nn.optim import Optimizer
from kgen.nn.precision import GradScaler

OPTIMIZER = "optimizer."
LAYER_STATE = "kgen."
META_KEY = "kgen.meta"  # safetensors' string metadata holds the caller's meta as one JSON text

# torch's names for the per-parameter state of kgen.nn.optim's optimizers; state kept under
# any other attribute is saved under the attribute's name
TORCH_STATE_NAMES = {"velocity": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq"}


def save(path, model, optimizer=None, **meta) -> None:
    """Write `model`'s state_dict (parameters and persistent buffers, each in its own
    dtype), `optimizer`'s state when given, and `meta` (epoch=..., anything JSON can hold)
    to the safetensors file `path`, replacing it atomically."""
    # at call time: safetensors is optional, and only checkpoints need it
    import safetensors.torch
    if Path(path).is_dir():
        raise OptionError(f"save: {path} is a directory; expected a file path for the checkpoint")
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise OptionError(f"save: meta must be JSON values (numbers, strings, lists, dicts), got {e}") from None
    state = {**_model_state(model), **_layer_state(model), **_optimizer_state("save", model, optimizer)}
    absent = [name for name, var in state.items() if var.value.is_meta]
    if absent:  # kgen.nn.zero: a sharded optimizer's state, in pieces on the ranks
        raise OptionError(f"save: {_listing('the optimizer state held in pieces by the ranks', absent)}; "
                          f"gather it on rank 0 first (the data-parallel step's gather_state(), which fit "
                          f"calls at each epoch's end) and save there")
    # copies: one variable may sit under two names (a shared layer), which safetensors refuses to alias
    tensors = {name: var.value.detach().to("cpu", copy=True) for name, var in state.items()}
    atomic_write(path, safetensors.torch.save(tensors, metadata={"format": "pt", META_KEY: meta_text}))


def load(path, model, optimizer=None) -> dict:
    """Set `model`'s state_dict (and `optimizer`'s state when given) from the checkpoint
    at `path`, and return the meta it was saved with ({} for a file kgen did not write).
    The model's names must all be there and no others; layer state (`kgen.`) is set where
    the file has it; optimizer state in the file is skipped when no optimizer is given."""
    tensors, meta = _read(path)
    required = {**_model_state(model), **_optimizer_state("load", model, optimizer)}
    optional = _layer_state(model)
    missing = [name for name in required if name not in tensors]
    unexpected = [name for name in tensors if name not in required and name not in optional
                  and not (optimizer is None and name.startswith(OPTIMIZER))]
    if missing or unexpected:
        parts = [_listing(what, names) for what, names in
                 (("missing from the file", missing), ("in the file but not the model", unexpected)) if names]
        raise InputError(f"load({path}): the checkpoint does not match the model"
                         f"{' and optimizer' if optimizer is not None else ''}: {'; '.join(parts)}")
    targets = {name: var for name, var in {**required, **optional}.items() if name in tensors}
    _check_fit(path, targets, tensors)
    for name, var in targets.items():
        var.set_value(tensors[name])
    return meta


def _model_state(model) -> dict:
    if not isinstance(model, Module):
        raise OptionError(f"checkpoint: expected a kgen.nn.Module, got {type(model).__name__}")
    return dict(model._named_state())


def _layer_state(model) -> dict:
    """Device state a layer keeps outside its parameters and buffers (a Dropout's seed,
    which each training step advances), under `kgen.<module path>.<attribute>`."""
    state = {}
    for path, module in _named_modules(model):
        listed = {id(v) for v in (*module._parameters.values(), *module._buffers.values())}
        state.update((f"{LAYER_STATE}{path}{attr}", value) for attr, value in vars(module).items()
                     if isinstance(value, SharedVariable) and id(value) not in listed)
    return state


def _named_modules(module, prefix: str = ""):
    yield prefix, module
    for name, child in module._modules.items():
        yield from _named_modules(child, f"{prefix}{name}.")


def _optimizer_state(caller: str, model, optimizer) -> dict:
    """The optimizer's state by torch's names. An optimizer keeps it as attributes (see
    kgen.nn.optim): a shared scalar (Adam's step) is `optimizer.<attribute>`, a list with
    one shared value per parameter is `optimizer.<parameter's state_dict name>.<state>`.
    Reading the attributes keeps any optimizer checkpointable without registering it."""
    if optimizer is None:
        return {}
    if not isinstance(optimizer, Optimizer):
        raise OptionError(f"{caller}: expected a kgen.nn optimizer (SGD, Adam, ...), got {type(optimizer).__name__}")
    names = {id(p): name for name, p in model.named_parameters()}
    strangers = [p.name for p in optimizer.params if id(p) not in names]
    if strangers:
        raise InputError(f"{caller}: the optimizer updates {strangers}, which are not parameters of the model")
    state = {}
    for attr, value in vars(optimizer).items():
        if isinstance(value, SharedVariable):
            state[OPTIMIZER + attr] = value
        elif isinstance(value, GradScaler):  # its loss scale (kgen.nn.precision): `optimizer.loss_scaler.scale`
            state.update((f"{OPTIMIZER}{attr}.{name}", var) for name, var in value.named_state().items())
        elif attr != "params" and _per_parameter(value, optimizer.params):
            label = TORCH_STATE_NAMES.get(attr, attr)
            state.update((f"{OPTIMIZER}{names[id(p)]}.{label}", s) for p, s in zip(optimizer.params, value))
    return state


def _per_parameter(value, params) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == len(params)
            and all(isinstance(v, SharedVariable) for v in value))


def _read(path):
    """The file's tensors (on the CPU) and its meta; an InputError for anything that is
    not a safetensors file."""
    # at call time: safetensors is optional, and only checkpoints need it
    from safetensors import SafetensorError, safe_open
    if not Path(path).is_file():
        raise InputError(f"load: {path}: no such file (expected a safetensors checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as e:
        raise InputError(f"load: {path} is not a safetensors file ({e})") from None
    try:
        meta = json.loads(metadata.get(META_KEY, "{}"))
    except ValueError as e:
        raise InputError(f"load: {path}: its {META_KEY!r} metadata is not JSON ({e})") from None
    return tensors, meta


def _check_fit(path, targets: dict, tensors: dict) -> None:
    """Every tensor has its variable's shape and dtype (a ShapeError if any shape differs,
    else an InputError for the dtypes), all named in one message."""
    shapes = [f"{name} has shape {list(tensors[name].shape)}, expected {list(var.shape)}"
              for name, var in targets.items() if tuple(tensors[name].shape) != tuple(var.shape)]
    kinds = [f"{name} is {_dtype(tensors[name].dtype)}, expected {var.dtype}"
             for name, var in targets.items() if tensors[name].dtype != var.dtype.torch]
    if shapes:
        raise ShapeError(f"load({path}): the checkpoint does not fit the model: {'; '.join(shapes + kinds)}")
    if kinds:
        raise InputError(f"load({path}): the checkpoint does not fit the model: {'; '.join(kinds)}")


def _dtype(torch_dtype) -> str:
    return str(torch_dtype).replace("torch.", "")


def _listing(what: str, names: list, shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{what}: {', '.join(names[:shown])}{more}"
