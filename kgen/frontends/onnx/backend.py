"""kgen as an ONNX backend (`onnx.backend.base.Backend`), so ONNX's conformance suite
(`onnx.backend.test.BackendTest`) examines it:

    import onnx.backend.test
    from kgen.frontends.onnx.backend import KgenBackend
    globals().update(onnx.backend.test.BackendTest(KgenBackend, __name__).include("test_relu").test_cases)

`prepare(model)` imports the model with `from_onnx`; `run(inputs)` builds a kgen.function of
the graph at the inputs' shapes and runs its generated kernels (on the GPU when there is one,
else under Triton's interpreter). Graph inputs that an op needs known at import (a Reshape's
shape, a Slice's starts given as inputs rather than initializers, as the suite writes them)
are bound to the values given for them.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from kgen.frontends.onnx import graph as onnx_graph
from kgen.frontends.onnx.module import from_onnx
from kgen.frontends.onnx.table import ONNX, kgen_dtype
from kgen.function import function, tensor


def static_inputs(model: onnx.ModelProto) -> set:
    """The graph inputs that some node reads where a value must be known at import."""
    inputs = {info.name for info in model.graph.input}
    found = set()
    for node in model.graph.node:
        entry = ONNX.get(node.op_type)
        for i, name in enumerate(node.input):
            if entry is not None and i in entry.static and name in inputs:
                found.add(name)
    return found


class KgenRep(BackendRep):
    def __init__(self, model: onnx.ModelProto):
        self.model = onnx_graph.load(model)
        self.static = static_inputs(self.model)
        initialized = {t.name for t in self.model.graph.initializer}
        self.names = [info.name for info in self.model.graph.input if info.name not in initialized]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            arrays = [np.asarray(inputs[name]) for name in self.names]
        else:
            arrays = [np.asarray(v) for v in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        given = dict(zip(self.names, arrays))
        module = from_onnx(self.model, constants={n: v for n, v in given.items() if n in self.static})
        symbolic = []
        for (name, _, dtype), (onnx_name, value) in zip(module.inputs, [(n, given[n]) for n in self.names
                                                                       if n not in self.static]):
            symbolic.append(tensor(name, value.shape, dtype))
        outputs = module(*symbolic)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        results = function(symbolic, outputs)(*[_input(given[n]) for n in self.names if n not in self.static])
        results = results if isinstance(results, (list, tuple)) else [results]
        declared = [out.type.tensor_type.elem_type for out in self.model.graph.output]
        return tuple(_numpy(r, t) for r, t in zip(results, declared))


_BFLOAT16 = onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.BFLOAT16)  # ml_dtypes' type


def _input(array: np.ndarray):
    """An input as kgen takes it: NumPy has no bfloat16 of its own (ONNX's is ml_dtypes'),
    so those become torch tensors, exactly (every bfloat16 is a float32)."""
    if array.dtype != _BFLOAT16:
        return array
    import torch
    return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)


def _numpy(value, element_type: int) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        array = value.float().numpy() if str(value.dtype) == "torch.bfloat16" else value.numpy()
    else:
        array = np.asarray(value)
    if element_type:
        array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(element_type), copy=False)
    return array


class KgenBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> KgenRep:
        return KgenRep(model)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        if device == "CPU":
            return True
        import torch  # only to ask whether CUDA is there
        return device.startswith("CUDA") and torch.cuda.is_available()

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        try:
            for info in list(model.graph.input) + list(model.graph.output):
                kgen_dtype(info.type.tensor_type.elem_type, info.name)
        except Exception:
            return False
        return True


prepare = KgenBackend.prepare
run_model = KgenBackend.run_model
supports_device = KgenBackend.supports_device
