"""Training curves as inline SVG, from the history `fit` returns ({"loss": [...],
"val_loss": [...], "accuracy": [...], ...}, one value per epoch): one chart per metric, its
validation twin drawn beside it."""
from __future__ import annotations

import math
from html import escape

from kgen.errors import InputError

WIDTH, HEIGHT, PAD = 320, 180, 36
COLOURS = ("#2e86c1", "#d35400")


def check_history(history) -> dict:
    """`history` as {name: [float, ...]}, or an InputError naming what is wrong."""
    if not isinstance(history, dict) or not history:
        raise InputError(f"history: expected a JSON object of per-epoch lists, as fit returns "
                         f"({{\"loss\": [...], \"val_loss\": [...]}}), got {type(history).__name__}")
    out = {}
    for name, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in values):
            raise InputError(f"history: {name!r}: expected a list of numbers, one per epoch, got {values!r:.80}")
        out[str(name)] = [float(v) for v in values]
    return out


def charts(history: dict) -> list:
    """(metric, <svg>) per metric of `history`, validation series with their metric."""
    metrics = [name for name in history if not name.startswith("val_")]
    metrics += [name[4:] for name in history if name.startswith("val_") and name[4:] not in history]
    return [(m, chart(m, [(n, history[n]) for n in (m, f"val_{m}") if n in history])) for m in metrics]


def chart(metric: str, series: list) -> str:
    values = [v for _, vs in series for v in vs if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    high = high if high > low else low + 1.0
    epochs = max(len(vs) for _, vs in series)

    def x(i):
        return PAD + (WIDTH - PAD - 8) * (i / max(1, epochs - 1))

    def y(v):
        return HEIGHT - PAD + (v - low) / (high - low) * (2 * PAD - HEIGHT + 8)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="curve" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
           f'<text x="{PAD}" y="14" font-weight="bold">{escape(metric)}</text>',
           f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 8}" y2="{HEIGHT - PAD}" stroke="#888"/>',
           f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{PAD}" y2="8" stroke="#888"/>',
           f'<text x="2" y="{y(high) + 4:.1f}">{high:.3g}</text><text x="2" y="{y(low):.1f}">{low:.3g}</text>',
           f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 8}">epoch (1-{epochs})</text>']
    for si, (name, vs) in enumerate(series):
        finite = [(i, v) for i, v in enumerate(vs) if math.isfinite(v)]
        colour = COLOURS[si % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in finite)
        out.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="1.5" points="{points}">'
                   f'<title>{escape(name)}</title></polyline>')
        out.extend(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"><title>{escape(name)} epoch '
                   f'{i + 1}: {v:.4g}</title></circle>' for i, v in finite)
        out.append(f'<text x="{WIDTH - 90}" y="{14 + 12 * si}" fill="{colour}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
