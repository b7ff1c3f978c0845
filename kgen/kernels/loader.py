"""Loads a generated kernel module from its source text.

Triton compiles a @jit function from its source file, and decides at decoration time
whether it runs on Triton's interpreter (TRITON_INTERPRET=1), so the module is written to a
real file, named by the hash of its source, and imported with the interpreter switched on
or off as asked. The same file can be imported both ways (interpreted to run on a CPU,
compiled ahead of time for a GPU target)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kgen.files import atomic_write, cache_dir


def source_path(source: str) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    path = cache_dir() / "src" / f"kgen_{digest}.py"
    if not path.exists() or path.read_text() != source:
        atomic_write(path, source)
    return path


@contextmanager
def _interpreter(on: bool):
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


# Triton's own library functions (tl.sigmoid, tl.cdiv, ...) are decorated when triton is
# first imported; import it with the interpreter off so they stay compilable. The
# interpreter runs them as well.
with _interpreter(False):
    import triton  # noqa: F401
    import triton.language  # noqa: F401
    import triton.experimental.gluon  # noqa: F401

_loaded: dict = {}


@contextmanager
def interpreting():
    """The setting for launching interpreted kernels in a process that also compiles them.

    Triton's library @jit functions (tl.sum, tl.max, tl.sigmoid, tl.rand, ...) were
    decorated for compiling (see above), which the interpreter cannot call: while active,
    they are replaced by interpreter twins. The interpreter also patches triton.language
    when a kernel calls one of them and does not undo it; every name it rebound is put
    back on exit, so later compiles see triton.language as it was."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    namespaces = _language_namespaces()
    saved = [(ns, dict(vars(ns))) for ns in namespaces]
    for module in (sys.modules[n] for n in _STDLIB_MODULES):
        for key, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                setattr(module, key, _TWINS.setdefault(value, InterpretedFunction(value.fn)))
    try:
        with np.errstate(all="ignore"):  # masked-off lanes compute garbage (log(0), ...) by design
            yield
    finally:
        for ns, before in saved:  # names the interpreter added stay: its cached rewrites use them
            for key, value in before.items():
                if vars(ns).get(key, _ABSENT) is not value:
                    setattr(ns, key, value)


def _language_namespaces() -> list:
    import triton.language as tl
    return [sys.modules[n] for n in _STDLIB_MODULES] + [tl.core, tl.math, tl.core.tensor,
                                                         tl.core.tensor_descriptor_base]


_ABSENT = object()
_STDLIB_MODULES = ("triton.language", "triton.language.standard", "triton.language.random")
_TWINS: dict = {}  # library JITFunction -> its InterpretedFunction twin


def load_module(source: str, interpreted: bool):
    """The module of `source`, its kernels decorated for the interpreter or for compiling."""
    key = (hashlib.sha256(source.encode()).hexdigest(), interpreted)
    if key in _loaded:
        return _loaded[key]
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    path = source_path(source)
    name = f"{path.stem}_{'interp' if interpreted else 'jit'}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with _interpreter(interpreted):
        sys.modules[name] = module
        spec.loader.exec_module(module)
    _loaded[key] = module
    return module
