"""The buffer plan as an SVG timeline: one row per storage slot (B2), per state updated in
place (B3) and for the fresh outputs (B1), one column per launch; each value a bar from the
launch writing it to the last launch reading it, with its name on hover."""
from __future__ import annotations

from html import escape

LABEL_WIDTH, CELL, ROW, HEAD = 190, 26, 18, 90
COLOURS = {"B1": "#7f8c8d", "B2": "#2e86c1", "B3": "#d35400"}
SHADES = ("#2e86c1", "#5dade2")


def timeline(rows: list, kernels: list) -> str:
    """`rows` from kgen.report.collect.buffer_lifetimes; `kernels` the launch kernels' names."""
    width = LABEL_WIDTH + CELL * len(kernels) + HEAD
    height = HEAD + ROW * len(rows) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="10">']
    for li, name in enumerate(kernels):
        x = LABEL_WIDTH + CELL * li + CELL / 2
        out.append(f'<text x="{x:.0f}" y="{HEAD - 6}" transform="rotate(-60 {x:.0f} {HEAD - 6})">'
                   f'{li} {escape(name)}</text>')
        out.append(f'<line x1="{LABEL_WIDTH + CELL * li}" y1="{HEAD}" x2="{LABEL_WIDTH + CELL * li}" '
                   f'y2="{height - 10}" stroke="#eee"/>')
    for ri, (label, rule, spans) in enumerate(rows):
        y = HEAD + ROW * ri
        out.append(f'<text x="4" y="{y + ROW - 5}">{escape(label[:24])} <tspan fill="{COLOURS[rule]}">{rule}'
                   f'</tspan></text>')
        for si, (value, first, last, in_place) in enumerate(spans):
            colour = COLOURS["B3"] if in_place else COLOURS["B1"] if rule == "B1" else SHADES[si % 2]
            x = LABEL_WIDTH + CELL * first + 2
            w = CELL * (last - first + 1) - 4
            what = "written in place" if in_place else "live"
            out.append(f'<rect x="{x}" y="{y + 2}" width="{w}" height="{ROW - 4}" rx="3" fill="{colour}">'
                       f'<title>{escape(value)}: {what} from launch {first} to {last}</title></rect>')
            if in_place:  # the launch that overwrites it
                out.append(f'<rect x="{x + w - 8}" y="{y + 2}" width="8" height="{ROW - 4}" fill="#6e2c00"/>')
    out.append("</svg>")
    return "\n".join(out)
