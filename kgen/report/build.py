"""`kgen.report(program_or_function, path)`: gather what kgen did to a program and write it
as one HTML page."""
from __future__ import annotations

import json
from pathlib import Path

from kgen.check import check as check_kernels
from kgen.errors import InputError, KgenError
from kgen.files import atomic_write
from kgen.function import Function
from kgen.ir import shapes
from kgen.kernels.runtime import Program
from kgen.report import page
from kgen.report.collect import collect
from kgen.report.curves import check_history


def report(target, path, sizes: dict = None, targets=("sm_80", "sm_90"), check=None, history=None,
           title: str = None, compile_seconds: float = None, workers: int = None, state_names: dict = None) -> Path:
    """Write the report of `target` (a kgen.function, a compiled Program, or the directory of
    an artifact written by `kgen compile`) to `path`, and return the path.

    sizes: the symbolic sizes the figures are taken at (default 64 each, or the arguments'
    with `check`); targets: the GPUs to compile for and predict on; check: the function's
    arguments, to run kgen.check on and show each kernel's error; history: what fit returns
    (or a JSON file of it), drawn as training curves; compile_seconds: the trace and compile
    time to show (the caller measured it); state_names: the model's names of the state
    inputs (input name -> `0.weight`), shown beside kgen's."""
    history = load_history(history)
    if isinstance(target, (str, Path)) and Path(target).is_dir():
        from kgen.report.artifact import collect_artifact  # loads an artifact's manifest only when asked
        data = collect_artifact(Path(target), history, title)
    else:
        program, report_ = _program(target), None
        if check is not None:
            if not isinstance(target, Function):
                raise KgenError(f"report: check takes the arguments of a kgen.function, but the target is a "
                                f"{type(target).__name__}")
            report_ = check_kernels(target, list(check))
            sizes = {**_sizes_of(target, check), **(sizes or {})}
        data = collect(program, sizes, tuple(targets), report_, title or "kgen program", compile_seconds, workers,
                       history, state_names)
    atomic_write(path, page.render(data))
    return Path(path)


def _program(target) -> Program:
    if isinstance(target, Function):
        return target.program
    if isinstance(target, Program):
        return target
    raise KgenError(f"report: expected a kgen.function, a Program or an artifact directory, got "
                    f"{type(target).__name__} {str(target)[:80]!r}")


def _sizes_of(function: Function, arguments) -> dict:
    """The symbolic sizes `arguments` bind, for the figures to match the check."""
    sizes = {}
    for node, value in zip(function.inputs, arguments):
        shapes.bind_shape(node.shape, tuple(function.program.to_tensor(value, node).shape), sizes,
                          f"input {node.name!r}")
    return sizes


def load_history(history):
    """`history` as fit returns it, read from a JSON file if it is a path; None stays None."""
    if history is None:
        return None
    if isinstance(history, (str, Path)):
        try:
            history = json.loads(Path(history).read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"history: {history} is not JSON ({e})") from None
    return check_history(history)
