"""Op table entry for loops: `scan`, a node holding a body graph that runs once per step.

    carry, ys = kgen.scan(step, init, xs)        # step(carry, x_t) -> (carry, y_t)

The body is a Graph over placeholders: the carries (`c0`, `c1`, ...), one step's slice of
each scanned input (`x0`, ...), and the loop-invariant values the step reads from outside
(`k0`, ...: weights, shared variables), which `kgen.ops.scan` finds and passes as the node's
inputs. Its outputs are the new carries, then each step's outputs.

A node is single-valued (DESIGN rule 2), so a scan is a family of sibling nodes with the same
body and inputs, each giving one result (`attrs["result"]`):
- ("carry", i): carry i after the last step;
- ("ys", j): step output j of every step, stacked along a new axis 0 (time order, also when
  the scan runs in reverse);
- ("history", i): carry i *before* each step, stacked (what the gradient reads).
The reference runs the body per step. Lowering (kgen/lowering/loops.py, fusion rule S1) turns
a family whose body fits the persistent template (kgen/lowering/scan_fit.py) into the same
family of `persistent_scan` nodes, a template op (kgen/kernels/scan.py) whose results one
kernel writes (fusion rule E6), the length a kernel argument; any other scan of static
length is unrolled into its steps, the siblings sharing one unrolled recurrence.

The VJP of a family is one reverse scan over the forward's history, whatever set of its
results the loss reads (`joint_vjp`: kgen.grad gathers the siblings' cotangents first): its
body is the forward body's own VJP (kgen.grad of the body), its carries the carries'
cotangents; the loop-invariant inputs' gradients are summed over the steps after it.
"""
from __future__ import annotations

import numpy as np

from kgen.errors import KgenError, ShapeError
from kgen.ir import shapes
from kgen.ir.graph import Graph, topological_order
from kgen.ir.node import Node
from kgen.ir.optable import OpDef, register

RESULTS = ("carry", "ys", "history")


def substitute(outputs, mapping: dict) -> list:
    """`outputs` rebuilt with each node of `mapping` replaced by its value (a node: the
    same shapes and dtypes), every node depending on one rebuilt, the rest shared."""
    rebuilt = dict(mapping)
    for node in topological_order(outputs):
        if node in rebuilt:
            continue
        inputs = tuple(rebuilt.get(i, i) for i in node.inputs)
        rebuilt[node] = node if inputs == node.inputs else Node(node.op, inputs, node.attrs, node.dtype, node.shape)
    return [rebuilt[o] for o in outputs]


def apply_body(body: Graph, carries, xs, closure) -> tuple:
    """(new carries, step outputs) of one step: the body with its placeholders bound (its
    inputs are the carries, then one step of each scanned input, then the closure)."""
    values = substitute(list(body.outputs), dict(zip(body.inputs, list(carries) + list(xs) + list(closure))))
    return values[:len(carries)], values[len(carries):]


def _infer(inputs, attrs):
    body, k, m = attrs["body"], attrs["carries"], attrs["xs"]
    kind, index = attrs["result"]
    if len(inputs) != len(body.inputs):
        raise KgenError(f"scan: the body takes {len(body.inputs)} values, got {len(inputs)}")
    length = attrs["length"]
    for position, (place, value) in enumerate(zip(body.inputs, inputs)):
        scanned = k <= position < k + m  # one step of it is the placeholder
        expected = (length,) + place.shape if scanned else place.shape
        if value.dtype != place.dtype or len(value.shape) != len(expected) or not all(
                shapes.dims_equal(a, b) for a, b in zip(value.shape, expected)):
            raise ShapeError(f"scan: {place.name} must be {place.dtype.short}{shapes.format_shape(expected)}, "
                             f"got {value.type_str()}")
    if kind == "carry":
        return body.outputs[index].dtype, body.outputs[index].shape
    if kind == "history":
        return body.outputs[index].dtype, (length,) + tuple(body.outputs[index].shape)
    y = body.outputs[k + index]
    return y.dtype, (length,) + tuple(y.shape)


def run(body: Graph, arrays: list, k: int, scanned: int, length: int, reverse: bool, sizes=None) -> tuple:
    """The recurrence in NumPy: (final carries, stacked step outputs, stacked histories);
    `arrays` holds the k initial carries, then the scanned inputs, then the closure; `sizes`
    the size symbols' values in the graph holding the scan."""
    from kgen.ir.reference import evaluate  # the interpreter runs the body (both in the ir)
    m_out = len(body.outputs) - k
    carries, xs, closure = arrays[:k], arrays[k:k + scanned], arrays[k + scanned:]
    ys, history = [[None] * length for _ in range(m_out)], [[None] * length for _ in range(k)]
    for t in (reversed(range(length)) if reverse else range(length)):
        for i in range(k):
            history[i][t] = carries[i]
        values = evaluate(body, list(carries) + [x[t] for x in xs] + list(closure), sizes=sizes)
        out = [values[o] for o in body.outputs]
        carries = out[:k]
        for j in range(m_out):
            ys[j][t] = out[k + j]
    stack = lambda parts, like: np.stack(parts) if parts else np.zeros((0,) + like.shape, like.dtype)  # noqa: E731
    return (carries, [stack(y, body.outputs[k + j]) for j, y in enumerate(ys)],
            [stack(h, body.outputs[i]) for i, h in enumerate(history)])


def _reference(node, arrays, shape, sizes):
    length = shape[0] if node.attrs["result"][0] != "carry" else None
    if length is None:  # the length is the scanned inputs' leading axis, or the attribute
        xs = arrays[node.attrs["carries"]:node.attrs["carries"] + node.attrs["xs"]]
        length = xs[0].shape[0] if xs else int(node.attrs["length"])
    carries, ys, history = run(node.attrs["body"], arrays, node.attrs["carries"], node.attrs["xs"], length,
                               node.attrs["reverse"], sizes)
    kind, index = node.attrs["result"]
    return {"carry": carries, "ys": ys, "history": history}[kind][index]


def _joint_vjp(pairs):
    from kgen.ir.loop_grad import scan_vjp  # builds a reverse scan with kgen.ops (a cycle in the ir)
    return scan_vjp(pairs)


def _vjp(g, node):
    return _joint_vjp([(g, node)])


register(OpDef("scan", "loop", _infer, _reference, _vjp, sized_reference=True, joint_vjp=_joint_vjp))


# --- persistent_scan: a scan that lowering runs as one kernel ----------------------------------------
def persistent(node: Node) -> Node:
    """The result of the scan `node` as the persistent template's result (same inputs and
    attributes: the same value)."""
    return Node("persistent_scan", node.inputs, node.attrs, node.dtype, node.shape)


def _body_flops(node):
    """The loop's arithmetic: its length times the body's per step (counted on every result
    of a family; a kernel lists one of them as computed)."""
    body = node.attrs["body"]
    return node.attrs["length"] * sum((n.opdef.flops_of(n) for n in body.nodes), 0)


register(OpDef("persistent_scan", "template", _infer, _reference, None, "persistent_scan", results=True,
               flops=_body_flops, sized_reference=True))
