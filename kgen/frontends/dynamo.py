"""torch.compile(model, backend="kgen"): Dynamo's graphs run as kgen's generated kernels.

The backend is registered through the `torch_dynamo_backends` entry point (pyproject.toml),
so `backend="kgen"` works without importing kgen first. For each FX graph Dynamo hands
over, kgen exports it to core ATen (`torch.export`, non-strict: the graph is already
traced) and translates it with the same walker as `from_torch` (kgen/frontends/fx.py),
per set of input shapes (a new batch size compiles again, as it would re-trace in torch).

Autograd: the graph runs inside a `torch.autograd.Function`. Its forward is a
kgen.function of every graph input (parameters included, as Dynamo passes them) to the
graph's outputs; its backward is a second kgen.function, built on first use, that takes
the same inputs and one cotangent per output and returns kgen's VJP (kgen.grad) for the
inputs that require a gradient. So torch's optimizers, losses and loops work unchanged,
and both directions run kgen's kernels. Buffers the graph writes (batch norm's running
statistics) are copied back into torch's tensors after the forward. A dropout's seed is
an input of both functions, drawn per call and saved for the backward, so the backward
sees the forward's mask.

A graph kgen cannot translate (an op with no entry in the ATen table, a construct export
refuses) runs in eager torch instead, and the log (logger `kgen.dynamo`) says why in one
line per graph.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from torch.export.graph_signature import InputKind, OutputKind

from kgen.errors import KgenError
from kgen.frontends.fx import Context, core_aten, quiet_export, torch_shape, translate
from kgen.function import function, tensor
from kgen.ir import dtypes
from kgen.ir.autodiff import grad

log = logging.getLogger("kgen.dynamo")
_graph_ids = itertools.count()


def backend(gm: torch.fx.GraphModule, example_inputs):
    """The Dynamo backend: a callable running `gm` through kgen (or eager torch, logged)."""
    return _CompiledGraph(gm, next(_graph_ids))


class _CompiledGraph:
    def __init__(self, gm, number: int):
        self.gm, self.number = gm, number
        self.variants = {}  # input shapes and dtypes -> _Variant
        self.fallback = None  # why this graph runs in eager torch, once it does

    def __call__(self, *args):
        if self.fallback is not None:
            return self.gm(*args)
        key = tuple((tuple(a.shape), a.dtype, a.requires_grad) if isinstance(a, torch.Tensor) else ("value", a)
                    for a in args)
        variant = self.variants.get(key)
        if variant is None:
            try:
                variant = self.variants[key] = _Variant(self.gm, args)
            except KgenError as e:
                self.fallback = str(e).splitlines()[0]
                ops = sum(1 for n in self.gm.graph.nodes if n.op == "call_function")
                log.warning("kgen: graph %d (%d ops) runs in eager torch: %s", self.number, ops, self.fallback)
                return self.gm(*args)
        return variant(args)


class _Variant:
    """One graph at one set of input shapes: its forward and (lazily) backward functions."""

    def __init__(self, gm, args):
        with quiet_export():
            try:
                program = core_aten(torch.export.export(gm, tuple(args), strict=False))
            except Exception as e:
                raise KgenError(f"torch.export could not capture the graph: {str(e).strip().splitlines()[0]}") from e
        signature = program.graph_signature
        nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        self.tensor_positions, self.inputs, bindings = [], [], {}
        user = [s for s in signature.input_specs if s.kind == InputKind.USER_INPUT]
        for position, (spec, arg) in enumerate(zip(user, args)):
            if isinstance(arg, torch.Tensor):
                value = tensor(f"in{position}", torch_shape(nodes[spec.arg.name].meta["val"], {}),
                               dtypes.dtype(arg.dtype))
                self.tensor_positions.append(position)
                self.inputs.append(value)
            else:
                value = arg
            bindings[spec.arg.name] = value
        for spec in signature.input_specs:
            if spec.kind != InputKind.USER_INPUT:
                raise KgenError(f"the exported graph has a {spec.kind.name} input {spec.arg.name}, which Dynamo "
                                f"graphs are not expected to have")
        self.seeds = []
        ctx = Context({}, self._seed_input, advance_seeds=False)
        values = translate(program.graph, bindings, ctx, {})
        self.outputs, self.mutations = [], []  # mutations: (argument position, output index)
        positions = {spec.arg.name: p for p, spec in enumerate(user)}
        for spec, value in zip(signature.output_specs, values):
            if spec.kind == OutputKind.USER_INPUT_MUTATION:
                self.mutations.append((positions[spec.target], len(self.outputs)))
            elif spec.kind != OutputKind.USER_OUTPUT:
                raise KgenError(f"the graph's output {spec.arg.name} is a {spec.kind.name}, which kgen does not "
                                f"support")
            self.outputs.append(value)
        self.user_outputs = [i for i, spec in enumerate(signature.output_specs) if spec.kind == OutputKind.USER_OUTPUT]
        self.forward = function(self.inputs + self.seeds, self.outputs)
        self._backward = None

    def _seed_input(self, node_name: str):
        seed = tensor(f"seed{len(self.seeds)}", (), dtypes.int32)
        self.seeds.append(seed)
        return seed

    def backward_function(self, wanted: tuple):
        """kgen's VJP: (inputs, seeds, one cotangent per float user output) -> the gradients
        of the inputs at positions `wanted`."""
        if self._backward is None or self._backward[0] != wanted:
            cotangents, total = [], None
            for k in self.user_outputs:
                out = self.outputs[k]
                if not out.dtype.is_float:
                    continue
                cot = tensor(f"cot{k}", out.shape, out.dtype)
                cotangents.append((k, cot))
                term = (out * cot).sum() if out.ndim else out * cot
                total = term if total is None else total + term
            grads = grad(total, [self.inputs[i] for i in wanted])
            fn = function(self.inputs + self.seeds + [c for _, c in cotangents], list(grads))
            self._backward = (wanted, fn, [k for k, _ in cotangents])
        return self._backward

    def __call__(self, args):
        tensors = [args[p] for p in self.tensor_positions]
        seeds = [np.int32(s) for s in np.random.randint(0, 2**31 - 1, size=len(self.seeds))]
        results = _KgenGraph.apply(self, seeds, *tensors)
        results = results if isinstance(results, tuple) else (results,)
        with torch.no_grad():
            for position, k in self.mutations:
                args[position].copy_(results[k])
        return [results[k] for k in self.user_outputs]


class _KgenGraph(torch.autograd.Function):
    @staticmethod
    def forward(ctx, variant, seeds, *tensors):
        ctx.variant, ctx.seeds = variant, seeds
        # the backward reads the inputs as they were: those the graph writes (a batch norm's
        # statistics, copied back after this forward) are kept as copies
        written = {variant.tensor_positions.index(p) for p, _ in variant.mutations}
        ctx.inputs = [t.detach().clone() if i in written else t.detach() for i, t in enumerate(tensors)]
        outputs = variant.forward(*[t.detach() for t in tensors], *seeds)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for k, out in enumerate(outputs):
            if k not in variant.user_outputs or not out.dtype.is_floating_point:
                ctx.mark_non_differentiable(out)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *cotangents):
        variant, tensors = ctx.variant, ctx.inputs
        wanted = tuple(i for i, needs in enumerate(ctx.needs_input_grad[2:]) if needs)
        if not wanted:
            return (None, None) + (None,) * len(tensors)
        _, fn, outputs = variant.backward_function(wanted)
        cots = [cotangents[k].contiguous() for k in outputs]  # torch materialises a missing one as zeros
        grads = fn(*tensors, *ctx.seeds, *cots)
        grads = grads if isinstance(grads, (list, tuple)) else [grads]
        result = [None] * len(tensors)
        for i, g in zip(wanted, grads):
            result[i] = g
        return (None, None, *result)
