"""`.pt2` files (written by torch.export.save) as a MODEL of the `kgen` command.

`kgen check model.pt2`, `kgen stats model.pt2 [--train]` and `kgen compile model.pt2 ...`
take such a file where they take a zoo name. The file holds the graph and the weights, not
a loss or data, so the step is built the way a classifier is trained unless the output
says otherwise: a 2-D output [N, C] (C > 1) is trained with cross-entropy on integer
labels, any other output with mean squared error against a target of its shape; the
optimizer is SGD (lr 0.01). The batch kgen checks and measures is random: floats drawn
from N(0, 1), integer inputs 0 or 1 (valid indices of any embedding), labels in [0, C).
A file holds one mode (the one it was exported in), which serves training and evaluation.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from kgen.errors import InputError, KgenError
from kgen.frontends.fx import quiet_export
from kgen.frontends.torch_module import from_torch
from kgen.nn import optim
from kgen.nn.zoo import ZooModel

SUFFIX = ".pt2"
ROWS = 1024  # rows of random data: enough for any --batch the commands are given by default


def is_pt2(model: str) -> bool:
    return model.endswith(SUFFIX)


def load(path: str):
    """The ExportedProgram in `path`, or a KgenError naming the file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (a MODEL ending in {SUFFIX} is a file written by torch.export.save)")
    try:
        with quiet_export():
            return torch.export.load(path)
    except Exception as e:
        raise KgenError(f"{path}: torch.export.load cannot read it: {str(e).strip().splitlines()[0]}") from e


def spec(path: str) -> ZooModel:
    """A zoo-like record for the model in `path`: its model, loss, optimizer and random data."""
    program = load(path)
    probe = from_torch(program)  # refuses an untranslatable graph now, naming the op
    if len(probe.inputs) != 1:
        raise InputError(f"{path}: the model takes {len(probe.inputs)} inputs "
                         f"({', '.join(name for name, _, _ in probe.inputs)}); the kgen command steps models of "
                         f"one input")
    (name, shape, dtype), = probe.inputs
    out = next(n for n in program.graph.nodes if n.op == "output").args[0]
    user = [spec.arg.name for spec in program.graph_signature.output_specs if spec.kind.name == "USER_OUTPUT"]
    if len(user) != 1:
        raise InputError(f"{path}: the model returns {len(user)} values; the kgen command steps models of one output")
    value = next(a for a in out if a is not None and a.name == user[0]).meta["val"]
    classes = int(value.shape[1]) if value.ndim == 2 and int(value.shape[1]) > 1 else None

    def data():
        rng = np.random.default_rng(0)
        rows = (ROWS,) + tuple(int(d) for d in shape[1:])
        x = (rng.standard_normal(rows).astype(np.float32) if dtype.is_float
             else rng.integers(0, 2, rows).astype(np.int64))
        tail = tuple(int(d) for d in value.shape[1:])
        y = (rng.integers(0, classes, ROWS).astype(np.int64) if classes
             else rng.standard_normal((ROWS,) + tail).astype(np.float32))
        return (x, y), (x, y)

    return ZooModel(name=path, description=f"the torch.export program in {path}",
                    model=lambda: from_torch(program), loss="sparse_categorical_crossentropy" if classes else "mse",
                    optimizer=lambda params: optim.SGD(params, 0.01), data=data, epochs=1)
