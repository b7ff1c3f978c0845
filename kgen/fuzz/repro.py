"""Writing a failing program as a standalone, runnable reproducer.

A reproducer is the program's module (kgen/fuzz/source.py: plain kgen code building the
function, and the torch oracle) with its shared values and every call's inputs written in as
NumPy literals; `python FILE` runs the calls and checks kgen against its reference and torch,
exiting 1 on a mismatch (or with kgen's own exception). Its docstring says what failed; a
JSON of the Program beside it re-runs it through the fuzzer (kgen/fuzz/cli.py --replay).
"""
from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

from kgen.fuzz.program import Program, analyze
from kgen.fuzz.runner import make_calls, make_state
from kgen.fuzz.source import module_source


def slug(key: str) -> str:
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    words = re.sub(r"[^a-z0-9]+", "-", key.split("@")[0].split("|")[0].lower()).strip("-")
    return f"{words[:48].rstrip('-')}-{digest}"


def reproducer_source(program: Program, outcome: dict) -> str:
    infos = analyze(program)
    source = module_source(program, infos, make_state(program), make_calls(program, infos),
                           title=outcome.get("signature", ""))
    first, rest = source.split("\n", 1)
    details = textwrap.indent(outcome.get("error", ""), "    ")
    doc = (f'"""kgen fuzz reproducer (seed {program.seed}): {outcome.get("status")}.\n\n'
           f'{outcome.get("signature", "")}\n{details}\n\n'
           f'Run: python -X faulthandler THIS_FILE   (exit status 0: fixed; 1: a mismatch; an exception or a\n'
           f'fatal signal: still refused or crashing)\n"""')
    return doc + "\n" + rest


def write_reproducer(program: Program, outcome: dict, directory="fuzz-failures") -> Path:
    """Write FILE.py (the reproducer) and FILE.json (the program and outcome); return FILE.py."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = outcome.get("signature", "failure") + "|" + ",".join(program.ops)
    path = directory / f"{slug(key)}.py"
    tmp = path.with_suffix(".py.tmp")
    tmp.write_text(reproducer_source(program, outcome))
    tmp.replace(path)
    record = {"program": program.to_dict(), "outcome": {k: v for k, v in outcome.items() if k != "traceback"}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    tmp.replace(path.with_suffix(".json"))
    return path
