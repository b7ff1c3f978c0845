"""The report as one self-contained HTML page: inline CSS and SVG, no scripts, no network.
Every IR node has an id (`n3`, `in-x`) and links to the kernels computing it; every source
line naming a node links back to it (highlighted on hover, the node's IR line as its
tooltip); clicking either way highlights the target (CSS :target)."""
from __future__ import annotations

from html import escape

from kgen.report.collect import kernel_anchor
from kgen.report.curves import charts
from kgen.report.roofline import chart
from kgen.report.timeline import timeline

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 0;z-index:1}
nav a{margin-right:12px}
pre{font:12px/1.35 ui-monospace,monospace;background:#f7f7f7;padding:8px;overflow-x:auto;margin:4px 0}
.ir span,.src span{display:block;white-space:pre}
.src a.ln{color:inherit;text-decoration:none;display:block}
.src a.ln:hover,.ir span:hover{background:#ffe9a8}
.ir span:target,section:target>h3{background:#f9d976}
.ir a.k{color:#2e86c1;margin-left:1em;text-decoration:none}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
section.kernel{border-top:2px solid #2e86c1;margin-top:18px}
.ok{color:#1e8449}.bad{color:#c0392b;font-weight:bold}
details>summary{cursor:pointer;color:#555}
"""


def _num(value) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def _table(header: list, rows: list) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{_num(c)}</td>' if c is None or isinstance(c, (int, float))
                                     and not isinstance(c, bool) else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def summary(data: dict) -> str:
    s = data["summary"]
    fused, unfused, b = s["fused"], s["unfused"], s["buffers"]
    rows = [["fused (kgen)", fused["launches"], fused["bytes"], fused["flops"]]]
    if unfused is not None:
        rows.append(["unfused (one kernel per op)", unfused["launches"], unfused["bytes"], unfused["flops"]])
    sizes = ", ".join(f"{k}={v}" for k, v in data["sizes"].items()) or "static"
    notes = [f"{escape(what)}: {s[key]:.2f} s" for what, key in
             (("trace and compile", "compile_seconds"), ("AOT compile for the targets", "aot_seconds"))
             if s.get(key) is not None]
    if b is not None:
        notes.append(f"buffer plan: {b['slots']} slots, {b['slot_bytes']:,} B ({b['unshared_bytes']:,} B without "
                     f"reuse); {b['inplace']} updates in place")
    notes.append("versions: " + ", ".join(f"{k} {escape(v)}" for k, v in data["versions"].items()))
    if s.get("note"):
        notes.append(escape(s["note"]))
    return (f'<section id="summary"><h2>Summary</h2>'
            f"<p>Per step at {escape(sizes)}; targets {escape(', '.join(data['targets']) or 'none')}.</p>"
            + _table(["", "launches", "bytes", "flops"], rows)
            + "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul></section>")


def graph(data: dict) -> str:
    lines = []
    for node_id, text, kernels in data["graph"]:
        links = "".join(f'<a class="k" href="#{kernel_anchor(k)}">&rarr; {escape(k)}</a>' for k in kernels)
        ident = f' id="{node_id}"' if node_id else ""
        lines.append(f"<span{ident}>{escape(text)}{links}</span>")
    return f'<section id="ir"><h2>IR</h2><pre class="ir">{"".join(lines)}</pre></section>'


def _source(lines: list) -> str:
    out = []
    for code, target, title in lines:
        if target:
            out.append(f'<a class="ln" href="#{target}" title="{escape(title)}">{escape(code) or " "}</a>')
        else:
            out.append(f"<span>{escape(code) or ' '}</span>")
    return f'<pre class="src">{"".join(out)}</pre>'


def _why(why: dict) -> str:
    if not why:
        return ""
    parts = why["kernels"]
    out = []
    if len(parts) > 1:
        out.append(f"<p>L1: {len(parts)} kernels that do not depend on each other share this launch "
                   f"(a combo kernel): {escape(', '.join(k['name'] for k in parts))}</p>")
    for k in parts:
        rows = [["writes", escape(value), escape(rule), escape(reason)]
                for value, rules in k["writes"] for rule, reason in (rules or [("", "(no rule recorded)")])]
        rows += [[outcome, escape(value), escape(rule), escape(reason)]
                 for outcome in ("fused", "refused", "moved") for value, rule, reason in k[outcome]]
        reads = ", ".join(escape(value) + (f' (<a href="#{kernel_anchor(src)}">{escape(src)}</a>)'
                                           if src not in ("input", "constant") else f" ({src})")
                          for value, src in k["reads"])
        title = f"<p><b>{escape(k['name'])}</b></p>" if len(parts) > 1 else ""
        out.append(title + _table(["", "value", "rule", "why"], rows) + (f"<p>reads {reads}</p>" if reads else ""))
    return "<h4>Fusion</h4>" + "".join(out)


def _targets(k: dict) -> str:
    rows = []
    for target, f in k["targets"].items():
        if f["error"]:
            rows.append([escape(target), f'<span class="bad">{escape(f["error"])}</span>', "", "", "", "", "", ""])
            continue
        occupancy = f"{f['occupancy']:.0%} ({f['blocks_per_sm']} blocks/SM)" if "occupancy" in f else "-"
        predicted = f"{f['predicted_us']:.2f} us ({escape(f['bound'])})" if "predicted_us" in f else "-"
        config = ", ".join(f"{k}={v}" for k, v in f["config"].items())
        chosen = {True: "tuned", False: "default", None: "the artifact's"}[f["tuned"]]
        key = f"<code>{f['key']}</code>" if f["key"] else "-"
        rows.append([escape(target), f["registers"], f["spill_bytes"], f["shared_bytes"], occupancy, predicted,
                     f"{escape(config)} ({chosen})", key])
    return _table(["target", "registers", "spill B", "shared B", "occupancy", "predicted", "config", "cache key"],
                  rows)


def kernel(k: dict) -> str:
    check = ""
    if k["check"] is not None:
        c = k["check"]
        check = (f'<p>kgen.check: max error {c["error"]:.2e} (tolerance {c["tolerance"]:.1e}) '
                 f'<span class="{"ok" if c["ok"] else "bad"}">{"ok" if c["ok"] else "FAIL"}</span></p>')
    parts = f" (parts: {escape(', '.join(k['parts']))})" if k["parts"] else ""
    figures = _table(["read B", "written B", "flops", "reads", "writes"],
                     [[k["bytes_read"], k["bytes_written"], k["flops"], escape(", ".join(k["reads"])),
                       escape(", ".join(k["writes"]))]])
    return (f'<section class="kernel" id="{kernel_anchor(k["name"])}">'
            f'<h3>launch {k["launch"]}: {escape(k["name"])} <small>{escape(k["kind"])}{parts}</small></h3>'
            + figures + check + _targets(k) + _why(k["why"])
            + f"<details open><summary>Triton source</summary>{_source(k['lines'])}</details></section>")


def rooflines(data: dict) -> str:
    drawn = [(t, *chart(data["kernels"], t, f"roof-{t}")) for t in data["targets"]]
    body = "".join(f'<figure id="roofline-{t}">{svg}</figure>' if svg else f"<p>{escape(t)}: no roofline: "
                   f"{escape(why)}</p>" for t, svg, why in drawn)
    return f'<section id="roofline"><h2>Roofline</h2>{body}</section>'


def buffers(data: dict) -> str:
    names = [k["name"] for k in data["kernels"]]
    return (f'<section id="buffers"><h2>Buffer plan</h2><p>Slots (B2) reused across launches, state updated '
            f'in place (B3, orange: from its first reader to the launch that overwrites it), fresh outputs '
            f'(B1). Hover a bar for its value.</p>{timeline(data["buffers"], names)}</section>')


def history(data: dict) -> str:
    if not data.get("history"):
        return ""
    svgs = "".join(f'<figure id="curve-{escape(m)}">{svg}</figure>' for m, svg in charts(data["history"]))
    return f'<section id="history"><h2>Training</h2>{svgs}</section>'


def render(data: dict) -> str:
    """The whole page for `data` (kgen.report.collect.collect)."""
    sections = [summary(data), graph(data), '<section id="kernels"><h2>Kernels, in launch order</h2>'
                + "".join(kernel(k) for k in data["kernels"]) + "</section>", rooflines(data), buffers(data),
                history(data)]
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (("summary", "summary"), ("ir", "IR"),
                                                            ("kernels", "kernels"), ("roofline", "roofline"),
                                                            ("buffers", "buffers"))
                  ) + ('<a href="#history">training</a>' if data.get("history") else "")
    title = escape(data["title"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>kgen report: {title}</title>'
            f"<style>{CSS}</style></head><body><h1>kgen report: {title}</h1><nav>{nav}</nav>"
            + "\n".join(sections) + "</body></html>\n")
