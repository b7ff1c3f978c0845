"""Combo kernels: kernels that do not depend on each other, run by one launch.

A combo kernel's one-dimensional grid is the concatenation of its parts' grids. Program
`pid` belongs to the first part whose range holds it, and runs that part's body with its
own program ids recovered from `pid` (axis 0 fastest). Every part keeps the block sizes
its config family picks; they become the combo's constexprs under a `p<i>_` prefix, as do
its int arguments and local names, so the parts' bodies cannot collide. Buffers and size
arguments are shared: a buffer two parts read is one argument.

The parts are written by their usual templates; this module only rewrites their source
(with `ast`), so every template runs inside a combo unchanged. `ast` drops comments, so
each statement's comment (the IR node it computes, kgen.kernels.writer) is put back.
"""
from __future__ import annotations

import ast
import io
import textwrap
import tokenize

import sympy

from kgen.ir import shapes
from kgen.kernels.families import Family, register
from kgen.kernels.writer import PARAM_ORDER, KernelSource, Param

# Names a generated kernel body uses without defining them.
_GLOBALS = {"tl", "triton", "range", "min", "max", "float", "int"}


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict, program_ids: list):
        self.names = names
        self.program_ids = program_ids

    def visit_Name(self, node):
        if node.id in self.names:
            return ast.copy_location(ast.Name(self.names[node.id], node.ctx), node)
        return node

    def visit_Call(self, node):
        # tl.program_id(a) -> the part's own program id along axis a
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "program_id"
                and isinstance(func.value, ast.Name) and func.value.id == "tl"):
            axis = node.args[0].value
            return ast.copy_location(ast.Name(self.program_ids[axis], ast.Load()), node)
        self.generic_visit(node)
        return node


def _body(part: KernelSource) -> tuple:
    """The part's function (its docstring taken off) and the docstring's lines."""
    fn = ast.parse(textwrap.dedent(part.text)).body[0]
    doc = ast.get_docstring(fn, clean=False) or ""
    fn.body = fn.body[1:] if doc else fn.body
    return fn, [line.strip() for line in doc.splitlines()]


def _comments(source: str) -> dict:
    """Line number -> the comment on that line of `source`."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def _statements(tree) -> list:
    return [n for n in ast.walk(tree) if isinstance(n, ast.stmt)]


def _unparse(stmt: ast.stmt, comments: dict) -> list:
    """The lines of `stmt`, each statement in it still ending with the comment its first
    line had (`comments`, by the line numbers `stmt` was parsed at)."""
    lines = ast.unparse(stmt).splitlines()
    printed = _statements(ast.parse("\n".join(lines)))  # the same statements, in the same walk order
    for old, new in zip(_statements(stmt), printed):
        if old.lineno in comments:
            lines[new.lineno - 1] += "  " + comments[old.lineno]
    return lines


def _local_names(fn: ast.FunctionDef) -> set:
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} - _GLOBALS


def _programs(count: str, block: str) -> str:
    return f"tl.cdiv({count}, {block})" if block else count


# A combo's config is its parts' (kgen.kernels.launch.default_config joins them) and it is
# tuned through its parts, so it has no default or space of its own; its registers are a
# middling guess for the cost model.
COMBO = register(Family("combo", resources=lambda config, work: (64, 0)))


def combine(name: str, parts: list) -> KernelSource:
    """One KernelSource running every kernel of `parts` (independent of each other)."""
    params, by_key = [], {}

    def shared_param(key, make):
        if key not in by_key:
            by_key[key] = make()
            params.append(by_key[key])
        return by_key[key].name

    lines, docs, total, dims = ["pid = tl.program_id(0)", "start = 0"], [], 0, {}
    for i, part in enumerate(parts):
        prefix = f"p{i}_"
        rename = {}
        for p in part.params:
            if p.kind in ("in", "out"):
                count = sum(q.kind == p.kind for q in params)
                rename[p.name] = shared_param((p.kind, p.node), lambda: Param(f"{p.kind}{count}", p.kind, p.node))
            elif p.kind == "int" and p.name.startswith("s_"):  # a size: the same in every part
                rename[p.name] = shared_param(("int", p.name), lambda: Param(p.name, "int", expr=p.expr))
            elif p.kind == "scratch":
                rename[p.name] = shared_param((p.kind, prefix + p.name), lambda: Param(
                    prefix + p.name, p.kind, dtype=p.dtype, numel=p.numel, per=p.per and prefix + p.per,
                    zeroed=p.zeroed))
            else:
                rename[p.name] = shared_param((p.kind, prefix + p.name),
                                              lambda: Param(prefix + p.name, p.kind, expr=p.expr))
        fn, doc = _body(part)
        comments = _comments(textwrap.dedent(part.text))
        docs += [""] + [f"part {i}: {line}" if j == 0 else line for j, line in enumerate(doc) if line]
        for local in _local_names(fn) - set(rename):
            rename[local] = prefix + local

        # The part's programs: its grid axes, flattened with axis 0 fastest.
        counts, programs = [], sympy.Integer(1)
        constexprs = {p.name for p in part.params if p.kind == "constexpr"}
        for axis, (extent, block) in enumerate(part.grid):
            if str(extent) in constexprs:  # an axis of as many programs as a constexpr says (split-K's)
                counts.append(rename[str(extent)])
                programs *= shapes.size_symbol(rename[str(extent)])
                continue
            count = shared_param(("int", f"{prefix}grid{axis}"),
                                 lambda: Param(f"{prefix}grid{axis}", "int", expr=sympy.sympify(extent)))
            block_name = rename[block] if block else None
            counts.append(_programs(count, block_name))
            programs *= sympy.ceiling(sympy.sympify(extent) / shapes.size_symbol(block_name)) if block \
                else sympy.sympify(extent)
        total += programs
        ids = [f"{prefix}pid{a}" for a in range(len(part.grid))]
        lines.append(f"# part {i}: {part.name}")
        lines.append(f"{prefix}programs = " + " * ".join(counts))
        lines.append(f"if (pid >= start) & (pid < start + {prefix}programs):")
        lines.append(f"    {prefix}q = pid - start")
        stride = ""
        for a, c in enumerate(counts):
            here = f"{prefix}q{stride}"
            lines.append(f"    {ids[a]} = " + (f"({here}) % ({c})" if a < len(counts) - 1 else here))
            stride += f" // ({c})"
        new_body = [_Rename(rename, ids).visit(stmt) for stmt in fn.body]
        lines += ["    " + line for stmt in new_body for line in _unparse(stmt, comments)]
        lines.append(f"start += {prefix}programs")
        dims.update({prefix + k: v for k, v in part.dims.items()})

    params.sort(key=lambda p: PARAM_ORDER[p.kind])
    args = ", ".join(p.name + (": tl.constexpr" if p.kind == "constexpr" else "") for p in params)
    summary = f"kgen {name}: {len(parts)} independent kernels in one launch."
    doc = ['"""' + summary] + docs + ['"""']
    text = "\n".join(["@triton.jit", f"def {name}({args}):"]
                      + ["    " + line if line else "" for line in doc + lines]) + "\n"
    return KernelSource(
        name, "combo", text, params, [(total, None)],
        tuple(r for p in parts for r in p.roots), tuple(dict.fromkeys(r for p in parts for r in p.reads)),
        tuple(n for p in parts for n in p.nodes), COMBO.name, dims, parts=tuple(parts))


def flatten(kernels) -> list:
    """Kernels with every combo replaced by its parts, in launch order."""
    return [p for k in kernels for p in (k.parts or (k,))]
