"""Calling a fuzz program's module and checking every result three ways.

Each call runs the kgen function (outputs, loss, gradients, then the updates applied to the
shared values in place), kgen's reference interpreter on the same graph (float64, and in
float32 to measure how much float32 rounding the program amplifies), and the torch oracle
(float64, torch.autograd) on the shared values as kgen left them. Three comparisons follow:

- kgen~reference: the kernels against the spec. An element may differ by
  TOLERANCE[float32] * (max(|want|, 1) + 0.1 * max|want over the tensor|) plus 16 times
  what float32 evaluation of the same graph (the reference, "native") differs by there;
- reference~torch: the spec (the op table's references and VJPs) against torch, both in
  float64, to 1e-6 of the same scale;
- kgen~torch: end to end, with kgen~reference's tolerance.

NaN must meet NaN and an infinity the same infinity; integers and bools must be equal.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

import kgen
from kgen.ir import dtypes
from kgen.tolerance import TOLERANCE

KGEN_RTOL = TOLERANCE[dtypes.float32]
SPEC_RTOL = 1e-6
NATIVE_SLACK = 16.0


def to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    return np.asarray(t)


def error(got, want, rtol: float, native=None) -> float:
    """The worst element's error over its allowance (a mismatch when > 1)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    if not got.size:
        return 0.0
    if want.dtype.kind in "biu" or got.dtype.kind in "biu":
        return float("inf") if np.any(got.astype(np.float64) != want.astype(np.float64)) else 0.0
    got, want = got.astype(np.float64), want.astype(np.float64)
    nan = np.isnan(want)
    if np.any(np.isnan(got) != nan):
        return float("inf")
    inf = np.isinf(want) | np.isinf(got)
    if np.any(got[inf & ~nan] != want[inf & ~nan]):
        return float("inf")
    ok = ~nan & ~inf
    if not ok.any():
        return 0.0
    g, w = got[ok], want[ok]
    scale = float(np.max(np.abs(w)))
    allowed = rtol * (np.maximum(np.abs(w), 1.0) + 0.1 * scale)
    if native is not None:
        n = np.asarray(native, np.float64)
        if n.shape == want.shape:
            n = n[ok]
            allowed = allowed + NATIVE_SLACK * np.where(np.isfinite(n), np.abs(n - w), np.inf)
    return float(np.max(np.abs(g - w) / allowed))


def _torch_value(array, requires_grad: bool) -> torch.Tensor:
    t = torch.from_numpy(np.array(array))
    if t.dtype.is_floating_point:
        t = t.to(torch.float64)
        t.requires_grad_(requires_grad)
    return t


class Stage(Exception):
    """An exception raised at one stage of a run ("build", "call", "reference", "oracle")."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage, self.error = stage, error


def torch_results(get, call: dict, values: dict, names) -> list:
    """The torch oracle's results for one call, then the shared values `names` it updates,
    as NumPy (float64); `values` holds the inputs and the shared values before the call."""
    params = list(inspect.signature(get("torch_oracle")).parameters)[1:]
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        leaves = [_torch_value(values[p] if p in values else get("STATE")[p], not p.startswith("cot_"))
                  for p in params]
        want, news = get("torch_oracle")(call["N"], *leaves)
        return [to_numpy(w) for w in want] + [to_numpy(news[n]) for n in names]
    except Exception as e:  # noqa: BLE001
        raise Stage("oracle", e) from e
    finally:
        torch.set_default_dtype(default)


def run_calls(ns, calls, worst=None) -> list:
    """Run the module `ns` (a module or a dict-like namespace with make_function,
    torch_oracle, INPUTS, RESULTS, UPDATED) on `calls`; return the mismatches (dicts).
    Exceptions come out as Stage(stage, error). `worst` (a dict), if given, gets each
    comparison's largest error over its tolerance."""
    get = ns.get if isinstance(ns, dict) else lambda k: getattr(ns, k)

    try:
        fn = get("make_function")()
    except Exception as e:  # noqa: BLE001  (classified by the caller)
        raise Stage("build", e) from e
    updated = {var.name: var for var, _ in fn.updates}
    results, names = get("RESULTS"), list(get("UPDATED"))
    mismatches = []
    for c, call in enumerate(calls):
        before = {s.name: s.get_value() for s in fn.shared}
        try:
            got = fn(*[call[name] for name in get("INPUTS")])
            got = [to_numpy(g) for g in (got if isinstance(got, list) else [got])]
            after = {name: updated[name].get_value() for name in names}
        except Exception as e:  # noqa: BLE001
            raise Stage("call", e) from e
        values = {**{k: v for k, v in call.items() if k != "N"}, **before}
        try:
            feed = {i.name: values[i.name] for i in fn.graph.inputs}
            ref = kgen.reference.run(fn.graph, feed)
            native = kgen.reference.run(fn.graph, feed, "native")
        except Exception as e:  # noqa: BLE001
            raise Stage("reference", e) from e
        want = torch_results(get, call, values, names)
        mine = got + [after[n] for n in names]
        labels = list(results) + [f"state:{n}" for n in names]
        for k, label in enumerate(labels):
            checks = (("kgen~reference", mine[k], ref[k], KGEN_RTOL, native[k]),
                      ("reference~torch", ref[k], want[k], SPEC_RTOL, None),
                      ("kgen~torch", mine[k], want[k], KGEN_RTOL, native[k]))
            for pair, a, b, rtol, nat in checks:
                e = error(a, b, rtol, nat)
                if worst is not None:
                    worst[pair] = max(worst.get(pair, 0.0), e)
                if e > 1.0:
                    mismatches.append({"call": c, "what": label, "pair": pair, "error": e,
                                       "got": _show(a), "want": _show(b)})
    return mismatches


def _show(a) -> str:
    a = np.asarray(a)
    text = np.array2string(a.reshape(-1)[:8], precision=6, separator=", ")
    return f"{a.dtype}{list(a.shape)} {text}{' ...' if a.size > 8 else ''}"


def check_module(module) -> int:
    """A reproducer's main: run its CALLS and print what disagrees (exit status 1), or ok."""
    try:
        mismatches = run_calls(module, module.CALLS)
    except Stage as failure:  # show the error itself, with its traceback
        print(f"FAILED at {failure.stage}")
        raise failure.error
    for m in mismatches:
        print(f"MISMATCH call {m['call']} {m['what']} ({m['pair']}): error {m['error']:.3g} x tolerance\n"
              f"    got  {m['got']}\n    want {m['want']}")
    if not mismatches:
        print("ok: kgen, its reference and torch agree on every result")
    return 1 if mismatches else 0
