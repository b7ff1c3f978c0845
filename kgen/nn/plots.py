"""Training curves: `plot_history(history, path)` draws what fit returned, one panel per
quantity (loss, then each metric), the training curve and, where fit validated, the val_*
curve beside it, to a PNG or SVG file.

matplotlib is imported only when a plot is drawn (`import kgen.nn` does not need it), and
through its object interface (`Figure`, no pyplot): no global figure state, no display, and
the Agg renderer whatever backend the user's matplotlib is set to.
"""
from __future__ import annotations

import io
import math
from numbers import Real
from pathlib import Path

from kgen.errors import InputError, OptionError
from kgen.files import atomic_write

FORMATS = {".png": "png", ".svg": "svg"}
PANEL_SIZE = (4.5, 3.2)  # inches per panel


def plot_history(history, path) -> Path:
    """Draw `history` (fit's dict of name -> per-epoch values, or a kgen.nn.History) to
    `path`, PNG or SVG by its suffix, written atomically; returns the path. Each curve's SVG
    group is named `curve-NAME` (curve-loss, curve-val_loss) so tools can find it."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OptionError(f"plot_history: path must end in .png or .svg (the format is chosen by the suffix), "
                          f"got {str(path)!r}")
    epochs = [e + 1 for e in getattr(history, "epoch", [])] or None
    curves = _curves(getattr(history, "history", history))
    figure = _draw(_panels(curves), curves, epochs)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    atomic_write(path, buffer.getvalue())
    return path


def _curves(history) -> dict:
    """The history's curves, checked: a mapping of names to sequences of numbers."""
    if not isinstance(history, dict):
        raise InputError(f"plot_history: expected fit's history (a dict of name -> per-epoch values) or a "
                         f"kgen.nn.History, got {type(history).__name__}")
    curves = {}
    for name, values in history.items():
        values = list(values) if isinstance(values, (list, tuple)) else values
        if not isinstance(values, list) or not all(isinstance(v, Real) for v in values):
            raise InputError(f"plot_history: history[{name!r}] must be a list of numbers, got "
                             f"{type(values).__name__}")
        if values:
            curves[str(name)] = [float(v) for v in values]
    if not curves:
        raise InputError(f"plot_history: the history holds no values to draw (names {sorted(history)}; "
                         f"fit with epochs >= 1 first)")
    return curves


def _panels(curves: dict) -> list:
    """One panel per quantity, in the history's order: a name and its val_ twin share one."""
    panels = []
    for name in curves:
        base = name[4:] if name.startswith("val_") and name[4:] in curves else name
        if base not in panels:
            panels.append(base)
    return panels


def _draw(panels: list, curves: dict, epochs):
    # matplotlib only here: drawing needs it, `import kgen.nn` does not
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    for i, quantity in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        for name in (quantity, f"val_{quantity}"):
            if name in curves:
                values = curves[name]
                x = epochs if epochs and len(epochs) == len(values) else range(1, len(values) + 1)
                line, = axes.plot(list(x), values, marker="o" if len(values) < 30 else None,
                                  label="validation" if name.startswith("val_") else "train")
                line.set_gid(f"curve-{name}")
        axes.set_title(quantity)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    return figure
