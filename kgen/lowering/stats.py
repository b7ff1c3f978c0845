"""Static cost figures of a compiled program at concrete sizes: kernel launches, bytes read
and written (each kernel reads its input buffers once and writes its outputs once), and
flops (2*M*N*K per matmul, 1 per element per elementwise op, 1 per input element per
reduction); and the same figures for an unfused lowering with one kernel per op, where
every op reads its operands from memory and writes its result (views stay free)."""
from __future__ import annotations

from kgen.ir import shapes


def _elements(node, sizes) -> int:
    return shapes.evaluate(shapes.numel(node.shape), sizes)


def _bytes(node, sizes) -> int:
    return _elements(node, sizes) * max(1, node.dtype.bits // 8)


def node_flops(node, sizes) -> int:
    kind = node.opdef.kind
    if node.op == "matmul":
        return 2 * _elements(node, sizes) * shapes.evaluate(node.inputs[0].shape[-1], sizes)
    if kind == "elementwise" and node.op not in ("cast", "stop_gradient"):
        return _elements(node, sizes)
    if kind == "reduction":
        return _elements(node.inputs[0], sizes)
    if node.op.startswith("conv2d"):  # 2 flops per (output element of the forward conv, weight tap)
        weight = node if node.op == "conv2d_weight_grad" else node.inputs[1]
        conv_out = node if node.op == "conv2d" else node.inputs[0 if node.op == "conv2d_input_grad" else 1]
        taps = _elements(weight, sizes) // shapes.evaluate(weight.shape[0], sizes)
        return 2 * _elements(conv_out, sizes) * taps
    if "pool2d" in node.op:  # one compare or add per window element of each pooled output
        kh, kw = node.attrs["kernel_size"]
        pooled = node if node.op in ("max_pool2d", "avg_pool2d") else node.inputs[0]
        return _elements(pooled, sizes) * kh * kw
    return 0


def _base(node):
    while node.opdef.kind == "view":
        node = node.inputs[0]
    return node


def program_stats(program, sizes: dict) -> dict:
    kernels = []
    for k in program.kernels:
        read = sum(_bytes(n, sizes) for n in k.reads)
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
        operands = {_base(i) for i in node.inputs if not (i.op == "constant" and i.shape == ())}
        bytes_moved += _bytes(node, sizes) + sum(_bytes(i, sizes) for i in operands if i.op != "iota")
        flops += node_flops(node, sizes)
    return {"launches": launches, "bytes": bytes_moved, "flops": flops}
