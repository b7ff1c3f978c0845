"""kgen.check: run every generated kernel beside the reference interpreter.

Each kernel is fed the reference's (float64) values of the buffers it reads, cast to their
dtypes, so an error is that kernel's own and does not accumulate along the program. Its
outputs are poisoned (NaN) before it runs. The error of an output is
max |kernel - reference| / max(|reference|, 1), relative for large values and absolute for
small ones (a NaN where the reference has none, or none where it has one, is an infinite
error), compared with the tolerance of the coarsest dtype the kernel reads, computes
or writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgen import compiler
from kgen.errors import CheckError, KgenError
from kgen.function import Function
from kgen.ir.graph import Graph
from kgen.ir.reference import bind_inputs, evaluate
from kgen.kernels.runtime import to_numpy
from kgen.tolerance import TOLERANCE, output_error


@dataclass
class KernelCheck:
    kernel: str
    kind: str
    nodes: int
    error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


class CheckReport:
    def __init__(self, rows):
        self.rows = rows

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def __str__(self):
        lines = [f"{'kernel':<28} {'kind':<10} {'nodes':>5} {'error':>10} {'tolerance':>10}  result"]
        for r in self.rows:
            lines.append(f"{r.kernel:<28} {r.kind:<10} {r.nodes:>5} {r.error:>10.2e} {r.tolerance:>10.1e}  "
                         f"{'ok' if r.ok else 'FAIL'}")
        lines.append(f"{sum(r.ok for r in self.rows)}/{len(self.rows)} kernels within tolerance")
        return "\n".join(lines)

    def raise_for_failures(self) -> "CheckReport":
        if not self.ok:
            raise CheckError("generated kernels disagree with the reference:\n" + str(self))
        return self


def _tensor(array: np.ndarray, node, device) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, order="C"))
    return t.to(device=device, dtype=node.dtype.torch)


def check(target, inputs, strict: bool = False) -> CheckReport:
    """Check every kernel of `target` (a kgen.function or a Graph) on `inputs` (the
    function's arguments; for a graph, a mapping by input name or a sequence). With
    `strict`, raise CheckError if a kernel is out of tolerance."""

    if isinstance(target, Function):
        if len(inputs) != len(target.inputs):
            raise KgenError(f"check: the function takes {len(target.inputs)} inputs, got {len(inputs)}")
        program = target.program
        given = dict(zip(target.inputs, inputs))
        named = {s.name: s.get_value() for s in target.shared}
    elif isinstance(target, Graph):
        program = compiler.compile(target)
        given, named = bind_inputs(target, inputs), {}
    else:
        raise KgenError(f"check takes a kgen.function or a Graph, got {type(target).__name__}")
    # the arguments are converted and checked as a call converts them (dtype, device, labels)
    named.update({n.name: to_numpy(program.to_tensor(v, n)) for n, v in given.items()})
    graph = program.graph
    reference = evaluate(graph, {n.name: named[n.name] for n in graph.inputs}, "float64")
    sizes = program.bind_sizes({n: reference[n] for n in graph.inputs})

    rows = []
    for kernel in program.kernels:
        env = {n: _tensor(reference[n], n, program.device) for n in kernel.reads}
        for root in kernel.roots:
            env[root] = program.allocate(root, sizes)
            if root.dtype.is_float:
                env[root].fill_(float("nan"))
        program.launch(kernel, env, sizes)
        error = 0.0
        for root in kernel.roots:
            got = env[root].detach().cpu()
            got = (got.float() if got.dtype == torch.bfloat16 else got).numpy()
            error = max(error, output_error(got, reference[root]))
        # A kernel can be no more exact than the coarsest dtype it reads, computes or writes.
        tolerance = max(TOLERANCE[n.dtype] for n in kernel.roots + kernel.reads + kernel.nodes)
        rows.append(KernelCheck(kernel.name, kernel.kind, len(kernel.nodes), error, tolerance))
    report = CheckReport(rows)
    return report.raise_for_failures() if strict else report
