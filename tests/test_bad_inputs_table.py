"""docs/bad_inputs.md cannot rot: every row of its table names tests that exist."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "bad_inputs.md"


def defined_tests(path: Path) -> set:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def table_rows() -> list:
    """(number, test cell) of each row of the table."""
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows.append((int(cells[0]), cells[-1]))
    return rows


def test_every_row_of_the_table_names_existing_tests():
    rows = table_rows()
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 20
    for number, cell in rows:
        named = re.findall(r"`(test_\w+)`(?: \((tests/[\w/]+\.py)\))?", cell)
        assert named, f"row {number} names no test: {cell!r}"
        for name, where in named:
            path = ROOT / (where or "tests/test_bad_inputs.py")
            assert name in defined_tests(path), f"row {number}: no {name} in {path.relative_to(ROOT)}"
