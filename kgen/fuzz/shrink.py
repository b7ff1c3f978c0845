"""Shrinking a failing program to a small one that fails the same way.

Greedy: from the current program, try simpler candidates in order (one call; no gradients;
fewer updates and outputs; N made a plain size; a step bypassed or cut off into a new input;
inputs' dims reduced to 1; a step's attributes made simpler), keep the first one that is
still legal (kgen.fuzz.program.analyze) and still fails (`fails(candidate)`, which runs it),
and start over from it, until no candidate fails or the evaluation budget is spent.
"""
from __future__ import annotations

import re
import time

import sympy

from kgen.fuzz.program import FLOAT, N, Illegal, Program, analyze, dim_json, prune, shape_of

_SYMBOLIC = re.compile(r"^[\dN\s*+\-()]*N[\dN\s*+\-()]*$")


def _replace_uses(program: Program, old: str, new: str) -> Program:
    p = program.copy()
    for step in p.steps:
        step["in"] = [new if n == old else n for n in step["in"]]
    p.outputs = list(dict.fromkeys(new if n == old else n for n in p.outputs))
    return p


def _concrete(value, n):
    """`value` (a step attribute or shape) with N replaced by n."""
    if isinstance(value, str) and _SYMBOLIC.match(value):
        return int(sympy.sympify(value, locals={"N": N}).subs(N, n))
    if isinstance(value, list):
        return [_concrete(v, n) for v in value]
    return value


def _simpler(value) -> list:
    """Simpler versions of one attribute value."""
    if isinstance(value, bool):
        return [False] if value else []
    if isinstance(value, int):
        return [v for v in (0, 1) if v != value and abs(v) < abs(value)] + ([value - 1] if value > 2 else [])
    if isinstance(value, float):
        return [v for v in (0.0, 1.0, 0.5) if v != value]
    if isinstance(value, list) and value:
        out = [value[:1]] if len(value) > 1 and not isinstance(value[0], list) else []
        for k, v in enumerate(value):
            out += [value[:k] + [s] + value[k + 1:] for s in _simpler(v)]
        return out
    if isinstance(value, str):
        return {"op": ["fn"], "method": ["fn"], "same": [0], "valid": [0], "NHWC": ["NCHW"]}.get(value, [])
    return []


def _new_input_kind(info) -> str:
    if info.dtype == FLOAT:
        return "prob" if info.lo >= 0.05 and info.hi <= 0.95 else "pos" if info.lo > 0 else "float"
    if info.classes is not None:
        return "label"
    return "bool" if info.dtype == "bool" else "int"


def candidates(program: Program):
    """Simpler programs than `program`, roughly most reducing first."""
    p = program
    if p.calls > 1:
        yield Program.from_dict({**p.to_dict(), "calls": 1})
    if len(p.sizes) > 1:
        yield Program.from_dict({**p.to_dict(), "sizes": p.sizes[::-1], "calls": 1})
    if p.grads:
        yield Program.from_dict({**p.to_dict(), "grads": False, "updates": []})
    if p.updates:
        yield Program.from_dict({**p.to_dict(), "updates": []})
        for k in range(len(p.updates)):
            yield Program.from_dict({**p.to_dict(), "updates": p.updates[:k] + p.updates[k + 1:]})
    if len(p.outputs) > 1:
        for o in p.outputs:
            yield Program.from_dict({**p.to_dict(), "outputs": [o]})
        for k in range(len(p.outputs)):
            yield Program.from_dict({**p.to_dict(), "outputs": p.outputs[:k] + p.outputs[k + 1:]})
    if p.sizes:
        for n in dict.fromkeys(p.sizes):
            d = p.to_dict()
            d["inputs"] = [{**i, "shape": _concrete(i["shape"], n)} for i in d["inputs"]]
            d["steps"] = [{k: (_concrete(v, n) if k not in ("name", "op", "in") else v) for k, v in s.items()}
                          for s in d["steps"]]
            d["sizes"] = []
            yield Program.from_dict(d)
    try:
        infos = analyze(p)
    except Illegal:
        return
    for step in reversed(p.steps):  # bypass a step: its users read one of its operands instead
        info = infos[step["name"]]
        for i in dict.fromkeys(step["in"]):
            src = infos[i]
            if src.dtype == info.dtype and src.shape == info.shape:
                yield _replace_uses(p, step["name"], i)
        if all(isinstance(d, int) or d == N for d in info.shape):
            q = _replace_uses(p, step["name"], f"c{step['name']}")  # cut: a new input in its place
            spec = {"name": f"c{step['name']}", "shape": [dim_json(d) for d in info.shape], "dtype": info.dtype,
                    "kind": _new_input_kind(info)}
            if info.classes is not None:
                spec["classes"] = info.classes
            q.inputs.append(spec)
            yield q
    for step in p.steps:  # a join with one operand fewer
        if step["op"] in ("concatenate", "stack") and len(step["in"]) > 1:
            for k in range(len(step["in"])):
                q = p.copy()
                s = next(t for t in q.steps if t["name"] == step["name"])
                s["in"] = s["in"][:k] + s["in"][k + 1:]
                yield q
    for group in ("inputs", "shared"):  # smaller dims
        for k, spec in enumerate(getattr(p, group)):
            for axis, d in enumerate(spec["shape"]):
                if isinstance(d, int) and d > 1:
                    for smaller in (1, d - 1) if d > 2 else (1,):
                        q = p.copy()
                        getattr(q, group)[k]["shape"][axis] = smaller
                        yield q
    if p.sizes and max(p.sizes) > 1:
        yield Program.from_dict({**p.to_dict(), "sizes": [min(s, 1) if s else 0 for s in p.sizes]})
    for step in p.steps:  # simpler attributes
        for key, value in step.items():
            if key in ("name", "op", "in", "seed"):
                continue
            for simpler in _simpler(value):
                q = p.copy()
                next(t for t in q.steps if t["name"] == step["name"])[key] = simpler
                yield q


def shrink(program: Program, fails, budget: int = 150, seconds: float = 600.0, log=None) -> Program:
    """The smallest program found that `fails` (a predicate that runs it) as `program` does."""
    best = program
    seen = {best.to_json()}
    spent, deadline = 0, time.monotonic() + seconds
    improved = True
    while improved and spent < budget and time.monotonic() < deadline:
        improved = False
        for candidate in candidates(best):
            candidate = prune(candidate)
            key = candidate.to_json()
            if key in seen:
                continue
            seen.add(key)
            try:
                analyze(candidate)
            except Illegal:
                continue
            spent += 1
            if fails(candidate):
                best, improved = candidate, True
                if log:
                    log(f"shrunk to {len(best.steps)} steps, inputs "
                        f"{[tuple(shape_of(i['shape'])) for i in best.inputs + best.shared]}")
                break
            if spent >= budget or time.monotonic() >= deadline:
                break
    return best

