"""Reverse-mode autodiff on the IR: kgen.grad(y, wrt) walks the graph of `y` backwards,
applying each op's VJP rule from the op table. The gradients are ordinary nodes, so they
fuse and compile like any other part of a program.

Sibling results of one computation (an op with a `joint_vjp`: a scan's last carries and
stacked outputs) take one VJP together: the walk applies it at the sibling that comes first
in topological order, which it reaches last, when every reader of every sibling has given
its cotangent; so a scan's gradient is one reverse scan whatever set of its results the
loss reads."""
from __future__ import annotations

from kgen import ops
from kgen.errors import GradError
from kgen.ir.graph import format_node, topological_order
from kgen.ir.node import Node
from kgen.ir.optable import family


def _depends_on(order, targets) -> set:
    """The nodes of `order` (topological) whose value depends on any of `targets`."""
    out = set(targets)
    for node in order:
        if any(i in out for i in node.inputs):
            out.add(node)
    return out


def grad(y: Node, wrt, seed=None):
    """d(y)/d(wrt) as nodes. `y` must be a scalar unless a `seed` cotangent of y's shape is
    given. `wrt` is a node or a list of nodes (the result matches). A node `y` does not
    depend on gets a zero gradient."""
    single = isinstance(wrt, Node)
    wrt_list = [wrt] if single else list(wrt)
    if not isinstance(y, Node):
        raise GradError(f"grad: y must be a kgen tensor, got {type(y).__name__}")
    for w in wrt_list:
        if not isinstance(w, Node):
            raise GradError(f"grad: wrt must hold kgen tensors, got {type(w).__name__}")
        if not w.dtype.is_float:
            raise GradError(f"grad: cannot differentiate with respect to {format_node(w)} "
                            f"(expected a floating dtype)")
    if not y.dtype.is_float:
        raise GradError(f"grad: y must be floating, got {format_node(y)}")
    if seed is None:
        if y.shape != ():
            raise GradError(f"grad: y has shape {y.type_str()}, not a scalar: pass seed=, "
                            f"a cotangent of that shape, or reduce y first (e.g. y.sum())")
        seed = ops.constant(1.0, y.dtype)
    else:
        seed = ops.cast(ops.constant(seed) if not isinstance(seed, Node) else seed, y.dtype)
        if seed.shape != y.shape:
            raise GradError(f"grad: seed has shape {seed.type_str()}, expected y's {y.type_str()}")

    order = topological_order([y])
    needed = _depends_on(order, wrt_list)
    cotangents = {y: seed}
    siblings = {}  # family key -> its results in topological order (the walk meets the first last)
    for node in order:
        if node.opdef.joint_vjp is not None and node in needed:
            siblings.setdefault(family(node), []).append(node)
    for node in reversed(order):
        if node not in needed:
            continue
        if node.opdef.joint_vjp is not None:
            members = siblings[family(node)]
            pairs = [(cotangents[s], s) for s in members if s in cotangents]
            if node is not members[0] or not pairs:
                continue
            input_grads = node.opdef.joint_vjp(pairs)
        else:
            g = cotangents.get(node)
            if g is None or node.opdef.vjp is None:
                continue
            input_grads = node.opdef.vjp(g, node)
        for inp, gi in zip(node.inputs, input_grads):
            if gi is None or inp not in needed or not inp.dtype.is_float:
                continue
            gi = ops.cast(gi, inp.dtype)
            cotangents[inp] = gi if inp not in cotangents else cotangents[inp] + gi
    grads = [cotangents.get(w) if w in cotangents else ops.broadcast_to(ops.constant(0.0, w.dtype), w.shape)
             for w in wrt_list]
    return grads[0] if single else grads
