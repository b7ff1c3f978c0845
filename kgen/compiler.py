"""kgen.compile: a graph through the whole pipeline, to a runnable Program.

    graph -> verify -> passes -> fusion -> codegen (one Triton module) -> Program
"""
from __future__ import annotations

from kgen.ir.graph import Graph
from kgen.ir.verify import verify
from kgen.kernels.codegen import generate, module_source
from kgen.kernels.runtime import Program
from kgen.lowering.fusion import fuse
from kgen.lowering.passes import optimize


def compile(graph: Graph, device=None) -> Program:  # noqa: A001 (the public name)
    graph = verify(optimize(verify(graph)))
    plan = fuse(graph)
    kernels = generate(plan)
    return Program(graph, plan, kernels, module_source(graph, kernels), device)
