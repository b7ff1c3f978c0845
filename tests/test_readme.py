"""The README and DESIGN.md say true things: every ```python block of the README runs as
written, every command it shows names real subcommands, flags, scripts and modules, every
path it names exists, and DESIGN.md's layout table names what is there (and its planned
table what is not there yet).

The snippets run in fresh subprocesses in a temporary directory (the artifact snippet writes
`mlp128.kgen` there). No substitution is made: the snippets are fast as written.
Commands are parsed with the real argparse parsers (kgen.cli's, each example's) and never
run; `tests/test_examples.py` runs the examples.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import glob
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_examples import EXAMPLES, capture_parser, example_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DESIGN = (ROOT / "DESIGN.md").read_text()


# --- the README's parts ----------------------------------------------------------------------
def sections(text: str) -> list:
    """(title, body) per `## ` section; the text before the first one is titled ''."""
    parts, title, lines = [], "", []
    for line in text.splitlines():
        if line.startswith("## "):
            parts.append((title, "\n".join(lines)))
            title, lines = line[3:].strip(), []
        else:
            lines.append(line)
    parts.append((title, "\n".join(lines)))
    return parts


def fenced_blocks(text: str) -> list:
    """(language, code) of every ``` block."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def outside_fences(text: str) -> str:
    return re.sub(r"^```\w*\n.*?^```", "", text, flags=re.S | re.M)


def python_snippets() -> list:
    snippets = []
    for title, body in sections(README):
        for i, (language, code) in enumerate(b for b in fenced_blocks(body) if b[0] == "python"):
            snippets.append(pytest.param(code, id=f"{title or 'top'}-{i}".replace(" ", "_")))
    return snippets


def shell_commands() -> list:
    """Whole command lines: `kgen ...` lines of plain ``` blocks (the description after two
    spaces dropped) and the `&&`-joined parts, starting with kgen or python, of indented lines."""
    commands = []
    for language, code in fenced_blocks(README):
        if language in ("", "sh", "bash", "console"):
            commands += [re.split(r"\s{2,}", line.strip())[0] for line in code.splitlines()
                         if line.strip().startswith("kgen ")]
    for line in outside_fences(README).splitlines():
        if line.startswith("    ") and not line.lstrip().startswith(("|", "-")):
            commands += [part.strip() for part in line.split("&&")
                         if re.match(r"(kgen|python3?) ", part.strip())]
    return commands


def inline_commands() -> list:
    """`kgen ...` and `python ...` code spans of the prose and tables (whitespace joined)."""
    spans = re.findall(r"`((?:kgen|python3?)\s[^`]+)`", outside_fences(README))
    return [" ".join(span.split()) for span in spans]


# --- parsing commands without running them --------------------------------------------------
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z0-9]+)?$")  # E, B, DIR, F.npz, MODEL


def kgen_parser() -> argparse.ArgumentParser:
    from kgen import cli
    return capture_parser(lambda: cli.main(["models"]))


def subparsers(parser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def argv_variants(words: list) -> list:
    """The argument lists a synopsis stands for: [optional] brackets dropped, one list per
    alternative of `a|b`."""
    tokens = " ".join(words).replace("[", " ").replace("]", " ").split()
    count = max([len(t.split("|")) for t in tokens] + [1])
    return [[t.split("|")[min(i, len(t.split("|")) - 1)] for t in tokens] for i in range(count)]


def fill_placeholders(parser, argv: list) -> list:
    """A placeholder after an int or float option becomes 1; other placeholders stay as
    strings (a MODEL, DIR or PATH is just a string to the parser)."""
    filled = []
    for i, token in enumerate(argv):
        action = parser._option_string_actions.get(argv[i - 1]) if i else None
        if PLACEHOLDER.match(token) and action is not None and action.type in (int, float):
            token = "1"
        filled.append(token)
    return filled


def parse(parser, argv: list) -> argparse.Namespace:
    """`parser`'s answer for `argv`, or a test failure with argparse's message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{parser.prog} {' '.join(argv)}: {err.getvalue().strip()}")


def check_kgen_command(command: str, whole: bool) -> None:
    """A `kgen` command names a real subcommand and real flags (with a `--flag a|b`, each of
    a and b among its choices); a whole command line also parses as it stands."""
    parser = kgen_parser()
    words = command.split()[1:]
    commands = subparsers(parser)
    assert words and words[0] in commands, f"`{command}`: no subcommand {words[:1]}; kgen has {sorted(commands)}"
    sub = commands[words[0]]
    for i, word in enumerate(words):
        for flag in re.findall(r"--[\w-]+", word):
            assert flag in sub._option_string_actions, \
                f"`{command}`: kgen {words[0]} has no {flag}; it has {sorted(sub._option_string_actions)}"
            action = sub._option_string_actions[flag]
            if action.choices and i + 1 < len(words):
                for choice in words[i + 1].strip("[]").split("|"):
                    assert choice in action.choices, f"`{command}`: {flag} {choice} is not one of {action.choices}"
    if whole:
        for argv in argv_variants(words):
            parse(parser, [argv[0]] + fill_placeholders(sub, argv[1:]))


def check_python_command(command: str) -> None:
    """`python examples/X.py ...` parses with the example's own parser; `python
    benchmarks/X.py ...` names a script that exists and flags it defines; `python -m X`
    names an importable module."""
    words = command.split()[1:]
    if words[0] == "-m":
        module = words[1]
        assert importlib.util.find_spec(module) is not None, f"`{command}`: no module {module}"
        if module == "pytest" and "-n" in words:
            assert importlib.util.find_spec("xdist") is not None, f"`{command}`: -n needs pytest-xdist"
        return
    script = ROOT / words[0]
    assert script.is_file(), f"`{command}`: no {words[0]}"
    if words[0].startswith("examples/"):
        parser = example_parser(script)
        for argv in argv_variants(words[1:]):
            parse(parser, fill_placeholders(parser, argv))
    else:
        source = script.read_text()
        for flag in re.findall(r"--[\w-]+", " ".join(words[1:])):
            assert f'"{flag}"' in source, f"`{command}`: {words[0]} defines no {flag}"


# --- the tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("code", python_snippets())
def test_readme_python_snippet_runs_as_written(code, tmp_path):
    (tmp_path / "snippet.py").write_text(code)
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stdout\n{result.stdout[-3000:]}\n" \
                                   f"--- stderr\n{result.stderr[-3000:]}"


def test_readme_generated_kernel_is_the_real_one():
    """The kernel "A program" shows is the first kernel its snippet generates, as generated."""
    body = dict(sections(README))["A program"]
    code = next(code for language, code in fenced_blocks(body) if language == "python")
    shown = next(code for language, code in fenced_blocks(body) if language == "text")
    ns: dict = {}
    exec(code.partition("\nxs = ")[0], ns)  # the program, not its run
    assert shown.rstrip() == ns["train"].kernels[0].text.rstrip()


def test_readme_has_the_snippets_and_commands_this_test_reads():
    assert len(python_snippets()) >= 3
    assert any(c.startswith("kgen ") for c in shell_commands())
    assert any(c.startswith("python examples/") for c in shell_commands() + inline_commands())


@pytest.mark.parametrize("command", shell_commands())
def test_readme_command_lines_parse(command):
    if command.startswith("kgen "):
        check_kgen_command(command, whole=True)
    else:
        check_python_command(command)


@pytest.mark.parametrize("command", inline_commands())
def test_readme_inline_commands_name_real_things(command):
    if command.startswith("kgen "):
        check_kgen_command(command, whole=False)
    else:
        check_python_command(command)


def test_readme_paths_exist():
    """Every repository path the README names in backticks exists (a * is a glob; a path
    with an upper-case placeholder such as DATE is a pattern, not a path)."""
    named = set(re.findall(r"`((?:kgen|benchmarks|examples|tests|\.ci)/[^`\s]*)`", README))
    named |= set(re.findall(r"(?<![\w/])(examples/\w+\.py)", README))
    missing = [p for p in sorted(named) if not re.search(r"[A-Z]{2,}", p) and not glob.glob(str(ROOT / p))]
    assert not missing, f"the README names paths that do not exist: {missing}"
    assert "DESIGN.md" in README and (ROOT / "DESIGN.md").is_file()


def test_readme_times_every_example():
    """The Examples section's table has a row, with a command, for every examples/*.py."""
    body = dict(sections(README))["Examples"]
    table = [line for line in body.splitlines() if line.startswith("|")]
    for script in EXAMPLES:
        assert any(f"`python examples/{script}" in row for row in table), \
            f"the README's Examples table has no command for examples/{script}"


# --- DESIGN.md -------------------------------------------------------------------------------
def layout_tables() -> tuple:
    """(built rows, planned rows) of DESIGN.md's Layout section: (path, description)."""
    body = dict(sections(DESIGN))["Layout"]
    built_text, _, planned_text = body.partition("Planned, not built")

    def rows(text):
        return [(m.group(1), m.group(2)) for m in re.finditer(r"^\| `([^`]+)` \|(.*)\|\s*$", text, re.M)]
    return rows(built_text), rows(planned_text)


def test_design_layout_names_what_exists():
    built, planned = layout_tables()
    assert len(built) > 10
    missing = [path for path, _ in built if not (ROOT / path).exists()]
    assert not missing, f"DESIGN.md's layout names as built paths that do not exist: {missing}"
    # a directory row's file names (`writer.py`, `ops_*.py`) are files in that directory
    for path, description in built:
        if path.endswith("/"):
            for name in re.findall(r"`([\w*./]+\.py)`", description):
                where = ROOT / name if "/" in name else ROOT / path / name
                assert glob.glob(str(where)), f"DESIGN.md: {path} row names {name}, which does not exist"
    built_now = [path for path, _ in planned if (ROOT / path).exists()]
    assert not built_now, f"DESIGN.md lists as planned paths that now exist (move them to the built table): " \
                          f"{built_now}"


def test_design_layout_names_every_module():
    """Every module of kgen/ is in the layout: as a row of its own, or named in its package's row."""
    built, _ = layout_tables()
    rows = dict(built)
    unnamed = []
    for module in sorted((ROOT / "kgen").rglob("*.py")):
        relative = module.relative_to(ROOT).as_posix()
        package = module.parent.relative_to(ROOT).as_posix() + "/"
        if relative in rows or (module.name == "__init__.py" and package in rows):
            continue
        described = rows.get(package, "")
        if not any(fnmatch.fnmatch(module.name, name) for name in re.findall(r"`([\w*.]+\.py)`", described)):
            unnamed.append(relative)
    assert not unnamed, f"DESIGN.md's layout does not name these modules: {unnamed}"
