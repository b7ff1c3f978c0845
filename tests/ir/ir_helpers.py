"""Helpers shared by the tests under tests/ir (imported by name: pytest puts this folder on
sys.path because it has no __init__.py).

`random_array` is the one from tests/conftest.py, loaded by path so that this works whatever
other conftest.py files the suite holds (pytest imports each of them as "conftest").
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

import kgen


def _load_conftest():
    name = "_kgen_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


random_array = _load_conftest().random_array


def run(outputs, inputs: dict, nodes, precision="float64"):
    """Build a graph of `nodes` (input nodes) -> `outputs`, verify it, run the reference."""
    single = isinstance(outputs, kgen.Node)
    graph = kgen.Graph(list(nodes), [outputs] if single else list(outputs))
    kgen.ir.verify(graph)
    got = kgen.reference.run(graph, inputs, precision=precision)
    return (got[0] if single else got), graph


def ops_in(graph) -> set:
    return {n.op for n in graph.nodes}


def to_torch(array):
    """A float64 (or integer/bool) torch tensor of a NumPy array."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return torch.tensor(array.astype(np.float64))
    return torch.tensor(array)


def assert_close(got, want, rtol=1e-10, atol=1e-12, what=""):
    if isinstance(want, torch.Tensor):
        want = want.detach().numpy()
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if want.dtype == np.bool_ or got.dtype == np.bool_:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=what)
