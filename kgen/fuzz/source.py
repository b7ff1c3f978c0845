"""A Program as Python source: the kgen function and its torch oracle, side by side.

The runner executes this source, and a reproducer is this source with the inputs written in,
so what runs is exactly what a person reads:

    def make_function():                 # plain kgen: inputs, shared values, the steps, a loss
        ...                              # sum(output * cotangent), kgen.grad, the updates
        return kgen.function(...)
    def torch_oracle(N, x0, w0, ...):    # the same steps in torch float64, torch.autograd
        ...
"""
from __future__ import annotations

import numpy as np

from kgen.fuzz.catalog import OPS, code_shape
from kgen.fuzz.program import FLOAT, Program, shape_of

HEADER = '''import numpy as np
import torch
import torch.nn.functional as F

import kgen
from kgen import ops
from kgen.fuzz import torch_ops as T
'''


def array_code(a: np.ndarray) -> str:
    """A NumPy literal for `a` (float32 values are written exactly)."""
    dtype = {"float32": "np.float32", "int32": "np.int32", "int64": "np.int64", "bool": "np.bool_"}[str(a.dtype)]
    values = a.reshape(-1).tolist()
    shape = tuple(a.shape)
    if a.ndim == 1 and a.size:
        return f"np.array({values!r}, {dtype})"
    return f"np.array({values!r}, {dtype}).reshape({shape!r})"


def result_names(program: Program, infos: dict) -> tuple:
    """(float outputs with cotangents, the values differentiated, result names)."""
    if program.grads:
        cot = [o for o in program.outputs if infos[o].dtype == FLOAT]
        wrt = [v["name"] for v in program.inputs + program.shared if v["dtype"] == FLOAT] if cot else []
    else:
        cot, wrt = [], []
    results = list(program.outputs) + (["loss"] + [f"grad_{w}" for w in wrt] if cot else [])
    return cot, wrt, results


def module_source(program: Program, infos: dict, state=None, calls=None, title: str = "") -> str:
    """The program's module. `state` (shared name -> initial array) and `calls` (one dict per
    call: "N" and an array per input) are written in when given (a reproducer)."""
    cot, wrt, results = result_names(program, infos)
    updates = [(w, lr) for w, lr in program.updates] if cot else []
    inputs = [v["name"] for v in program.inputs] + [f"cot_{o}" for o in cot]
    shared = [v["name"] for v in program.shared]
    lines = [f'"""kgen fuzz program, seed {program.seed}{": " + title if title else ""}."""', HEADER]
    if program.sizes:
        lines.append('N = kgen.ir.shapes.size_symbol("N")  # the symbolic size; calls bind it\n')
    if state is not None:
        lines.append("STATE = {" + ", ".join(f"{k!r}: {array_code(v)}" for k, v in state.items()) + "}")
    lines.append(f"INPUTS = {inputs!r}")
    lines.append(f"SHARED = {shared!r}")
    lines.append(f"RESULTS = {results!r}")
    lines.append(f"UPDATED = {[w for w, _ in updates]!r}")
    lines.append(f"SIZES = {program.sizes!r}\n")

    # --- kgen
    body = []
    for v in program.inputs:
        body.append(f"{v['name']} = kgen.tensor({v['name']!r}, {code_shape(shape_of(v['shape']))}, {v['dtype']!r})")
    for v in program.shared:
        body.append(f"{v['name']} = kgen.shared(STATE[{v['name']!r}], name={v['name']!r})")
    for step in program.steps:
        args = step["in"]
        body.append(f"{step['name']} = {OPS[step['op']].kgen(step, args, [infos[a] for a in args])}")
    if cot:
        for o in cot:
            body.append(f"cot_{o} = kgen.tensor('cot_{o}', {o}.shape)")
        body.append("loss = " + " + ".join(f"ops.sum({o} * cot_{o})" for o in cot))
        if wrt:
            body.append(f"{', '.join('grad_' + w for w in wrt)}, = kgen.grad(loss, [{', '.join(wrt)}])")
    upd = ", ".join(f"({w}, {w} - {lr!r} * grad_{w})" for w, lr in updates)
    body.append(f"return kgen.function([{', '.join(inputs)}], [{', '.join(results)}], updates=[{upd}])")
    lines.append("def make_function():")
    lines.append('    """The program, a loss of its outputs, its gradients and updates: one kgen.function."""')
    lines += ["    " + b for b in body]
    lines.append("")

    # --- torch
    body = []
    for step in program.steps:
        args = step["in"]
        code = OPS[step["op"]].torch(step, args, [infos[a] for a in args])
        info = infos[step["name"]]
        if info.dtype != FLOAT:  # torch's integer promotion differs (sum of int32 is int64)
            code = f"({code}).to(torch.{'bool' if info.dtype == 'bool' else info.dtype})"
        body.append(f"{step['name']} = {code}")
    if cot:
        body.append("loss = " + " + ".join(f"torch.sum({o} * cot_{o})" for o in cot))
        if wrt:
            body.append(f"{', '.join('grad_' + w for w in wrt)}, = T.grad(loss, [{', '.join(wrt)}])")
    news = ", ".join(f"{w!r}: {w} - {lr!r} * grad_{w}" for w, lr in updates)
    body.append(f"return [{', '.join(results)}], {{{news}}}")
    params = ", ".join(["N"] + [v["name"] for v in program.inputs] + shared + [f"cot_{o}" for o in cot])
    lines.append(f"def torch_oracle({params}):")
    lines.append('    """The same computation in torch, float64: the results and the updated shared values."""')
    lines += ["    " + b for b in body]
    lines.append("")
    steps = body[:len(program.steps)]
    params = ", ".join(["N"] + [v["name"] for v in program.inputs] + shared)
    lines.append(f"def torch_forward({params}):")
    lines.append('    """The steps alone, as a torch model\'s forward (`--through torch`: kgen.from_torch builds it)."""')
    lines += ["    " + b for b in steps] + [f"    return [{', '.join(program.outputs)}]", ""]

    if calls is not None:
        lines.append("CALLS = [")
        for call in calls:
            items = [f'"N": {call["N"]!r}'] + [f"{k!r}: {array_code(v)}" for k, v in call.items() if k != "N"]
            lines.append("    {" + ",\n     ".join(items) + "},")
        lines.append("]\n")
        lines.append("if __name__ == '__main__':")
        lines.append("    import sys")
        lines.append("    from kgen.fuzz.harness import check_module")
        lines.append("    sys.exit(check_module(sys.modules[__name__]))")
    return "\n".join(lines) + "\n"
