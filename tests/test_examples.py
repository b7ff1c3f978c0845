"""The examples run, with the flags their docstrings and the README show.

linreg and logreg run as they are, at a few epochs, and must converge. The MNIST examples
run one epoch (`--epochs 1`, their fast flag) on a slice of the digits: the test replaces
`kgen.nn.split_mnist_5k` with one that keeps every 40th training digit and every 20th test
digit (100 and 50, every class present), since a full epoch takes minutes on Triton's
interpreter. That substitution is the only one; the README's Examples section gives the
time of the real runs.
"""
import argparse
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))

sys.path.insert(0, str(ROOT / "examples"))

import linreg  # noqa: E402
import logreg  # noqa: E402


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def capture_parser(call) -> argparse.ArgumentParser:
    """The ArgumentParser that `call()` builds and parses with: its parse_args is stopped
    before it parses, so nothing runs."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Captured(self)
    argparse.ArgumentParser.parse_args = stop
    try:
        call()
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError("no ArgumentParser.parse_args call")


def example_parser(path) -> argparse.ArgumentParser:
    """The parser of an example script (its main(argv) builds one), without running it."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return capture_parser(lambda: module.main([]))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_docstring_usage_parses(script):
    """Each example's docstring shows how to run it; those flags are its parser's."""
    text = (ROOT / "examples" / script).read_text()
    usage = re.findall(rf"^\s+python examples/{re.escape(script)}(.*)$", text, re.M)
    assert usage, f"examples/{script}'s docstring shows no `python examples/{script} ...` line"
    parser = example_parser(ROOT / "examples" / script)
    for line in usage:
        tokens = line.replace("[", " ").replace("]", " ").split()
        for alternative in range(max([len(t.split("|")) for t in tokens] + [1])):
            argv = [t.split("|")[min(alternative, len(t.split("|")) - 1)] for t in tokens]
            parser.parse_args(argv)


def test_linear_regression_converges(capsys):
    w, b = linreg.main(["--epochs", "8", "--show-kernels"])
    assert abs(w - 3.0) < 0.05 and abs(b - 2.0) < 0.05
    out = capsys.readouterr().out
    assert "@triton.jit" in out and "epoch   8  loss" in out


def test_logistic_regression_converges():
    w, b, accuracy = logreg.main(["--epochs", "4"])
    assert np.abs(w - logreg.TRUE_W).max() < 0.3 and abs(b - logreg.TRUE_B) < 0.3
    assert accuracy > 0.78  # the Bayes rate of this data is about 0.81


def test_dump_writes_the_generated_module(tmp_path):
    for module in (linreg, logreg):
        path = tmp_path / f"{module.__name__}_kernels.py"
        module.main(["--epochs", "1", "--dump", str(path)])
        assert "@triton.jit" in path.read_text()


@pytest.fixture
def few_digits(monkeypatch):
    from kgen import nn
    split = nn.split_mnist_5k

    def few(*args, **kwargs):
        (x_train, y_train), (x_test, y_test) = split(*args, **kwargs)
        return (x_train[::40], y_train[::40]), (x_test[::20], y_test[::20])
    monkeypatch.setattr(nn, "split_mnist_5k", few)


@pytest.mark.parametrize("script, argv", [
    ("mlp128.py", ["--epochs", "1"]),
    ("mlp64.py", ["--epochs", "1"]),
    ("mlp32_dropout.py", ["--epochs", "1"]),
    ("cnn.py", ["--epochs", "1"]),
    ("recurrent.py", ["--epochs", "1", "--cell", "gru", "--hidden", "16"]),
])
def test_mnist_example_runs_one_epoch(script, argv, few_digits, capsys):
    path = ROOT / "examples" / script
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accuracy = module.main(argv)
    assert 0.0 <= float(accuracy) <= 1.0
    assert "epoch" in capsys.readouterr().out


def test_every_example_is_tested():
    tested = {"linreg.py", "logreg.py", "mlp128.py", "mlp64.py", "mlp32_dropout.py", "cnn.py", "recurrent.py"}
    assert set(EXAMPLES) == tested, f"examples without a run test: {sorted(set(EXAMPLES) - tested)}"
