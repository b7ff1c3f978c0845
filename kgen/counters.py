"""Process-wide counts of the expensive work kgen does: tracing, lowering, tuning and
compiling. They are counts, not timers, so a test can prove that some step (loading an
artifact, say) did none of that work:

    before = counters.snapshot()
    step = kgen.load(path); step(x, y)
    assert counters.since(before) == {}

The places that do the work bump their counter: "lowerings" (kgen.compile),
"compiles" (one per kernel binary: kgen.kernels.aot and the autotuner's compile facts,
pool workers' included), "tunings" (the autotuner). "traces" is for building a
function's graph (kgen.function); nothing bumps it yet, so tests that must prove "no
tracing" also count IR node constructions. "triton_compiles" counts every
`triton.compile` call of this process (Triton's JIT included, cache hits too), once
`watch_triton()` has installed its listener (kgen.load does)."""
from __future__ import annotations

import importlib
import threading

NAMES = ("traces", "lowerings", "tunings", "compiles", "triton_compiles")

_counts = dict.fromkeys(NAMES, 0)
_lock = threading.Lock()
_watching = False


def bump(name: str, n: int = 1) -> None:
    """Count `n` more of `name` (one of NAMES)."""
    if name not in _counts:
        raise ValueError(f"unknown counter {name!r}: expected one of {', '.join(NAMES)}")
    with _lock:
        _counts[name] += n


def snapshot() -> dict:
    """Every counter's value now."""
    with _lock:
        return dict(_counts)


def since(before: dict) -> dict:
    """The counters that moved since `before` (a snapshot), with how much; {} if none."""
    now = snapshot()
    return {k: now[k] - before.get(k, 0) for k in NAMES if now[k] != before.get(k, 0)}


def watch_triton() -> None:
    """Count every `triton.compile` of this process as "triton_compiles", by chaining a
    listener onto Triton's compilation hook (once; an existing listener still runs).
    Triton must already be imported the way kgen imports it (kgen.kernels.loader)."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    importlib.import_module("kgen.kernels.loader")  # imports triton with the interpreter off
    from triton import knobs

    previous = knobs.compilation.listener

    def listener(*args, **kwargs):
        bump("triton_compiles")
        if previous is not None:
            previous(*args, **kwargs)

    knobs.compilation.listener = listener
