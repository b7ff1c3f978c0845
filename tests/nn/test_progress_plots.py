"""fit's progress display and the training curves: a tiny fit in a child process whose
stdout is a pseudo-terminal shows a tqdm bar per epoch, the same fit piped prints one plain
line per epoch; plot_history's PNG and SVG files hold the curves asked for; `kgen train
--plot` draws them."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import kgen
from kgen import nn
from kgen.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIT = textwrap.dedent("""
    import numpy as np
    from kgen import nn
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 5)).astype(np.float32), rng.integers(0, 3, 24).astype(np.int32)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3), nn.LogSoftmax(dim=1))
    model.compile("adam", "nll", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=6, validation_split=0.25)
    print("done")
""")
SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def child_env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_in_terminal(script: str, columns: int = 120) -> str:
    """What `script` prints with its stdout and stderr a pseudo-terminal `columns` wide."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-c", script], stdin=child, stdout=child, stderr=child,
                               env=child_env(), close_fds=True)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(parent)
    assert process.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode()


def test_a_terminal_shows_a_progress_bar_per_epoch():
    out = run_in_terminal(FIT)
    assert "done" in out
    # each redraw begins with a carriage return; the last one of each epoch stays as its line
    finals = [line.split("\r")[-1] for line in out.split("\r\n") if "epoch" in line]
    assert len(finals) == 2, out
    for epoch, line in enumerate(finals, 1):
        pattern = (rf"epoch {epoch}/2: 100%\|.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step), "
                   r"loss=\d\.\d{4}, accuracy=\d\.\d{4}, val_loss=\d\.\d{4}, val_accuracy=\d\.\d{4}\]$")
        assert re.match(pattern, line), line
    # within an epoch the bar counts the steps, with the running loss and an estimate of the time left
    assert re.search(r"epoch 1/2:  33%\|.*\| 1/3 \[\d\d:\d\d<\d\d:\d\d, .*loss=\d\.\d{4}, accuracy=\d\.\d{4}\]", out)


def test_a_pipe_gets_one_plain_line_per_epoch():
    out = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True, env=child_env(),
                         timeout=120, check=True).stdout
    lines = out.splitlines()
    assert "\r" not in out and lines[-1] == "done" and len(lines) == 3
    for epoch, line in enumerate(lines[:2], 1):
        assert re.fullmatch(rf"epoch {epoch}/2  loss \d\.\d{{4}}  accuracy \d\.\d{{4}}  val_loss \d\.\d{{4}}  "
                            r"val_accuracy \d\.\d{4}  \(\d+\.\ds\)", line), line


def small_fit(**kwargs):
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)).astype(np.float32), rng.integers(0, 3, 12).astype(np.int32)
    model = nn.Sequential(nn.Linear(5, 3), nn.LogSoftmax(dim=1)).compile("adam", "nll", metrics=["accuracy"])
    return model, model.fit(x, y, epochs=2, batch_size=6, **kwargs)


def test_verbose_2_prints_lines_and_verbose_false_nothing(capsys):
    small_fit(verbose=2)
    assert [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()] == ["epoch 1/2", "epoch 2/2"]
    small_fit(verbose=False)
    assert capsys.readouterr().out == ""


HISTORY = {"loss": [1.0, 0.6, 0.4, 0.3], "accuracy": [0.3, 0.5, 0.7, 0.8],
           "val_loss": [1.1, 0.8, 0.7, 0.72], "val_accuracy": [0.2, 0.4, 0.6, 0.6]}


def curves_in_svg(path) -> dict:
    """Each curve group's id -> its path elements' data (plot_history names them curve-NAME)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return {g.get("id"): [p.get("d") for p in g.iter(f"{SVG}path")]
            for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith("curve-")}


def test_svg_holds_a_train_and_a_validation_curve_per_quantity(tmp_path):
    path = nn.plot_history(HISTORY, tmp_path / "curves.svg")
    curves = curves_in_svg(path)
    assert sorted(curves) == ["curve-accuracy", "curve-loss", "curve-val_accuracy", "curve-val_loss"]
    for name, paths in curves.items():
        assert paths and all(paths), name  # a drawn line (its markers are paths too)
    assert len({tuple(p) for p in curves.values()}) == 4  # four different curves
    assert [p.name for p in tmp_path.iterdir()] == ["curves.svg"]  # written atomically: no temporary left


def test_png_is_a_valid_image_with_both_curves(tmp_path):
    # at call time: matplotlib is optional for kgen, needed here only to read the image back
    from matplotlib.image import imread
    path = nn.plot_history({"loss": HISTORY["loss"], "val_loss": HISTORY["val_loss"]}, tmp_path / "loss.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
    pixels = (imread(path)[..., :3] * 255).round().astype(int)
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's first two line colours: two curves
        assert (np.abs(pixels - colour).sum(axis=-1) <= 6).sum() > 50, colour


def test_plot_a_fit_s_history_object(tmp_path):
    model, history = small_fit(verbose=False, validation_split=0.5)
    path = nn.plot_history(model.history, tmp_path / "fit.SVG")
    assert sorted(curves_in_svg(path)) == sorted(f"curve-{name}" for name in history)


def test_bad_paths_and_histories_are_clear_errors(tmp_path):
    with pytest.raises(kgen.OptionError, match=r"path must end in \.png or \.svg .*got '.*curves\.jpg'"):
        nn.plot_history(HISTORY, tmp_path / "curves.jpg")
    with pytest.raises(kgen.InputError, match="expected fit's history .* got list"):
        nn.plot_history([1.0, 2.0], tmp_path / "c.png")
    with pytest.raises(kgen.InputError, match=r"history\['loss'\] must be a list of numbers, got str"):
        nn.plot_history({"loss": "high"}, tmp_path / "c.png")
    with pytest.raises(kgen.InputError, match="holds no values to draw"):
        nn.plot_history({"loss": [], "accuracy": []}, tmp_path / "c.png")
    assert not list(tmp_path.iterdir())


def test_kgen_train_plot(tmp_path, capsys):
    path = tmp_path / "curves.svg"
    assert main(["train", "logreg", "--epochs", "2", "--batch", "256", "--plot", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"curves: {path}"
    assert sorted(curves_in_svg(path)) == ["curve-accuracy", "curve-loss", "curve-val_accuracy", "curve-val_loss"]
    assert main(["train", "logreg", "--plot", str(tmp_path / "curves.pdf")]) == 2
    assert "argument --plot: expected a .png or .svg path" in capsys.readouterr().err
