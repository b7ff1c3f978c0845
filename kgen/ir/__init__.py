"""kgen.ir: dtypes, symbolic shapes, the op table, Node/Graph, the verifier, the reference
interpreter and autodiff."""
from kgen.ir import dtypes, shapes
from kgen.ir.optable import TABLE, OpDef, Reduction, lookup, register
from kgen.ir import ops_source, ops_elementwise, ops_reduce, ops_view, ops_matmul  # noqa: F401  (fill the table)
from kgen.ir import ops_conv  # noqa: F401  (fill the table)
from kgen.ir import ops_random  # noqa: F401  (fill the table)
from kgen.ir import ops_gather  # noqa: F401  (fill the table)
from kgen.ir import ops_loop  # noqa: F401  (fill the table)
from kgen.ir.node import Node
from kgen.ir.graph import Graph, format_node, topological_order
from kgen.ir.verify import verify
from kgen.ir import reference
from kgen.ir.autodiff import grad
from kgen.ir.dtypes import DType, bfloat16, bool_, float16, float32, int32, int64

__all__ = ["dtypes", "shapes", "TABLE", "OpDef", "Reduction", "lookup", "register", "Node",
           "Graph", "format_node", "topological_order", "verify", "reference", "grad", "DType",
           "float32", "float16", "bfloat16", "int32", "int64", "bool_"]
