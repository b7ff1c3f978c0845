"""Running one fuzz program in this process and classifying what happened.

    ok        every result agrees (kgen, its reference, torch), in every call
    mismatch  some result disagrees (kgen~reference: the kernels; reference~torch: the spec)
    refusal   kgen raised a KgenError for the legal program (building, compiling, calling it,
              or in its reference interpreter)
    crash     any other exception from kgen (or, in kgen/fuzz/pool.py, a dead or hung process)
    invalid   the fuzzer's own fault: an illegal program or an oracle that failed

Each outcome has a `signature` (status, stage, exception type, the message with its numbers
and value names blotted out, the kgen function it came from) that groups failures of one
cause; the shrinker keeps a failure's signature while it shrinks the program.
"""
from __future__ import annotations

import re
import time
import traceback

import numpy as np

from kgen.errors import KgenError
from kgen.fuzz.frontend import run_calls_through_torch
from kgen.fuzz.harness import Stage, run_calls
from kgen.fuzz.program import FLOAT, Illegal, N, Program, analyze, shape_of
from kgen.fuzz.source import module_source, result_names

STATUSES = ("ok", "mismatch", "refusal", "crash", "invalid")


# --- inputs ------------------------------------------------------------------------------------
def concrete(shape, n) -> tuple:
    return tuple(d if isinstance(d, int) else int(d.subs(N, n)) for d in shape)


def make_value(rng, kind: str, dtype: str, shape, classes=None) -> np.ndarray:
    """Values of an input kind (kgen/fuzz/program.py, KINDS); never 0 for floats."""
    if kind == "label":
        return rng.integers(0, classes, size=shape).astype(dtype)
    if kind == "int":
        return (rng.integers(1, 6, size=shape) * rng.choice([-1, 1], size=shape)).astype(dtype)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "prob":
        return rng.uniform(0.05, 0.95, size=shape).astype(np.float32)
    values = rng.uniform(0.5, 2.0, size=shape)
    if kind == "float":
        values *= rng.choice([-1.0, 1.0], size=shape)
    return values.astype(np.float32)


def make_state(program: Program) -> dict:
    rng = np.random.default_rng([program.seed, 0])
    return {s["name"]: make_value(rng, s["kind"], s["dtype"], shape_of(s["shape"]), s.get("classes"))
            for s in program.shared}


def make_calls(program: Program, infos: dict) -> list:
    cot, _, _ = result_names(program, infos)
    calls = []
    for c in range(program.calls):
        n = program.sizes[c % len(program.sizes)] if program.sizes else None
        rng = np.random.default_rng([program.seed, c + 1])
        call = {"N": n}
        for spec in program.inputs:
            call[spec["name"]] = make_value(rng, spec["kind"], spec["dtype"], concrete(shape_of(spec["shape"]), n),
                                            spec.get("classes"))
        for o in cot:
            call[f"cot_{o}"] = make_value(rng, "float", FLOAT, concrete(infos[o].shape, n))
        calls.append(call)
    return calls


# --- classifying ------------------------------------------------------------------------------
_NAMES = re.compile(r"\b(?:cot_|grad_)?c?[xwv]\d+\b|%\d+|\b\d+\b")


def normalize(message: str) -> str:
    """The message's first line without value names, numbers and shapes."""
    first = (message.strip().splitlines() or [""])[0]
    return _NAMES.sub("#", re.sub(r"\[[^\[\]]*\]", "[]", first))[:120]


def origin(error: BaseException) -> str:
    """The innermost kgen (not kgen.fuzz) frame an exception passed through."""
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        path = frame.filename.replace("\\", "/")
        if "/kgen/" in path and "/kgen/fuzz/" not in path:
            where = f"{path.split('/kgen/')[-1]}:{frame.name}"
    return where


def failure(status: str, stage: str, error: BaseException) -> dict:
    if status is None:
        status = "refusal" if isinstance(error, KgenError) else "crash"
    message = f"{type(error).__name__}: {error}"
    signature = f"{status}:{stage}:{type(error).__name__}:{normalize(str(error))}"
    if status != "invalid":
        signature += f"@{origin(error)}"
    return {"status": status, "stage": stage, "error": message[:2000], "signature": signature,
            "traceback": "".join(traceback.format_exception(error))[-4000:]}


def mismatch_signature(mismatches: list) -> str:
    pairs = {m["pair"] for m in mismatches}
    pair = next(p for p in ("kgen~reference", "reference~torch", "kgen~torch") if p in pairs)
    first = next(m for m in mismatches if m["pair"] == pair)
    what = first["what"].split(":")[0].split("_")[0]
    kind = {"loss": "loss", "grad": "grad", "state": "state"}.get(what, "output")
    return f"mismatch:{pair}:{kind}"


def run_program(program: Program, through: str = "kgen") -> dict:
    """Run `program` here and now; an outcome dict (status, signature, details). `through`:
    "kgen" builds it with kgen's API; "torch" imports its torch twin with kgen.from_torch
    (kgen/fuzz/frontend.py)."""
    start = time.perf_counter()
    outcome = {"seed": program.seed, "ops": program.ops, "steps": len(program.steps),
               "symbolic": bool(program.sizes)}
    try:
        infos = analyze(program)
    except Illegal as e:
        outcome.update(failure("invalid", "analyze", e))
        return outcome
    try:
        state = make_state(program)
        calls = make_calls(program, infos)
        ns = {"__name__": "kgen_fuzz_program", "STATE": state}
        exec(compile(module_source(program, infos), f"<fuzz program {program.seed}>", "exec"), ns)
        worst = {}
        if through == "torch":
            mismatches = run_calls_through_torch(ns, calls, worst)
        else:
            mismatches = run_calls(ns, calls, worst)
        outcome["worst"] = {k: float(f"{v:.3g}") for k, v in worst.items()}
    except Stage as e:
        outcome.update(failure("invalid" if e.stage in ("oracle", "export") else None, e.stage, e.error))
    except Exception as e:  # noqa: BLE001  (the fuzzer's own code failed)
        outcome.update(failure("invalid", "fuzzer", e))
    else:
        if mismatches:
            outcome.update({"status": "mismatch", "stage": "compare", "signature": mismatch_signature(mismatches),
                            "error": "; ".join(f"call {m['call']} {m['what']} {m['pair']} x{m['error']:.3g}"
                                               for m in mismatches[:6]),
                            "mismatches": mismatches[:12]})
        else:
            outcome.update({"status": "ok", "signature": "ok"})
    outcome["seconds"] = round(time.perf_counter() - start, 3)
    return outcome


def same_failure(a: dict, b: dict) -> bool:
    """Whether two outcomes are the same failure (what the shrinker must keep)."""
    return a["status"] == b["status"] != "ok" and a["signature"] == b["signature"]
