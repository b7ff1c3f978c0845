"""ONNX's backend conformance cases, as kgen's outside examiner: which cases count, and
running one through KgenBackend with the suite's own comparison.

The cases come from the onnx wheel (`onnx.backend.test.loader.load_model_tests`), built in
memory. A case *counts* when the op it examines is in `LISTED` (the ops kgen's users meet, issue 13)
and every input and output has a dtype kgen computes in; the rest are reported as skipped
with the reason. The other ops of a counted case's graph (an `_expanded` case's function
body: Shape, CastLike, ...) must translate too, or the case fails. `benchmarks/onnx_conformance.py` runs the whole selection;
tests/frontends/test_onnx_conformance.py runs a fixed subset through onnx's own BackendTest.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from kgen.frontends.onnx.backend import KgenBackend
from kgen.frontends.onnx.table import kgen_dtype

LISTED = frozenset("""
Add Sub Mul Div Pow Neg Abs Exp Log Sqrt Tanh Sigmoid Relu LeakyRelu Elu Softplus Erf Clip Max Min Where Cast
Identity Constant ReduceSum ReduceMean ReduceMax MatMul Gemm Conv MaxPool AveragePool GlobalAveragePool
BatchNormalization LayerNormalization Gather Reshape Flatten Transpose Squeeze Unsqueeze Expand Concat Split
Slice Pad Softmax LogSoftmax Dropout LSTM GRU
""".split())

# case-name prefixes that are not an op's name
ALIASES = {"nllloss": "NegativeLogLikelihoodLoss", "sce": "SoftmaxCrossEntropyLoss",
           "mvn": "MeanVarianceNormalization", "batchnorm": "BatchNormalization", "trainingdropout": "Dropout",
           "constantpad": "Pad", "edgepad": "Pad", "reflectpad": "Pad", "wrappad": "Pad", "basicconv": "Conv"}

KINDS = ("node", "pytorch-converted", "pytorch-operator", "simple")


def load_cases(kind: str) -> list:
    """The wheel's cases of `kind`, each with its model and data sets: node cases are built in
    memory; the model tests' files (model.onnx, test_data_set_*/input_*.pb) are read."""
    from onnx.backend.test.loader import load_model_tests  # builds every case: seconds, and noisy
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind=kind)
    return [case if case.model is not None or not case.model_dir else _read(case) for case in cases]


def _read(case):
    directory = Path(case.model_dir)
    if not (directory / "model.onnx").exists():
        return case
    data_sets = []
    for folder in sorted(directory.glob("test_data_set_*")):
        arrays = {}
        for kind in ("input", "output"):
            files = sorted(folder.glob(f"{kind}_*.pb"), key=lambda f: int(f.stem.split("_")[1]))
            arrays[kind] = [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]
        data_sets.append((arrays["input"], arrays["output"]))
    return dataclasses.replace(case, model=onnx.load(str(directory / "model.onnx")), data_sets=data_sets)


def graph_ops(model) -> set:
    ops = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            ops.add(node.op_type)
            for attribute in node.attribute:  # subgraphs (If, Loop, Scan bodies)
                if attribute.g.node:
                    graphs.append(attribute.g)
    return ops


def primary_op(case) -> str:
    """The op a case examines: the longest ONNX op name its name starts with
    (test_maxpool_2d_pads -> MaxPool, test_softmax_axis_0_expanded -> Softmax), else its
    graph's first node's."""
    name = case.name[len("test_"):].lower().replace("_", "")
    for prefix, op in ALIASES.items():
        if name.startswith(prefix):
            return op
    known = sorted({schema.name for schema in onnx.defs.get_all_schemas() if schema.domain in ("", "ai.onnx")},
                   key=len, reverse=True)
    for op in known:
        if name.startswith(op.lower()):
            return op
    return case.model.graph.node[0].op_type if case.model is not None and case.model.graph.node else "?"


def skip_reason(case) -> str | None:
    """Why a case does not count (None when it does)."""
    if case.model is None:
        return "no model in the wheel (a download-only case)"
    if primary_op(case) not in LISTED:
        return f"{primary_op(case)} is not in the list"
    return _dtype_reason(case)


def _dtype_reason(case) -> str | None:
    for info in list(case.model.graph.input) + list(case.model.graph.output):
        if not info.type.HasField("tensor_type"):
            return f"{info.name} is not a tensor"
        try:
            kgen_dtype(info.type.tensor_type.elem_type, info.name)
        except Exception:
            return f"dtype {onnx.TensorProto.DataType.Name(info.type.tensor_type.elem_type)}"
    return None


def model_skip_reason(case) -> str | None:
    """Why a model test (pytorch-converted, pytorch-operator, simple) does not count: an op
    outside the list, or a dtype kgen lacks."""
    if case.model is None:
        return "no model in the wheel (a download-only case)"
    unlisted = sorted(graph_ops(case.model) - LISTED)
    if unlisted:
        return f"ops outside the list: {', '.join(unlisted)}"
    return _dtype_reason(case)


def run_case(case) -> tuple:
    """(status, reason): 'pass', or 'fail' (wrong values) / 'error' (kgen refused or
    crashed) with the first line of why. The comparison is the suite's: outputs of the
    expected dtype and shape, close at the case's rtol/atol."""
    try:
        rep = KgenBackend.prepare(case.model)
        for inputs, expected in case.data_sets:
            inputs, expected = [_array(v) for v in inputs], [_array(v) for v in expected]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = rep.run(inputs)
            if len(outputs) != len(expected):
                return "fail", f"{len(outputs)} outputs, expected {len(expected)}"
            for i, (got, want) in enumerate(zip(outputs, expected)):
                want = np.asarray(want)
                if got.dtype != want.dtype:
                    return "fail", f"output {i}: dtype {got.dtype}, expected {want.dtype}"
                if got.shape != want.shape:
                    return "fail", f"output {i}: shape {list(got.shape)}, expected {list(want.shape)}"
                if want.dtype.kind in "fc":
                    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
                else:
                    np.testing.assert_array_equal(got, want)
    except AssertionError as e:
        return "fail", _first_line(str(e)) + " " + _mismatch(str(e))
    except Exception as e:
        return "error", f"{type(e).__name__}: {_first_line(str(e))}"
    return "pass", ""


def _array(value) -> np.ndarray:
    """A case's input or output as onnx's runner hands it on: some cases (casts to and from
    bfloat16) store TensorProtos, not arrays."""
    import onnx
    return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def _mismatch(text: str) -> str:
    found = re.search(r"Mismatched elements: [^\n]*", text)
    return found.group(0) if found else ""
