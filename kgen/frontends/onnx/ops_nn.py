"""ONNX neural-network layers onto kgen.ops: Conv, MaxPool, AveragePool, GlobalAveragePool,
BatchNormalization, LayerNormalization, Dropout."""
from __future__ import annotations
