"""Loads a generated kernel module from its source text.

Triton compiles a @jit function from its source file, and decides at decoration time
whether it runs on Triton's interpreter (TRITON_INTERPRET=1), so the module is written to a
real file, named by the hash of its source, and imported with the interpreter switched on
or off as asked. The same file can be imported both ways (interpreted to run on a CPU,
compiled ahead of time for a GPU target)."""
from __future__ import annotations

import dataclasses
import functools
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
    back on exit, so later compiles see triton.language as it was.

    Integer arithmetic skips the interpreter's overflow check (`sanitize_overflow`): the
    check computes every int32 op again in int64 and compares it with the bounds, 5-10x
    the op's cost, only to feed a device_assert that does nothing unless Triton's debug
    option is on (then the check stays). NumPy's BLAS runs on one thread meanwhile (see
    `_one_blas_thread`)."""
    from triton.runtime.interpreter import interpreter_builder
    from triton.runtime.jit import JITFunction

    namespaces = _language_namespaces()
    saved = [(ns, dict(vars(ns))) for ns in namespaces]
    for module in (sys.modules[n] for n in _STDLIB_MODULES):
        for key, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                setattr(module, key, _TWINS.setdefault(value, _library_twin_class()(value.fn)))
    patched, _PATCHED[0] = _PATCHED[0], False
    builder = interpreter_builder
    options = builder.options
    if not options.debug:  # its overflow check ends in a device_assert, which does nothing without debug
        builder.options = dataclasses.replace(options, sanitize_overflow=False)
    try:
        with np.errstate(all="ignore"), _one_blas_thread():  # masked-off lanes compute garbage by design
            yield
    finally:
        _PATCHED[0] = patched
        builder.options = options
        for ns, before in saved:  # names the interpreter added stay: its cached rewrites use them
            for key, value in before.items():
                if vars(ns).get(key, _ABSENT) is not value:
                    setattr(ns, key, value)


@contextmanager
def _one_blas_thread():
    """NumPy's OpenBLAS on one thread: the interpreter computes each tl.dot as one np.matmul
    of a tile ([256, 32] @ [32, 256] say), which OpenBLAS splits over its threads, and
    on a busy machine waiting for them took 20-30 ms against 0.2-0.7 ms on one (measured
    with two cores and other processes running). The split is over rows and columns, not
    the sum, so the values are the same. Without an OpenBLAS found, nothing changes."""
    calls = _blas_thread_calls()
    before = [get() for get, _ in calls]
    for _, set_threads in calls:
        set_threads(1)
    try:
        yield
    finally:
        for (_, set_threads), count in zip(calls, before):
            set_threads(count)


@functools.lru_cache(maxsize=None)
def _blas_thread_calls() -> tuple:
    """(get, set) of the thread count of each OpenBLAS this process has loaded (NumPy's
    wheels bundle one, whose symbols carry a scipy_ prefix and a 64_ suffix), found in
    /proc/self/maps; none where that file does not exist."""
    import ctypes
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return ()
    calls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            get, set_threads = (getattr(lib, f"{prefix}_{verb}_num_threads{suffix}", None) for verb in ("get", "set"))
            if get is not None and set_threads is not None:
                calls.append((get, set_threads))
                break
    return tuple(calls)


def _language_namespaces() -> list:
    import triton.language as tl
    return [sys.modules[n] for n in _STDLIB_MODULES] + [tl.core, tl.math, tl.core.tensor,
                                                         tl.core.tensor_descriptor_base]


_ABSENT = object()
_STDLIB_MODULES = ("triton.language", "triton.language.standard", "triton.language.random")
_TWINS: dict = {}  # library JITFunction -> its InterpretedFunction twin
_PATCHED = [False]  # whether a twin has patched triton.language inside the current `interpreting`


@functools.lru_cache(maxsize=None)
def _library_twin_class():
    """The interpreter's twin of a library function (tl.cdiv, tl.sum, ...). Triton's own
    twin patches triton.language afresh at every call, about 7 ms of `inspect.getmembers`
    (a matmul's tile ids call tl.cdiv ten times a program); the patch is not undone before
    `interpreting` ends, so this one patches at its first call there and reuses it."""
    from triton.runtime.interpreter import InterpretedFunction, InterpreterError, _patch_lang

    class LibraryTwin(InterpretedFunction):
        def __call__(self, *args, **kwargs):
            if not _PATCHED[0]:
                _patch_lang(self.fn)
                _PATCHED[0] = True
            try:
                return self.rewrite()(*args, **kwargs)
            except Exception as e:
                raise InterpreterError(repr(e)) from e

    return LibraryTwin


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
