"""The ONNX frontend: `kgen.from_onnx` (ONNX graph -> kgen IR, as a kgen.nn.Module).

- `graph.py`: reading and checking a model, and the walker over its nodes;
- `table.py`: the op table (`ONNX`, `onnx_op`, `OnnxNode`); its translators, by family, in
  `ops_elementwise.py`, `ops_reduce.py`, `ops_shape.py`, `ops_nn.py` and `ops_rnn.py`;
- `fold.py`: nodes whose inputs are known at import, computed then;
- `module.py`: `from_onnx` and `OnnxModule`;
- `backend.py`: kgen as an `onnx.backend` (the conformance suite's examinee);
- `model_file.py`: `.onnx` files as MODEL arguments of the `kgen` command.

Importing this package needs the `onnx` package (`pip install onnx`); `import kgen` does not.
"""
from kgen.frontends.onnx import ops_elementwise, ops_nn, ops_reduce, ops_rnn, ops_shape  # noqa: F401 (the table)
from kgen.frontends.onnx.module import OnnxModule, from_onnx

__all__ = ["OnnxModule", "from_onnx"]
