"""kgen.lowering: graph passes, sympy index expressions and fusion (graph -> kernel groups)."""
from kgen.lowering.fusion import FusionPlan, KernelGroup, fuse
from kgen.lowering.passes import cse, optimize

__all__ = ["FusionPlan", "KernelGroup", "fuse", "cse", "optimize"]
