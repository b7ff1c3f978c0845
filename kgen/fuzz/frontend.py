"""Fuzz programs through the torch frontend (`python -m kgen.fuzz --through torch`).

Each program's torch twin without its loss and gradients (`torch_forward` in the program's
module) becomes a torch module that `kgen.from_torch` imports at the call's sizes; kgen then
takes the program's loss of those outputs and its gradients with respect to the float
inputs and shared values (read as inputs here, and not updated), and each result is
compared with the torch oracle in float64 at the harness's kgen~torch tolerance. So what
this examines is the frontend: torch.export's core ATen, the ATen table's translation onto
kgen.ops, and the kernels of what comes out, on programs no test wrote.

A twin that torch.export cannot capture is the fuzzer's own limit (stage "export": invalid);
an ATen op the table has no entry for is a refusal, like any legal program kgen refuses.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

import kgen
from kgen import ops
from kgen.errors import CaptureError
from kgen.frontends.torch_module import from_torch
from kgen.fuzz.harness import KGEN_RTOL, Stage, _show, error, to_numpy, torch_results


class _Forward(torch.nn.Module):
    """A program's torch_forward at one size N, as a module torch.export can capture."""

    def __init__(self, forward, n):
        super().__init__()
        self.fn, self.n = forward, n

    def forward(self, *args):
        return self.fn(self.n, *args)


def _build(get, call: dict, values: dict):
    """The kgen function of the imported twin: inputs (the twin's, then one cotangent per
    output that has one) -> the program's results (outputs, loss, gradients)."""
    params = list(inspect.signature(get("torch_forward")).parameters)[1:]
    examples = [torch.from_numpy(np.array(values[p])) for p in params]
    if not examples:  # a program of constants alone: no model to import
        raise Stage("export", ValueError("the program has no inputs"))
    try:
        model = from_torch(_Forward(get("torch_forward"), call["N"]), *examples, dynamic_batch=False)
    except CaptureError as e:  # torch.export could not capture the twin: the fuzzer's limit, not kgen's
        raise Stage("export", e) from e
    except Exception as e:  # noqa: BLE001  (an untranslatable op: a refusal; classified by the caller)
        raise Stage("build", e) from e
    try:
        xs = [kgen.tensor(name, shape, dtype) for name, shape, dtype in model.inputs]
        outputs = model(*xs)
        results = get("RESULTS")
        names = results[:results.index("loss")] if "loss" in results else list(results)
        by_output = dict(zip(names, outputs))
        cot = [name[len("cot_"):] for name in get("INPUTS") if name.startswith("cot_")]
        cots = [kgen.tensor(f"cot_{o}", by_output[o].shape) for o in cot]
        extra = []
        if cot:
            loss = None
            for o, c in zip(cot, cots):
                term = ops.sum(by_output[o] * c)
                loss = term if loss is None else loss + term
            by_input = dict(zip(params, xs))
            wrt = [r[len("grad_"):] for r in results if r.startswith("grad_")]
            extra = [loss] + (list(kgen.grad(loss, [by_input[w] for w in wrt])) if wrt else [])
        fn = kgen.function(xs + cots, list(outputs) + extra)
    except Exception as e:  # noqa: BLE001  (classified by the caller)
        raise Stage("build", e) from e
    return fn, [values[p] for p in params] + [call[f"cot_{o}"] for o in cot]


def run_calls_through_torch(ns, calls, worst=None) -> list:
    """As kgen.fuzz.harness.run_calls, with the program imported from its torch twin: the
    mismatches (kgen~torch only: the imported graph has no reference of its own to compare
    against beyond kgen's, which run_calls already checks for kgen's own programs)."""
    get = ns.get if isinstance(ns, dict) else lambda k: getattr(ns, k)
    mismatches = []
    for c, call in enumerate(calls):
        values = {**get("STATE"), **{k: v for k, v in call.items() if k != "N"}}
        fn, arguments = _build(get, call, values)
        try:
            got = fn(*arguments)
            got = [to_numpy(g) for g in (got if isinstance(got, list) else [got])]
        except Exception as e:  # noqa: BLE001
            raise Stage("call", e) from e
        want = torch_results(get, call, values, [])
        for label, a, b in zip(get("RESULTS"), got, want):
            e = error(a, b, KGEN_RTOL)
            if worst is not None:
                worst["kgen~torch"] = max(worst.get("kgen~torch", 0.0), e)
            if e > 1.0:
                mismatches.append({"call": c, "what": label, "pair": "kgen~torch", "error": e,
                                   "got": _show(a), "want": _show(b)})
    return mismatches
