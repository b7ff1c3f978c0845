"""A roofline chart per target, as inline SVG drawn by matplotlib: each kernel placed by its
arithmetic intensity (flops per byte moved) and the throughput the cost model predicts for
it (flops over predicted time), under the target's HBM bandwidth slope and its float32 FMA
and half-precision tensor-core peaks (kgen.autotune.costmodel.GPUS)."""
from __future__ import annotations

import io
import re

from kgen.autotune import costmodel


def points(kernels: list, target: str) -> list:
    """(kernel name, flops per byte, GFLOP/s) for each kernel with flops and a prediction."""
    out = []
    for k in kernels:
        facts = k["targets"].get(target, {})
        if k["flops"] and facts.get("predicted_us"):
            moved = k["bytes_read"] + k["bytes_written"]
            out.append((k["name"], k["flops"] / max(1, moved), k["flops"] / (facts["predicted_us"] * 1e3)))
    return out


def chart(kernels: list, target: str, prefix: str) -> tuple:
    """(the roofline of `target` as an <svg> element, ids prefixed by `prefix` so several
    charts share a page; "") or ("", why there is none)."""
    if target not in costmodel.GPUS:
        return "", f"the cost model has no facts for {target} (it has {', '.join(costmodel.GPUS)})"
    placed = points(kernels, target)
    if not placed:
        return "", "no kernel has both flops and a predicted time"
    try:
        # matplotlib is optional and slow to import: only a report draws with it
        import matplotlib
    except ImportError:
        return "", "matplotlib is not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    from matplotlib import pyplot

    gpu = costmodel.GPUS[target]
    lowest = min(min(p[1] for p in placed) / 4, 0.01)
    highest = max(max(p[1] for p in placed) * 4, 1000.0)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix, "font.size": 8}):
        figure, axes = pyplot.subplots(figsize=(6.4, 3.6))
        for peak, name, style in ((gpu.fp32_tflops, "float32 FMA", "-"), (gpu.fp16_tflops, "fp16 tensor cores", ":")):
            ridge = peak * 1e3 / gpu.hbm_gbps
            axes.plot([lowest, ridge, highest], [lowest * gpu.hbm_gbps, peak * 1e3, peak * 1e3], style,
                      color="#555", linewidth=1, label=f"{name}: {peak:g} TFLOP/s, HBM {gpu.hbm_gbps:g} GB/s")
        axes.scatter([p[1] for p in placed], [p[2] for p in placed], s=14, color="#c0392b", zorder=3)
        for i, (name, x, y) in enumerate(placed):  # labels alternate above and below: kernels often coincide
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3 if i % 2 else -8), fontsize=6)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("arithmetic intensity (flop/byte)")
        axes.set_ylabel("predicted GFLOP/s")
        axes.set_title(f"{target} ({gpu.name})")
        axes.legend(loc="lower right", fontsize=6)
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                        "Type": None})
        pyplot.close(figure)
    return inline_svg(buffer.getvalue(), prefix), ""


def inline_svg(text: str, prefix: str) -> str:
    """matplotlib's SVG document as an element to put in HTML: no XML prologue or metadata,
    every id and reference to one prefixed (ids are unique per page)."""
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', text)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", text)
