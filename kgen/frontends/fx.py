"""Walk an FX graph of core ATen ops and build the same computation as kgen values.

Both ways in share this walker: torch.export's ExportedProgram (kgen.from_torch, .pt2
files) and Dynamo's graphs (torch.compile(backend="kgen")), each exported to core ATen
first. Placeholders are bound by the caller (parameters and buffers to kgen.shared values,
user inputs to symbolic tensors); every call goes through the ATen table
(kgen/frontends/aten.py); the result's shape is checked against the one torch recorded
for the node, so a translation that disagrees with torch fails where it happens.

A graph that uses an op with no translation is refused before anything runs or is
compiled: the error names the op, the torch module it came from (`layer2.0.attn`, from
the node's `nn_module_stack`) and its operands' shapes.
"""
from __future__ import annotations

import contextlib
import copy
import operator
import warnings

import sympy
import torch

from kgen.errors import KgenError, ShapeError, UnknownOpError
from kgen.frontends.aten import ATEN, SIZE_ARITHMETIC, Unused
from kgen.ir import shapes
from kgen.ir.node import Node


@contextlib.contextmanager
def quiet_export():
    """torch.export's own FutureWarnings (pytree deprecations in torch's code) hidden:
    they are torch's to fix and say nothing about the user's model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


# --- capture to core ATen, keeping where gradients stop ------------------------------------------
# Core ATen is an inference IR: run_decompositions turns `x.detach()` into `aten.alias` (as it
# does a no-op view) and inlines a `torch.no_grad()` region, so a translation of it would
# differentiate through both. Before decomposing, kgen marks them with an op of its own,
# kgen::stop_gradient (the identity, translated to ops.stop_gradient): detach maps to it,
# and each tensor entering a no-grad region passes through it.
@torch.library.custom_op("kgen::stop_gradient", mutates_args=())
def _stop_gradient(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_stop_gradient.register_fake
def _(x):
    return torch.empty_like(x)


def _stop_no_grad_regions(program):
    """`program`, or a copy of it whose no-grad regions' tensor inputs pass through
    kgen::stop_gradient (a region's result then carries no gradient, as in torch)."""
    regions = [n for n in program.graph.nodes if n.op == "call_function"
               and n.target is torch.ops.higher_order.wrap_with_set_grad_enabled and n.args[0] is False]
    if not regions:
        return program
    program = copy.deepcopy(program)
    graph = program.graph_module.graph
    for node in graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.higher_order.wrap_with_set_grad_enabled \
                and node.args[0] is False:
            args = list(node.args)
            for k, arg in enumerate(args[2:], start=2):
                if isinstance(arg, torch.fx.Node) and isinstance(arg.meta.get("val"), torch.Tensor):
                    with graph.inserting_before(node):
                        stopped = graph.call_function(torch.ops.kgen.stop_gradient.default, (arg,))
                    stopped.meta["val"] = arg.meta["val"]
                    args[k] = stopped
            node.args = tuple(args)
    program.graph_module.recompile()
    return program


def core_aten(program):
    """An ExportedProgram (torch.export's training IR) lowered to core ATen, with detach and
    no-grad regions kept as kgen::stop_gradient."""
    table = torch.export.default_decompositions()
    table[torch.ops.aten.detach.default] = lambda x: torch.ops.kgen.stop_gradient(x)
    with quiet_export():
        return _stop_no_grad_regions(program).run_decompositions(table)


class Context:
    """What translators may ask of the graph being built: a dropout's seed, one per graph
    node, kept across builds in `seeds` (device state that the step advances, or an input
    when `advance_seeds` is False and the caller passes a fresh seed each run)."""

    def __init__(self, seeds: dict, make_seed, advance_seeds: bool = True):
        self.seeds, self.make_seed, self.advance_seeds = seeds, make_seed, advance_seeds
        self.updates: list = []  # (shared, new value) pairs the step applies
        self.node = None  # the FX node being translated

    def seed(self):
        name = self.node.name
        if name not in self.seeds:
            self.seeds[name] = self.make_seed(name)
        seed = self.seeds[name]
        if self.advance_seeds:
            self.updates.append((seed, seed + 1))
        return seed


def module_path(node) -> str:
    """The torch module a node came from, as a state_dict prefix (`layer2.0.attn`)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path]
    return paths[-1] if paths else ""


def torch_shape(value, symbols: dict) -> tuple:
    """A FakeTensor's shape as kgen dims: ints, and torch's size symbols mapped by `symbols`."""
    return tuple(int(d) if isinstance(d, int) or not isinstance(d, torch.SymInt) else
                 sympy.sympify(d.node.expr).subs(symbols) for d in value.shape)


def _describe(value) -> str:
    if isinstance(value, Node):
        return value.type_str()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return repr(value)


def _where(node) -> str:
    path = module_path(node)
    return f"module `{path}`" if path else "the top-level module"


def _substitute(arg, env: dict, node):
    """`arg` with every FX node replaced by its kgen value."""
    if isinstance(arg, torch.fx.Node):
        value = env[arg.name]
        if isinstance(value, Unused):
            raise KgenError(f"{node.target} in {_where(node)} reads {value.what} of {arg.name}, which kgen does "
                            f"not compute")
        return value
    if isinstance(arg, (list, tuple)):
        return type(arg)(_substitute(a, env, node) for a in arg)
    if isinstance(arg, dict):
        return {k: _substitute(v, env, node) for k, v in arg.items()}
    if isinstance(arg, torch.SymInt):
        raise KgenError(f"{node.target} in {_where(node)}: a size argument {arg} that is no graph node")
    return arg


def _check_shape(node, value, symbols: dict) -> None:
    expected = node.meta.get("val")
    if not isinstance(value, Node) or not isinstance(expected, torch.Tensor):
        return
    want = torch_shape(expected, symbols)
    if len(want) != value.ndim or not all(shapes.dims_equal(a, b) for a, b in zip(want, value.shape)):
        raise ShapeError(f"internal: kgen's translation of {node.target} in {_where(node)} gives "
                         f"{value.type_str()}, torch's has shape {list(want)}")


def _call(node, args, kwargs, ctx):
    target = node.target
    if target is operator.getitem:
        return args[0][args[1]]
    if getattr(target, "__module__", None) in ("_operator", "operator") and target.__name__ in SIZE_ARITHMETIC:
        return SIZE_ARITHMETIC[target.__name__](*args)
    translate = ATEN.get(str(target))
    if translate is None:
        raise UnknownOpError(f"torch op {target} has no kgen translation; it comes from {_where(node)} with "
                             f"operands {_describe(args)}")
    try:
        return translate(ctx, *args, **kwargs)
    except KgenError as e:
        raise type(e)(f"{target} in {_where(node)} with operands {_describe(args)}: {e}") from None


def translate(graph, bindings: dict, ctx: Context, symbols: dict) -> list:
    """The graph's outputs (flattened, in order) as kgen values, its placeholders taking
    `bindings` (placeholder name -> kgen value); `symbols` maps torch's size symbols to
    kgen's."""
    env, outputs = {}, None
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node.name] = bindings[node.name]
        elif node.op == "call_function":
            ctx.node = node
            value = _call(node, _substitute(node.args, env, node), _substitute(node.kwargs, env, node), ctx)
            _check_shape(node, value, symbols)
            env[node.name] = value
        elif node.op == "output":
            outputs = [_substitute(a, env, node) if a is not None else None for a in node.args[0]]
        else:
            raise KgenError(f"FX node {node.name}: {node.op} nodes are not expected in an exported graph")
    return outputs
