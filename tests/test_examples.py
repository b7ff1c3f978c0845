"""The brief's first two programs converge to the known solution on generated kernels."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import linreg  # noqa: E402
import logreg  # noqa: E402


def test_linear_regression_converges(capsys):
    w, b = linreg.main(["--epochs", "8", "--show-kernels"])
    assert abs(w - 3.0) < 0.05 and abs(b - 2.0) < 0.05
    out = capsys.readouterr().out
    assert "@triton.jit" in out and "epoch   8  loss" in out


def test_logistic_regression_converges():
    w, b, accuracy = logreg.main(["--epochs", "4"])
    assert np.abs(w - logreg.TRUE_W).max() < 0.3 and abs(b - logreg.TRUE_B) < 0.3
    assert accuracy > 0.78  # the Bayes rate of this data is about 0.81
