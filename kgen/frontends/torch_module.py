"""kgen.from_torch: a PyTorch module, captured with torch.export, as a kgen.nn.Module.

    model = kgen.from_torch(torch_model, torch.randn(64, 1, 28, 28))
    step = kgen.nn.train_step(model, kgen.nn.CrossEntropyLoss(), kgen.nn.SGD(model.parameters(), 0.1), x, y)

Capture: `torch.export.export` in training mode and in evaluation mode (a module's graph
may differ between them: dropout, batch norm), each lowered to core ATen with
`run_decompositions()`. The batch dimension (dim 0 of every input) is the size symbol `N`
unless `dynamic_batch=False`, so one compiled step serves every batch size as kgen's own
models do.

The result is a kgen.nn.Module: its parameters and buffers are kgen.shared values under the
torch state_dict's names (so `state_dict()` / `load_state_dict()` move weights both ways),
and calling it on symbolic tensors builds its graph in kgen IR through the ATen table
(kgen/frontends/fx.py). What the exported graph writes back to buffers (batch norm's
running statistics and `num_batches_tracked` in training mode) becomes state updates of
the step, as a dropout's seed does, so `nn.train_step` applies them with the optimizer's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from kgen import ops
from kgen.errors import CaptureError, InputError, KgenError, ShapeError
from kgen.frontends.fx import Context, core_aten, quiet_export, torch_shape, translate
from kgen.frontends.scope import place
from kgen.function import shared, tensor
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node
from kgen.nn.module import Module

BATCH = "N"  # the kgen size symbol of the batch dimension


def _check_example(i: int, value, dynamic_batch: bool) -> None:
    if not isinstance(value, torch.Tensor):
        raise InputError(f"from_torch: example input {i} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype == torch.float64:
        raise InputError(f"from_torch: example input {i} is float64; kgen computes in float32 and below "
                         f"(call model.float() and pass float32 inputs)")
    if dynamic_batch and (value.ndim == 0 or value.shape[0] < 2):
        raise InputError(f"from_torch: example input {i} has shape {list(value.shape)}; a symbolic batch "
                         f"needs dim 0 of at least 2 in the example (torch.export specialises sizes 0 and 1), "
                         f"or pass dynamic_batch=False")


def capture(module: torch.nn.Module, example_inputs, dynamic_batch: bool = True) -> dict:
    """{"train": ExportedProgram, "eval": ExportedProgram} of `module` in core ATen."""
    for i, value in enumerate(example_inputs):
        _check_example(i, value, dynamic_batch)
    dynamic = None
    if dynamic_batch:  # by tensor, so any forward signature (*args included) takes it
        batch, dynamic = torch.export.Dim(BATCH), torch.export.ShapesCollection()
        for value in example_inputs:
            dynamic[value] = {0: batch}
    was_training, programs = module.training, {}
    try:
        for mode in ("train", "eval"):
            module.train(mode == "train")
            try:
                with quiet_export():
                    exported = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic)
            except Exception as e:  # torch's own message says what it could not trace
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                first = " ".join(lines[:2]) if lines else type(e).__name__  # torch's reason is often the 2nd
                hint = ""
                if dynamic_batch and ("Constraints violated" in first or "is not equal to" in first):
                    hint = (f" (dim 0 of every input is the batch size {BATCH}: pass dynamic_batch=False when an "
                            f"input has no batch dimension or the model fixes the batch size)")
                raise CaptureError(f"from_torch: torch.export could not capture {type(module).__name__} in {mode} "
                                f"mode: {first}{hint}") from e
            programs[mode] = core_aten(exported)
    finally:
        module.train(was_training)
    return programs


def from_torch(module, *example_inputs, dynamic_batch: bool = True) -> "TorchModule":
    """`module` (a torch.nn.Module with example inputs, or an ExportedProgram such as
    torch.export.load returns) as a kgen.nn.Module computing the same thing."""
    if isinstance(module, ExportedProgram):
        if example_inputs:
            raise InputError("from_torch: an ExportedProgram carries its own input shapes; pass no example inputs")
        program = core_aten(module)
        model = TorchModule({"train": program, "eval": program}, program.state_dict, type(module).__name__)
    elif isinstance(module, torch.nn.Module):
        if not example_inputs:
            raise InputError(f"from_torch: {type(module).__name__} needs example inputs to capture its graph, "
                             f"e.g. from_torch(model, torch.randn(8, 784))")
        programs = capture(module, example_inputs, dynamic_batch)
        model = TorchModule(programs, module.state_dict(), type(module).__name__)
        model.train(module.training)
    else:
        raise InputError(f"from_torch: expected a torch.nn.Module or a torch.export.ExportedProgram, "
                         f"got {type(module).__name__}")
    model.check_translation()
    return model


class TorchModule(Module):
    """A torch module's exported graphs as a kgen.nn.Module (made by `from_torch`)."""

    def __init__(self, programs: dict, state: dict, torch_name: str):
        super().__init__()
        object.__setattr__(self, "_programs", programs)
        object.__setattr__(self, "torch_name", torch_name)
        object.__setattr__(self, "_seeds", {})  # dropout seeds, one per dropout node
        object.__setattr__(self, "_state_updates", [])
        object.__setattr__(self, "_constants", {})
        signature = programs["train"].graph_signature
        parameters, buffers = set(signature.parameters), set(signature.buffers)
        for name, value in state.items():
            if name not in parameters and name not in buffers:
                continue
            place(self, name, value.detach().cpu().numpy().astype(np.float32) if name in parameters
                  else value.detach().cpu().numpy(), buffer=name not in parameters)

    # --- what it takes ------------------------------------------------------------------------
    @property
    def inputs(self) -> list:
        """The user inputs as (name, shape, dtype), the batch dimension symbolic."""
        program = self._programs["train"]
        symbols = _batch_symbols(program)
        nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        return [(spec.arg.name, torch_shape(nodes[spec.arg.name].meta["val"], symbols),
                 dtypes.dtype(nodes[spec.arg.name].meta["val"].dtype))
                for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]

    def check_translation(self) -> None:
        """Build each mode's graph once on symbolic inputs, so a torch op kgen cannot
        translate is an error when the model is imported, not at its first step."""
        example = [tensor(name, shape, dtype) for name, shape, dtype in self.inputs]
        was_training = self.training
        for mode in ("train", "eval"):
            self.train(mode == "train")
            self(*example)
        self.train(was_training)
        object.__setattr__(self, "_state_updates", [])

    # --- building the graph -------------------------------------------------------------------
    def forward(self, *inputs):
        program = self._programs["train" if self.training else "eval"]
        signature = program.graph_signature
        user = [spec for spec in signature.input_specs if spec.kind == InputKind.USER_INPUT]
        if len(inputs) != len(user):
            raise InputError(f"{self.torch_name}: expected {len(user)} input{'s' * (len(user) != 1)} "
                             f"({', '.join(s.arg.name for s in user)}), got {len(inputs)}")
        symbols = _batch_symbols(program)
        nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        bindings = {}
        for spec, value in zip(user, inputs):
            bindings[spec.arg.name] = _bind_input(self.torch_name, spec.arg.name, nodes[spec.arg.name], value,
                                                  symbols)
        state = dict(self.named_parameters()) | dict(self.named_buffers())
        for spec in signature.input_specs:
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.target in state:
                bindings[spec.arg.name] = state[spec.target]
            elif spec.kind != InputKind.USER_INPUT:
                bindings[spec.arg.name] = self._constant(program, spec)
        ctx = Context(self._seeds, self._make_seed)
        values = translate(program.graph, bindings, ctx, symbols)
        outputs, updates = [], []
        for spec, value in zip(signature.output_specs, values):
            if spec.kind == OutputKind.USER_OUTPUT:
                outputs.append(value)
            elif spec.kind == OutputKind.BUFFER_MUTATION:
                updates.append((state[spec.target], ops.cast(value, state[spec.target].dtype)))
            else:
                raise KgenError(f"{self.torch_name}: the graph's output {spec.arg.name} is a {spec.kind.name}, "
                                f"which kgen does not support (a module that writes to its inputs)")
        object.__setattr__(self, "_state_updates", updates + ctx.updates)
        return pytree.tree_unflatten(outputs, program.call_spec.out_spec)

    def _constant(self, program, spec):
        """A lifted tensor constant or non-persistent buffer, as a kgen constant."""
        key = (id(program), spec.target)
        if key not in self._constants:
            value = program.constants.get(spec.target)
            if value is None:
                raise KgenError(f"{self.torch_name}: the graph reads {spec.target!r} ({spec.kind.name}), which the "
                                f"exported program does not hold")
            self._constants[key] = ops.constant(value.detach().cpu().numpy())
        return self._constants[key]

    def _make_seed(self, node_name: str):
        seed = np.int32(np.random.default_rng(len(self._seeds)).integers(0, 2**31 - 1))
        return shared(seed, name=f"t{id(self):x}_{node_name}_seed")

    def extra_repr(self) -> str:
        n = sum(int(np.prod(p.shape)) for p in self.parameters())
        return f"from torch {self.torch_name}: {n:,} parameters"


def _batch_symbols(program) -> dict:
    """torch's size symbols -> kgen's: the batch dimension of the user inputs is `N`."""
    symbols = {}
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        for d in nodes[spec.arg.name].meta["val"].shape:
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and d.node.expr not in symbols:
                symbols[d.node.expr] = shapes.size_symbol(BATCH if not symbols else f"{BATCH}{len(symbols)}")
    return symbols


def _bind_input(model: str, name: str, node, value, symbols: dict):
    if not isinstance(value, Node):
        raise InputError(f"{model}: input {name!r} must be a kgen tensor (kgen.tensor or a model's output), "
                         f"got {type(value).__name__}")
    expected = torch_shape(node.meta["val"], symbols)
    if value.ndim != len(expected) or not all(
            not isinstance(want, int) or shapes.dims_equal(want, got) for want, got in zip(expected, value.shape)):
        raise ShapeError(f"{model}: input {name!r} must have shape {shapes.format_shape(expected)}, got "
                         f"{value.type_str()}")
    for want, got in zip(expected, value.shape):  # the caller's size for each of torch's symbols
        if not isinstance(want, int):
            for torch_symbol, kgen_symbol in list(symbols.items()):
                if kgen_symbol == want:
                    symbols[torch_symbol] = got
    if value.dtype.is_float != node.meta["val"].dtype.is_floating_point:
        raise InputError(f"{model}: input {name!r} must be {dtypes.dtype(node.meta['val'].dtype)}, got "
                         f"{value.dtype}")
    return value
