"""Graph: a program as a value, (inputs, outputs) over immutable nodes.

Its text form has one line per node, jaxpr-like, and it is what dumps and errors show (a
loop's body is printed nested under the first node holding it):

    graph(x: f32[N,3], w: f32[3]) {
      %0: f32[N,3] = mul x w
      %1: f32[N] = sum[axes=(1,), keepdims=False] %0
      return %1
    }
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from kgen.errors import KgenError
from kgen.ir.node import Node


def topological_order(outputs: Iterable[Node]) -> list:
    """Every node the outputs depend on, each after its inputs (iterative: graphs are deep)."""
    order, done, stack = [], set(), [(n, False) for n in reversed(list(outputs))]
    while stack:
        node, expanded = stack.pop()
        if node in done:
            continue
        if expanded:
            done.add(node)
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((i, False) for i in reversed(node.inputs) if i not in done)
    return order


class Graph:
    __slots__ = ("inputs", "outputs", "nodes", "_names")

    def __init__(self, inputs: Sequence[Node], outputs: Sequence[Node]):
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        for i in self.inputs:
            if i.op != "input":
                raise KgenError(f"graph inputs must be input nodes, got {i!r}")
        reached = topological_order(self.outputs)
        reached_set = set(reached)
        self.nodes = tuple([i for i in self.inputs if i not in reached_set] + reached)
        self._names = None

    def users(self) -> dict:
        out = {n: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n)
        return out

    # --- text ----------------------------------------------------------------------------
    def names(self) -> dict:
        if self._names is None:
            names, k = {}, 0
            for n in self.nodes:
                if n.op == "input":
                    names[n] = n.name
                else:
                    names[n] = f"%{k}"
                    k += 1
            self._names = names
        return self._names

    def line(self, node: Node) -> str:
        names = self.names()
        return format_node(node, names)

    def __str__(self):
        names = self.names()
        head = ", ".join(f"{names[i]}: {i.type_str()}" for i in self.inputs)
        body, shown = [], {}
        for n in self.nodes:
            if n.op == "input":
                continue
            body.append(f"  {self.line(n)}")
            loop = n.attrs.get("body") if isinstance(n.attrs.get("body"), Graph) else None
            if loop is not None and id(loop) not in shown:  # a loop's body, once, nested under it
                shown[id(loop)] = names[n]
                body.extend("    " + line for line in str(loop).splitlines())
        body.append("  return " + ", ".join(names[o] for o in self.outputs))
        return f"graph({head}) {{\n" + "\n".join(body) + "\n}"

    def __repr__(self):
        return f"<kgen Graph: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"


def format_attr(value) -> str:
    if isinstance(value, Graph):  # a loop's body: printed nested under the first node holding it
        return f"<body of {len(value.nodes)} nodes>"
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value).replace(" ", "") if not isinstance(value, (str, bool)) else str(value)


def format_node(node: Node, names: dict = None) -> str:
    """One line: `%3: f32[N,10] = add %1 %2`; unnamed inputs print as their op."""
    names = names or {}
    me = names.get(node, node.name or f"<{node.op}>")
    if node.op == "input":
        return f"{me}: {node.type_str()} = input"
    if node.op == "constant":
        rhs = f"constant {format_attr(node.attrs['value'])}"
    else:
        attrs = {k: v for k, v in node.attrs.items()}
        shown = ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items())
        args = " ".join(names.get(i, i.name or f"<{i.op}>") for i in node.inputs)
        rhs = f"{node.op}[{shown}] {args}" if shown else f"{node.op} {args}"
    return f"{me}: {node.type_str()} = {rhs.rstrip()}"
