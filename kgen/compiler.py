"""kgen.compile: a graph through the whole pipeline, to a runnable Program.

    graph -> verify -> passes -> fusion -> buffer plan -> codegen (one Triton module) -> Program

The Program reads its launch configs from the autotuner (kgen.autotune.config_source).
"""
from __future__ import annotations

from kgen import counters
from kgen.autotune.config_source import TUNED
from kgen.ir.graph import Graph
from kgen.ir.verify import verify
from kgen.kernels.codegen import generate, module_source
from kgen.kernels.runtime import Program
from kgen.lowering.buffers import plan_buffers
from kgen.lowering.fusion import fuse
from kgen.lowering.passes import optimize


def compile(graph: Graph, device=None, updates=None) -> Program:  # noqa: A001 (the public name)
    """Compile `graph`. `updates` maps output positions to input positions: that output is
    the input's next value (a kgen.function update) and may be written over it in place."""
    counters.bump("lowerings")
    loops = []  # fusion rule S1's decisions, made while lowering loops
    graph = verify(optimize(verify(graph), loops))
    plan = fuse(graph, loops)
    updates = {graph.outputs[o]: graph.inputs[i] for o, i in (updates or {}).items()}
    buffers = plan_buffers(plan, updates)  # before codegen: it may move kernels to later launches
    kernels = generate(plan)
    return Program(graph, plan, kernels, module_source(graph, kernels), device, buffers=buffers, configs=TUNED)
