"""Integer size expressions as an artifact stores them, and a small safe evaluator.

A kernel's grid extents and int arguments are sympy expressions of the sizes (`676*N`) and,
for combo kernels, of block sizes (`ceiling(676*N/p0_BLOCK_M)`). The manifest stores
them as sympy prints them; loading parses that text with `ast` and evaluates it exactly
(fractions) with only +, -, *, /, //, %, integer powers, and the functions sympy prints
for integer rounding, so loading needs no sympy and runs no arbitrary code. The writer
checks each stored expression against sympy's value before trusting it."""
from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction

from kgen.errors import KgenError


def _floor_div(a, b):
    return math.floor(Fraction(a) / Fraction(b))


FUNCTIONS = {
    "floor": (1, math.floor),
    "ceiling": (1, math.ceil),
    "Mod": (2, lambda a, b: a - b * math.floor(Fraction(a) / Fraction(b))),
    "Max": (None, max),
    "Min": (None, min),
    "FloorDiv": (2, _floor_div),  # kgen.ir.indexing's integer division
    "ModularIndexing": (3, lambda a, b, c: _floor_div(a, b) % c),
}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: lambda a, b: Fraction(a) / Fraction(b), ast.FloorDiv: _floor_div,
           ast.Mod: lambda a, b: a - b * _floor_div(a, b)}


class SizeExpr:
    """A parsed integer expression of named values (sizes, block sizes)."""

    def __init__(self, text: str, where: str = "expression"):
        self.text = text
        self.where = where
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError as e:
            raise KgenError(f"{where}: cannot parse {text!r} as a size expression ({e.msg})") from None
        self._check(tree)
        self.tree = tree
        self.names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name)) - set(FUNCTIONS)

    def _check(self, node) -> None:
        ok = False
        if isinstance(node, ast.Constant):
            ok = isinstance(node.value, int) and not isinstance(node.value, bool)
        elif isinstance(node, ast.Name):
            ok = node.id not in FUNCTIONS
        elif isinstance(node, ast.UnaryOp):
            ok = isinstance(node.op, (ast.USub, ast.UAdd))
        elif isinstance(node, ast.BinOp):
            ok = type(node.op) in _BINARY or (isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant)
                                             and isinstance(node.right.value, int) and 0 <= node.right.value <= 64)
        elif isinstance(node, ast.Call):
            ok = (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
                  and FUNCTIONS[node.func.id][0] in (None, len(node.args)))
            for arg in node.args:
                self._check(arg)
            if ok:
                return
        if not ok:
            raise KgenError(f"{self.where}: {ast.unparse(node)!r} is not allowed in a size expression "
                            f"(in {self.text!r})")
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.operator, ast.unaryop, ast.expr_context)):
                self._check(child)

    def evaluate(self, values: dict) -> int:
        """The expression's int value with names bound by `values`."""
        missing = sorted(self.names - set(values))
        if missing:
            raise KgenError(f"{self.where}: {self.text!r} needs {', '.join(missing)}, which is not given")
        result = self._eval(self.tree, values)
        if Fraction(result).denominator != 1:
            raise KgenError(f"{self.where}: {self.text!r} is {result} at {values}, not an integer")
        return int(result)

    def _eval(self, node, values):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, values)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, values), self._eval(node.right, values)
            if isinstance(node.op, ast.Pow):
                return Fraction(left) ** right
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
                raise KgenError(f"{self.where}: {self.text!r} divides by zero at {values}")
            return _BINARY[type(node.op)](left, right)
        args = [self._eval(a, values) for a in node.args]
        return FUNCTIONS[node.func.id][1](*args)

    def __repr__(self):
        return f"SizeExpr({self.text!r})"
