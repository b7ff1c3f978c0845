"""The VJP of a scan result: a reverse scan over the forward's history.

For result r of a scan with carries c, scanned inputs x and loop-invariant inputs k, the
backward scan runs the steps in the other direction with carries (dc, dk): at step t it
rebuilds the forward step from the carries before it (the `history` result, so nothing is
recomputed through time), seeds the step's new carries with dc and, when r is a step
output, its y with g[t], and takes kgen.grad of that step: the cotangents of the carries
before it become the next dc, those of x_t are the step's output, and those of k add into
dk. The final dc and dk are the gradients of init and of k; the stacked outputs, those of xs.
"""
from __future__ import annotations

from kgen import ops
from kgen.ir.autodiff import grad
from kgen.ir.node import Node
from kgen.ir.ops_loop import apply_body


def _zeros(like: Node) -> Node:
    return ops.broadcast_to(ops.constant(0.0, like.dtype), like.shape)


def scan_vjp(g: Node, node: Node) -> tuple:
    attrs = node.attrs
    body, k, m = attrs["body"], attrs["carries"], attrs["xs"]
    kind, index = attrs["result"]
    if kind == "history":
        raise NotImplementedError("a scan's history is read by its own gradient only, which never differentiates it")
    carries, xs, closure = node.inputs[:k], node.inputs[k:k + m], node.inputs[k + m:]
    history = [Node("scan", node.inputs, {**attrs, "result": ("history", i)}) for i in range(k)]
    float_closure = [c for c in closure if c.dtype.is_float]

    def step(state, sliced):
        dcarry, dclosure = state[:k], state[k:]
        before, x_t = sliced[:k], sliced[k:k + m]
        g_t = sliced[k + m] if kind == "ys" else None
        new_carries, ys = apply_body(body, before, x_t, closure)
        total = None
        for c, dc in zip(new_carries, dcarry):
            if c.dtype.is_float:
                term = ops.sum(ops.mul(c, dc))
                total = term if total is None else total + term
        if g_t is not None:
            term = ops.sum(ops.mul(ys[index], g_t))
            total = term if total is None else total + term
        wrt = [v for v in list(before) + list(x_t) + float_closure if v.dtype.is_float]
        grads = dict(zip(wrt, grad(total, wrt))) if total is not None and wrt else {}
        next_dcarry = tuple(grads.get(b, _zeros(b)) if b.dtype.is_float else dc for b, dc in zip(before, dcarry))
        next_dclosure = tuple(acc + grads.get(c, _zeros(c)) for acc, c in zip(dclosure, float_closure))
        dx = tuple(grads.get(x, _zeros(x)) if x.dtype.is_float else _zeros(x) for x in x_t)
        return next_dcarry + next_dclosure, dx if dx else None

    seed = tuple((g if kind == "carry" and i == index else _zeros(c)) for i, c in enumerate(carries))
    init = seed + tuple(_zeros(c) for c in float_closure)
    sequences = tuple(history) + tuple(xs) + ((g,) if kind == "ys" else ())
    final, dxs = ops.scan(step, init, sequences, reverse=not attrs["reverse"])
    dxs = () if dxs is None else dxs
    dclosure = dict(zip(float_closure, final[k:]))
    return tuple(final[:k]) + tuple(dxs) + tuple(dclosure.get(c) for c in closure)
