"""Model files as a MODEL of the `kgen` command: `.pt2` (torch.export.save) and `.onnx`.

`kgen check`, `kgen stats [--train]` and `kgen compile` take such a file where they take a
zoo name. A file holds the graph and the weights, not a loss or data, so the step is built
the way a classifier is trained unless the output says otherwise: a 2-D output [N, C]
(C > 1) trains with cross-entropy on integer labels, any other output with mean squared
error against a target of its shape; the optimizer is SGD (lr 0.01). The batch kgen checks
and measures is random: floats drawn from N(0, 1), integer inputs 0 or 1 (valid indices of
any embedding), labels in [0, C).
"""
from __future__ import annotations

import os

import numpy as np

from kgen.errors import InputError
from kgen.function import tensor
from kgen.ir.node import Node
from kgen.nn import optim
from kgen.nn.zoo import ZooModel

SUFFIXES = (".pt2", ".onnx")
ROWS = 1024  # rows of random data: enough for any --batch the commands are given by default


def is_model_file(model: str) -> bool:
    return model.endswith(SUFFIXES)


def _load(path: str):
    """A factory of the kgen module in `path` (each call a fresh module), and a description."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (a MODEL ending in {' or '.join(SUFFIXES)} is a model file)")
    if path.endswith(".pt2"):
        # each kind of file's frontend is imported only for it (the onnx one needs the onnx package)
        from kgen.frontends import pt2
        from kgen.frontends.torch_module import from_torch
        program = pt2.load(path)
        return (lambda: from_torch(program)), f"the torch.export program in {path}"
    # the onnx frontend needs the onnx package: imported only for an .onnx file
    from kgen.frontends.onnx import from_onnx
    from kgen.frontends.onnx.graph import load
    model = load(path)
    return (lambda: from_onnx(model)), f"the ONNX model in {path}"


def spec(path: str) -> ZooModel:
    """A zoo-like record for the model in `path`: its model, loss, optimizer and random data."""
    make, description = _load(path)
    probe = make()  # refuses an untranslatable graph now, naming the op
    if len(probe.inputs) != 1:
        raise InputError(f"{path}: the model takes {len(probe.inputs)} inputs "
                         f"({', '.join(name for name, _, _ in probe.inputs)}); the kgen command steps models of "
                         f"one input")
    (name, shape, dtype), = probe.inputs
    out = probe(tensor(name, shape, dtype))
    if not isinstance(out, Node):
        raise InputError(f"{path}: the model returns {len(out)} values; the kgen command steps models of one output")
    classes = int(out.shape[1]) if out.ndim == 2 and isinstance(out.shape[1], int) and out.shape[1] > 1 else None
    tail = tuple(out.shape[1:])
    if not all(isinstance(d, int) for d in tail) or not all(isinstance(d, int) for d in shape[1:]):
        raise InputError(f"{path}: only the batch dimension may be symbolic for the kgen command; the input is "
                         f"{list(shape)} and the output {list(out.shape)}")

    def data():
        rng = np.random.default_rng(0)
        rows = (ROWS,) + tuple(int(d) for d in shape[1:])
        x = (rng.standard_normal(rows).astype(np.float32) if dtype.is_float
             else rng.integers(0, 2, rows).astype(np.int64))
        y = (rng.integers(0, classes, ROWS).astype(np.int64) if classes
             else rng.standard_normal((ROWS,) + tail).astype(np.float32))
        return (x, y), (x, y)

    return ZooModel(name=path, description=description, model=make,
                    loss="sparse_categorical_crossentropy" if classes else "mse",
                    optimizer=lambda params: optim.SGD(params, 0.01), data=data, epochs=1)
