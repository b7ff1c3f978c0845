"""The registry of kernel templates for "template" ops (see kgen.ir.optable).

A template is a function `emit(name, root, written, names) -> KernelSource` that writes
the kernel computing the op node `root`, reading the buffers in `written`; `names` gives
the graph's node names for the kernel's docstring and its statements' comments. Op table
entries name their template (`OpDef.lower`); a kernels module registers its templates with
`@template("name")`.
"""
from __future__ import annotations

from typing import Callable

from kgen.errors import KgenError

TEMPLATES: dict = {}


def template(name: str) -> Callable:
    def register(emit: Callable) -> Callable:
        if name in TEMPLATES:
            raise ValueError(f"template {name!r} is registered twice")
        TEMPLATES[name] = emit
        return emit
    return register


def lookup(name: str) -> Callable:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KgenError(f"no kernel template {name!r}; templates: {', '.join(sorted(TEMPLATES))}") from None
