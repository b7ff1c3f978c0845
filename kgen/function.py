"""The Theano-style API: symbolic inputs, shared state, and compiled functions.

    x = kgen.tensor("x", ("N",))                  # a symbolic input; "N" is any size
    w = kgen.shared(np.zeros(()), name="w")       # state that lives on the device
    cost = kgen.ops.mse(w * x, y)
    gw = kgen.grad(cost, w)
    step = kgen.function([x, y], cost, updates=[(w, w - 0.1 * gw)])
    step(x_batch, y_batch)                        # numpy or torch in, torch out

A function is one compiled program: its outputs and its updates are computed by the same
fused kernels, and the updates are written to the shared state after the outputs are
computed (every expression sees the values from before the call), as in Theano.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kgen import counters
from kgen.compiler import compile
from kgen.errors import InputError, KgenError, ShapeError, check_arguments
from kgen.files import atomic_write
from kgen.ir import dtypes, shapes
from kgen.ir.graph import Graph, topological_order
from kgen.ir.node import Node
from kgen.kernels.inputs import check_finite_on, device_problem
from kgen.kernels.runtime import default_device

_shared_ids = itertools.count()


def tensor(name: str, shape=(), dtype="float32") -> Node:
    """A symbolic input. `shape` holds ints and size names ("N"), which any call may bind."""
    if not isinstance(name, str) or not name.isidentifier():
        raise KgenError(f"a tensor's name must be an identifier, got {name!r}")
    return Node("input", (), {"name": name}, dtypes.dtype(dtype), shapes.as_shape(shape))


class SharedVariable(Node):
    """A value that lives on the device between calls (Theano's shared variable). In
    expressions it is an input node; its value is read and updated by functions."""
    __slots__ = ("_value",)

    def get_value(self) -> np.ndarray:
        if self._value.is_meta:  # a placeholder of its shape (kgen.nn.zero)
            raise InputError(f"shared {self.name!r} holds no value in this process: it is optimizer state that a "
                             f"data-parallel step with shard_optimizer keeps in pieces, one per rank; the step's "
                             f"gather_state() gathers it whole on rank 0 (fit does at each epoch's end)")
        value = self._value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy().copy()

    def set_value(self, value) -> None:
        object.__setattr__(self, "_value", _device_value(value, self.dtype, self.shape, self.name))

    @property
    def value(self) -> torch.Tensor:
        """The device tensor itself (no copy)."""
        return self._value


def _device_value(value, dtype, shape, name) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        problem = device_problem(value.device, default_device())
        if problem:
            raise InputError(f"shared {name!r}: {problem}")
        t = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind not in "fiub":
            raise KgenError(f"shared {name!r}: expected a numeric array, got {type(value).__name__}")
        t = torch.from_numpy(np.array(array, order="C"))
    if t.dtype.is_floating_point and not dtype.is_float:  # ints take no fractions silently
        raise KgenError(f"shared {name!r}: expected {dtype} values, got {str(t.dtype)[6:]}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ShapeError(f"shared {name!r}: expected shape {list(shape)}, got {list(t.shape)}")
    return t.to(device=default_device(), dtype=dtype.torch).contiguous().clone()


def shared(value, name: Optional[str] = None, dtype=None) -> SharedVariable:
    """Device-resident state, initialised from `value` (a NumPy array, a torch tensor or a
    scalar). float64 values are stored as float32 unless `dtype` says otherwise."""
    if name is None:
        name = f"shared{next(_shared_ids)}"
    if not isinstance(name, str) or not name.isidentifier():
        raise KgenError(f"a shared variable's name must be an identifier, got {name!r}")
    array = value if isinstance(value, torch.Tensor) else np.asarray(value)
    if dtype is None:
        dtype = dtypes.float32 if str(array.dtype) in ("float64", "torch.float64") else dtypes.dtype(array.dtype)
    dtype = dtypes.dtype(dtype)
    node = SharedVariable("input", (), {"name": name, "shared": True}, dtype, tuple(array.shape))
    node.set_value(value)
    return node


class Function:
    """A compiled kgen function; call it with the values of its inputs, in order."""

    def __init__(self, inputs, outputs, updates, device=None, check_finite=None):
        self.check_finite = check_finite  # None: as $KGEN_CHECK_FINITE says (see __call__)
        self.inputs = list(inputs)
        self.single_output = isinstance(outputs, Node)  # called with one output: return it bare
        self.outputs = [] if outputs is None else ([outputs] if self.single_output else list(outputs))
        self.updates = _check_updates(updates)
        for o in self.outputs:
            if not isinstance(o, Node):
                raise KgenError(f"function outputs must be kgen tensors, got {type(o).__name__}")
        _check_inputs(self.inputs)
        results = self.outputs + [new for _, new in self.updates]
        self.shared = _free_shared(results, self.inputs)
        self.graph = Graph(self.inputs + self.shared, results)
        counters.bump("traces")
        position = {id(node): i for i, node in enumerate(self.inputs + self.shared)}
        in_place = {len(self.outputs) + k: position[id(var)] for k, (var, _) in enumerate(self.updates)
                    if id(var) in position}  # its new value may overwrite it (kgen.lowering.buffers)
        self.program = compile(self.graph, device or default_device(), updates=in_place)

    # --- calling -------------------------------------------------------------------------
    def __call__(self, *args):
        """The outputs for `args`. Every argument is converted and checked first (kgen.kernels.
        inputs: dtype, device, class labels), so a bad one changes nothing. With check_finite
        on, the run stops at the first kernel writing a NaN or an infinity (NonFiniteError),
        and the shared variables keep their values."""
        self._check_arity(args)
        tensors = {node: self.program.to_tensor(value, node) for node, value in zip(self.inputs, args)}
        checking = check_finite_on(self.check_finite)  # updates in place go to copies then
        tensors.update({s: s.value.clone() if checking else s.value for s in self.shared})
        results = self.program.run(tensors, check_finite=checking)
        outputs, new_values = results[:len(self.outputs)], results[len(self.outputs):]
        for (var, _), value in zip(self.updates, new_values):
            object.__setattr__(var, "_value", value)
        if self.single_output:
            return outputs[0]
        return outputs if self.outputs else None

    def tune(self, *args, tier: str = "quick", cache=None, progress=None) -> list:
        """Tune this function's kernels on its GPU at the shapes of `args` (its inputs, in
        order, with the shared variables' current values); later calls launch with the
        picks. See Program.tune."""
        self._check_arity(args)
        values = {node.name: value for node, value in zip(self.inputs, args)}
        values.update({s.name: s.value for s in self.shared})
        return self.program.tune(values, tier=tier, cache=cache, progress=progress)

    def _check_arity(self, args) -> None:
        if len(args) != len(self.inputs):
            names = ", ".join(i.name for i in self.inputs)
            raise InputError(f"this function takes {len(self.inputs)} inputs ({names}), got {len(args)}")

    # --- looking inside --------------------------------------------------------------------
    @property
    def source(self) -> str:
        """The generated Triton module (readable; runs by itself)."""
        return self.program.source

    @property
    def kernels(self) -> list:
        return self.program.kernels

    def dump(self, path) -> Path:
        """Write the generated Triton module to `path`."""
        path = Path(path)
        atomic_write(path, self.source)
        return path


def function(inputs: Sequence[Node], outputs=None, updates=None, device=None, check_finite=None) -> Function:
    """Compile `outputs` (a tensor, a list, or None) and `updates` (pairs of a shared
    variable and its new value, or a dict) of `inputs` into one program. `check_finite=True`
    (or KGEN_CHECK_FINITE=1 where it is None) checks every kernel's results for NaN and
    infinity on each call and stops at the first kernel writing one (docs/bad_inputs.md)."""
    return Function(inputs, outputs, updates, device, check_finite)


def _check_inputs(inputs):
    for i, node in enumerate(inputs):
        if not isinstance(node, Node) or node.op != "input":
            raise KgenError(f"function input {i} must be a kgen.tensor, got {node!r}")
        if isinstance(node, SharedVariable):
            raise KgenError(f"function input {i} is the shared variable {node.name!r}: shared "
                            f"variables are read implicitly; pass only kgen.tensor inputs")
    names = [n.name for n in inputs]
    for name in names:
        if names.count(name) > 1:
            raise KgenError(f"two function inputs are named {name!r}")


def _check_updates(updates) -> list:
    if updates is None:
        return []
    pairs = list(updates.items()) if isinstance(updates, dict) else list(updates)
    seen = set()
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise KgenError(f"updates must be (shared variable, new value) pairs, got {pair!r}")
        var, new = pair
        if not isinstance(var, SharedVariable):
            raise KgenError(f"an update must target a kgen.shared variable, got {var!r}")
        if var in seen:
            raise KgenError(f"shared variable {var.name!r} is updated twice")
        seen.add(var)
        if not isinstance(new, Node):
            raise KgenError(f"the update of {var.name!r} must be a kgen expression, got {type(new).__name__}")
        if new.dtype != var.dtype:
            raise KgenError(f"the update of {var.name!r} has dtype {new.dtype}, expected {var.dtype}")
        if len(new.shape) != len(var.shape) or not all(shapes.dims_equal(a, b) for a, b in zip(new.shape, var.shape)):
            raise ShapeError(f"the update of {var.name!r} has shape {shapes.format_shape(new.shape)}, "
                             f"expected {shapes.format_shape(var.shape)}")
    return [tuple(p) for p in pairs]


def _free_shared(results, inputs) -> list:
    """The shared variables `results` read; an unlisted plain input is an error."""
    found = []
    for node in topological_order(results):
        if node.op != "input" or node in inputs:
            continue
        if isinstance(node, SharedVariable):
            found.append(node)
        else:
            listed = ", ".join(i.name for i in inputs) or "none"
            raise InputError(f"the outputs depend on input {node.name!r}, which is not among the "
                             f"function's inputs ({listed})")
    return found


# A misspelt or foreign keyword (kgen.function(..., update=...)) is a kgen ArgumentError
# naming the function and the keywords it takes, not Python's bare TypeError.
tensor = check_arguments(tensor, "kgen.tensor")
shared = check_arguments(shared, "kgen.shared")
function = check_arguments(function, "kgen.function")
