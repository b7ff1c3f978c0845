"""ONNX recurrent ops onto kgen.ops: LSTM and GRU, unrolled over a static sequence length."""
from __future__ import annotations
