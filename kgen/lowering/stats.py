"""Static cost figures of a compiled program at concrete sizes: kernel launches, bytes read
and written (each kernel reads its input buffers once, or only the windows of them that
its slices take, and writes its outputs once), and
flops (each op's own count, `OpDef.flops_of`: 2*M*N*K per matmul, 1 per element per
elementwise op, 1 per input element per reduction, ...); and the same figures for an
unfused lowering with one kernel per op, where every op reads its operands from memory and
writes its result (views stay free)."""
from __future__ import annotations

from kgen.ir import shapes


def _elements(node, sizes) -> int:
    return shapes.evaluate(shapes.numel(node.shape), sizes)


def _bytes(node, sizes) -> int:
    return _elements(node, sizes) * max(1, node.dtype.bits // 8)


def node_flops(node, sizes) -> int:
    """The flops of `node` at concrete sizes, as its op table entry counts them."""
    return shapes.evaluate(node.opdef.flops_of(node), sizes)


def _base_and_window(node, sizes):
    """The buffer under a chain of views, and how many of its elements the chain reads."""
    elements = _elements(node, sizes)
    while node.opdef.kind == "view":
        node = node.inputs[0]
        elements = min(elements, _elements(node, sizes))
    return node, elements


def _read_elements(node, readers: dict, roots: set, sizes, memo: dict) -> int:
    """The elements of `node` a kernel needs: all of a value it writes, or that a reduction
    or a template reads; else as many as its elementwise and view readers need (at most
    all), so a buffer read only through a slice, at one step of a sequence say, counts as
    the slice's window."""
    if node not in memo:
        full = _elements(node, sizes)
        if node in roots or not readers.get(node):
            memo[node] = full
        else:
            memo[node] = min(full, sum(_read_elements(r, readers, roots, sizes, memo)
                                       if r.opdef.kind in ("view", "elementwise") else full
                                       for r in readers[node]))
    return memo[node]


def program_stats(program, sizes: dict) -> dict:
    kernels = []
    for k in program.kernels:
        readers, memo = {}, {}
        for n in k.nodes:
            for i in set(n.inputs):
                readers.setdefault(i, []).append(n)
        read = sum(_read_elements(n, readers, set(k.roots), sizes, memo) * max(1, n.dtype.bits // 8)
                   for n in k.reads)
        written = sum(_bytes(n, sizes) for n in k.roots)
        flops = sum(node_flops(n, sizes) for n in k.nodes)
        kernels.append({"name": k.name, "kind": k.kind, "bytes_read": read, "bytes_written": written,
                        "flops": flops})
    return {"launches": len(kernels), "bytes": sum(k["bytes_read"] + k["bytes_written"] for k in kernels),
            "flops": sum(k["flops"] for k in kernels), "kernels": kernels}


def unfused_stats(graph, sizes: dict) -> dict:
    """One kernel per computing op: it reads every operand (through views) and writes its result."""
    launches = bytes_moved = flops = 0
    for node in graph.nodes:
        if node.opdef.kind in ("source", "view"):
            continue
        launches += 1
        operands = {}  # base buffer -> elements read through views (a slice reads its window)
        for i in node.inputs:
            if not (i.op == "constant" and i.shape == ()):
                base, elements = _base_and_window(i, sizes)
                operands[base] = max(operands.get(base, 0), elements)
        bytes_moved += _bytes(node, sizes) + sum(e * max(1, b.dtype.bits // 8)
                                                 for b, e in operands.items() if b.op != "iota")
        flops += node_flops(node, sizes)
    return {"launches": launches, "bytes": bytes_moved, "flops": flops}
