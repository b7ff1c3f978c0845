"""kgen: an ahead-of-time kernel generator for deep learning, from a small tensor IR to
fused Triton kernels, checked against a NumPy reference interpreter."""
from kgen.errors import (CheckError, DTypeError, GradError, InputError, KgenError, ShapeError,
                         UnknownOpError, VerifyError)
from kgen import ir
from kgen import ops
from kgen.ir import reference
from kgen.ir import Graph, Node, bfloat16, bool_, float16, float32, int32, int64
from kgen.ir.autodiff import grad
from kgen.function import Function, SharedVariable, function, shared, tensor
from kgen.compiler import compile
from kgen.check import check
from kgen import counters
from kgen.artifact import Artifact, ArtifactError, compile_artifact, load

__version__ = "0.1.0"

__all__ = ["CheckError", "DTypeError", "GradError", "InputError", "KgenError", "ShapeError",
           "UnknownOpError", "VerifyError", "ir", "ops", "reference", "Graph", "Node",
           "bfloat16", "bool_", "float16", "float32", "int32", "int64", "grad", "Function",
           "SharedVariable", "function", "shared", "tensor", "compile", "check", "counters",
           "Artifact", "ArtifactError", "compile_artifact", "load", "__version__"]
