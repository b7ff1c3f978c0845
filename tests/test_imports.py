"""Imports run one way, down the pipeline (DESIGN.md, "Import order"): a module imports only
from its own stage or earlier ones. Every import of every module under kgen/ is read with
`ast`, function-local ones included, so a late import does not hide a cycle; and a
function-local import of kgen says why it is one (a comment on its line, or on the line
above it or above the group of imports it opens)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kgen"

# Stages in pipeline order; a module's stage is the one of its longest listed prefix.
STAGES = [
    ("leaf", ("kgen", "kgen.errors", "kgen.counters", "kgen.files")),  # `kgen` itself imports only the errors
    ("ir", ("kgen.ir", "kgen.ops", "kgen.tolerance")),
    ("lowering", ("kgen.lowering",)),
    ("kernels", ("kgen.kernels",)),
    ("autotune", ("kgen.autotune",)),
    ("build", ("kgen.compiler", "kgen.function", "kgen.check")),
    ("artifact", ("kgen.artifact",)),
    ("nn", ("kgen.nn",)),
    ("frontends", ("kgen.frontends",)),
    ("top", ("kgen.fuzz", "kgen.cli", "kgen.report")),
]

# Known violations still in the tree, (importing file, imported module): each is to go, and
# this list with it. Empty: add one only with the reason it cannot go yet.
ALLOWED = set()


def stage_of(module: str) -> int:
    best = max(((len(prefix), i) for i, (_, prefixes) in enumerate(STAGES) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no stage: add it to STAGES in tests/test_imports.py")
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, path: Path):
    """(node, module) for every kgen module the file imports; `from kgen import x` names
    the submodule kgen.x where there is one, else the package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kgen":
                    yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: a relative import (kgen imports by absolute names)"
            base = node.module
            if base.split(".")[0] != "kgen":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found = (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (ROOT / Path(*sub.split("."))).is_dir()
                yield node, sub if found else base


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def function_local(tree: ast.AST):
    """The import statements inside functions."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def test_every_module_imports_only_from_its_stage_or_earlier():
    problems, used = [], set()
    for path in modules():
        tree = ast.parse(path.read_text(), str(path))
        rel, own = path.relative_to(ROOT).as_posix(), stage_of(module_name(path))
        for node, target in imported(tree, path):
            theirs = stage_of(target)
            if theirs > own:
                if (rel, target) in ALLOWED:
                    used.add((rel, target))
                    continue
                problems.append(f"{rel}:{node.lineno}: {module_name(path)} ({STAGES[own][0]}) imports "
                                f"{target} ({STAGES[theirs][0]}), a later stage")
    assert not problems, "imports against the pipeline order:\n" + "\n".join(problems)
    assert used == ALLOWED, f"ALLOWED lists imports that are gone: {sorted(ALLOWED - used)}"


def test_every_function_local_kgen_import_says_why():
    problems = []
    for path in modules():
        text = path.read_text()
        lines, tree = text.splitlines(), ast.parse(text, str(path))
        for node in function_local(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if not any(n.split(".")[0] == "kgen" for n in names):
                continue
            row = node.lineno - 1
            if "#" in lines[row]:
                continue
            above = row - 1
            while above >= 0 and lines[above].lstrip().startswith(("from ", "import ")):
                above -= 1  # a group of imports shares the comment above it
            if above < 0 or not lines[above].lstrip().startswith("#"):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[row].strip()}")
    assert not problems, ("function-local imports of kgen without a comment saying why (start-up time, or a "
                          "cycle within one stage):\n" + "\n".join(problems))


@pytest.mark.parametrize("source, want", [
    ("from kgen.autotune.tuner import config_for\n", "kgen/kernels/runtime.py:1: kgen.kernels.runtime (kernels) "
                                                     "imports kgen.autotune.tuner (autotune), a later stage"),
    ("def f():\n    from kgen import cli  # late\n", "kgen/kernels/runtime.py:2: kgen.kernels.runtime (kernels) "
                                                     "imports kgen.cli (top), a later stage"),
])
def test_a_later_import_is_caught(source, want, monkeypatch, tmp_path):
    """The check sees top-level and function-local imports, and names file, line and stages."""
    fake = PACKAGE / "kernels" / "runtime.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == fake else
                        Path.read_bytes(self).decode())
    with pytest.raises(AssertionError, match="imports against the pipeline order") as caught:
        test_every_module_imports_only_from_its_stage_or_earlier()
    assert want in str(caught.value)


def test_an_uncommented_local_import_is_caught(monkeypatch):
    fake = PACKAGE / "kernels" / "runtime.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "def f():\n    x = 1\n    from kgen import ops\n"
                        if self == fake else Path.read_bytes(self).decode())
    with pytest.raises(AssertionError, match=r"kgen/kernels/runtime.py:3: from kgen import ops"):
        test_every_function_local_kgen_import_says_why()
