"""The VJP of a scan: one reverse scan over the forward's history, for all its results.

kgen.grad hands the VJP every sibling result of one scan family that receives a cotangent
(the op table's `joint_vjp`): the last carries' cotangents g_c and the stacked step outputs'
g_y. For a scan with carries c, scanned inputs x and loop-invariant inputs k, the backward
scan runs the steps in the other direction with carries dc, starting from g_c (zero for a
carry the loss does not read): at step t it rebuilds the forward step from the carries
before it (the `history` result, so nothing is recomputed through time), seeds the step's
new carries with dc and each step output read with g_y[t], and takes kgen.grad of that step: the cotangents of the carries before it become the
next dc, those of a float x_t are the step's output (a bool mask or an integer index has
none). The final dc are the gradients of init; the stacked outputs, those of xs.

The gradient of k sums over the steps, and is computed after the loop from per-step values
the backward scan stacks, term by term of the step's cotangent of k (`_terms`):
- a product P_t^T @ Q_t (a matmul's weight gradient) sums to ONE matmul over every step,
  P[T*S, n]^T @ Q[T*S, m], as the recurrent layers' weight gradients do;
- a sum over broadcast axes (a bias's gradient) to one sum over the steps and those axes;
- anything else V_t to a sum of the stacked V over the steps.
A factor that is one of the backward step's scanned inputs (the history, xs, g) is read from
that sequence, and one that is a scanned input's cotangent (an input projection's: the
gates' cotangents are both dxs[t] and the recurrent weight's Q_t) from that output, not
stacked again. So the backward body carries only the carries' cotangents,
row by row like the forward's, and can run as one persistent kernel too (fusion rule S1).
"""
from __future__ import annotations

from kgen import ops
from kgen.ir.autodiff import grad
from kgen.ir.node import Node
from kgen.ir.ops_loop import apply_body


def _zeros(like: Node) -> Node:
    return ops.broadcast_to(ops.constant(0.0, like.dtype), like.shape)


def _terms(value: Node) -> list:
    """The step's cotangent of a loop-invariant value as terms: ("gemm", P, Q) for
    matmul(P^T, Q) of 2-D P and Q, ("sum", Q, axes) for sum(Q, axes, keepdims=True)
    reshaped, ("whole", V) for anything else; the terms add up to `value`."""
    terms, stack = [], [value]
    while stack:
        v = stack.pop()
        a = v.inputs[0] if v.inputs else None
        if v.op == "add" and all(i.shape == v.shape for i in v.inputs):
            stack.extend(v.inputs)
        elif v.op == "matmul" and v.ndim == 2 and a.op == "transpose" and a.ndim == 2:
            terms.append(("gemm", a.inputs[0], v.inputs[1]))
        elif v.op == "reshape" and a.op == "sum" and a.attrs["keepdims"]:
            terms.append(("sum", a.inputs[0], tuple(a.attrs["axes"])))
        else:
            terms.append(("whole", v))
    return terms


def _factors(term: tuple) -> tuple:
    """The per-step values a term (`_terms`) needs stacked."""
    return term[1:3] if term[0] == "gemm" else term[1:2]


def _after_loop(terms: list, stacked, like: Node) -> Node:
    """The sum over the steps of `terms` (`_terms`), from their factors stacked over the steps
    (`stacked`: factor -> [T, ...] value)."""
    total = None
    for term in terms:
        kind, factors = term[0], _factors(term)
        if kind == "gemm":
            p, q = (stacked[f] for f in factors)
            term = ops.matmul(ops.transpose(ops.reshape(p, (-1, p.shape[-1]))), ops.reshape(q, (-1, q.shape[-1])))
        elif kind == "sum":
            q = stacked[factors[0]]
            term = ops.reshape(ops.sum(q, (0,) + tuple(a + 1 for a in term[2]), keepdims=True), like.shape)
        else:
            term = ops.sum(stacked[factors[0]], 0)
        total = term if total is None else total + term
    return _zeros(like) if total is None else total


def scan_vjp(pairs) -> tuple:
    """The cotangents of a scan family's inputs, given (g, result) for every sibling result
    the loss reads (kgen.grad gathers them: `joint_vjp`): ONE reverse scan, seeded with the
    last carries' cotangents as its initial carries and reading the step outputs' cotangents
    as scanned inputs, whatever set of results receives them."""
    node = pairs[0][1]
    attrs = node.attrs
    body, k, m = attrs["body"], attrs["carries"], attrs["xs"]
    seeds = {}  # ("carry" | "ys", i) -> the sum of its cotangents
    for g, result in pairs:
        kind, index = result.attrs["result"]
        if kind == "history":
            raise NotImplementedError("a scan's history is read by its own gradient only, which never differentiates "
                                      "it")
        key = (kind, index)
        seeds[key] = g if key not in seeds else seeds[key] + g
    read = sorted(j for kind, j in seeds if kind == "ys")  # the step outputs with a cotangent
    carries, xs, closure = node.inputs[:k], node.inputs[k:k + m], node.inputs[k + m:]
    history = [Node("scan", node.inputs, {**attrs, "result": ("history", i)}) for i in range(k)]
    float_closure = [c for c in closure if c.dtype.is_float]
    float_xs = [i for i, x in enumerate(xs) if x.dtype.is_float]  # a mask or index has no cotangent to stack

    sequences = tuple(history) + tuple(xs) + tuple(seeds[("ys", j)] for j in read)
    traced = {}  # what the step found: per closure value its terms, and the factors it stacks

    def step(dcarry, sliced):
        before, x_t, g_t = sliced[:k], sliced[k:k + m], sliced[k + m:]
        new_carries, ys = apply_body(body, before, x_t, closure)
        total = None
        for c, dc in zip(new_carries, dcarry):
            if c.dtype.is_float:
                term = ops.sum(ops.mul(c, dc))
                total = term if total is None else total + term
        for j, g_tj in zip(read, g_t):
            term = ops.sum(ops.mul(ys[j], g_tj))
            total = term if total is None else total + term
        wrt = [v for v in list(before) + list(x_t) + float_closure if v.dtype.is_float]
        grads = dict(zip(wrt, grad(total, wrt))) if total is not None and wrt else {}
        next_dcarry = tuple(grads.get(b, _zeros(b)) if b.dtype.is_float else dc for b, dc in zip(before, dcarry))
        dx = tuple(grads.get(x_t[i], _zeros(x_t[i])) for i in float_xs)
        traced["terms"] = [_terms(grads[c]) if c in grads else [] for c in float_closure]
        outer = dict(zip(sliced, sequences))  # a factor that is a scanned input is read from its sequence
        dx_at = {}  # a factor that is also a scanned input's cotangent is read from that output
        for i, d in enumerate(dx):
            dx_at.setdefault(d, i)
        factors = list(dict.fromkeys(f for terms in traced["terms"] for term in terms
                                      for f in _factors(term) if f not in outer))
        traced["outer"], traced["factors"] = outer, [f for f in factors if f not in dx_at]
        traced["dx"] = {f: dx_at[f] for f in factors if f in dx_at}
        ys = dx + tuple(traced["factors"])
        return next_dcarry, ys if ys else None

    init = tuple(seeds.get(("carry", i), _zeros(c)) for i, c in enumerate(carries))
    final, ys = ops.scan(step, init, sequences, reverse=not attrs["reverse"])
    ys = () if ys is None else ys
    final = (final,) if isinstance(final, Node) else tuple(final)
    dxs = ys[:len(float_xs)]
    stacked = {**traced["outer"], **dict(zip(traced["factors"], ys[len(float_xs):])),
               **{f: dxs[i] for f, i in traced["dx"].items()}}
    dclosure = {c: _after_loop(terms, stacked, c) for c, terms in zip(float_closure, traced["terms"])}
    dx_of = dict(zip(float_xs, dxs))
    return final + tuple(dx_of.get(i) for i in range(m)) + tuple(dclosure.get(c) for c in closure)
