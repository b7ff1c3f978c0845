"""kgen report: the page for the mlp128 and cnn training steps is valid, self-contained HTML
holding every kernel with its source and figures, its provenance links resolve, and a real
browser (headless Chromium, when installed) renders it without console errors."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import kgen
from kgen import cli
from kgen.report.collect import kernel_anchor

CNN_PAGE_BYTES = 1_000_000  # the cnn training step's page stays under this (README, DESIGN.md)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HISTORY = {"loss": [2.3, 1.1, 0.7], "accuracy": [0.2, 0.6, 0.8], "val_loss": [2.2, 1.3, 0.9],
           "val_accuracy": [0.25, 0.55, 0.7]}


class Page(HTMLParser):
    """The page's ids, links and tag structure; `problems` lists tags left open or closed
    out of order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems, self.ids, self.links, self.sources = [], [], [], [], []
        self.feed(text)
        self.close()
        self.problems += [f"<{tag}> never closed" for tag in self.stack]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        for name, value in attrs.items():
            if name.endswith("href"):
                self.links.append(value)
            if name == "src":
                self.sources.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _step(name: str, batch: int):
    spec, model = cli._spec_and_model(name)
    x, y = cli._example_batch(spec, batch)
    return cli._step(spec, model, x, y, train=True), x, y


@pytest.fixture(scope="module")
def mlp_page(tmp_path_factory):
    """mlp128's training step through the command, with --check and --history."""
    where = tmp_path_factory.mktemp("mlp")
    (where / "run.json").write_text(json.dumps(HISTORY))
    out = where / "mlp128.html"
    assert cli.main(["report", "mlp128", "--train", "--batch", "4", "--target", "sm_80", "--check",
                     "--history", str(where / "run.json"), "--out", str(out)]) == 0
    step, _, _ = _step("mlp128", 4)
    return out, step


@pytest.fixture(scope="module")
def cnn_page(tmp_path_factory):
    """cnn's training step through kgen.report."""
    step, _, _ = _step("cnn", 2)
    out = kgen.report(step, tmp_path_factory.mktemp("cnn") / "cnn.html", sizes={"N": 2}, targets=["sm_80"],
                      title="cnn training step")
    return out, step


@pytest.fixture(params=["mlp", "cnn"])
def page(request):
    return request.getfixturevalue(f"{request.param}_page")


def test_the_page_is_valid_html_with_unique_ids(page):
    path, _ = page
    parsed = Page(path.read_text())
    assert not parsed.problems, parsed.problems[:5]
    assert len(parsed.ids) == len(set(parsed.ids)), "ids repeat"


def test_every_kernel_has_its_section_source_figures_and_targets(page):
    path, step = page
    text = path.read_text()
    assert len(step.kernels) == {"k0_matmul": 6}.get(step.kernels[0].name, 10)  # DESIGN.md's pinned counts
    for kernel in step.kernels:
        start = text.index(f'<section class="kernel" id="{kernel_anchor(kernel.name)}">')
        section = text[start:text.index("</details></section>", start)]
        assert f"def {kernel.name}(" in section
        assert "read B" in section and "flops" in section and "registers" in section
        assert re.search(r"<td>sm_80</td><td class=\"n\">\d+</td>", section), "registers for sm_80"
        assert "us (" in section, "the cost model's predicted time"
        assert 'class="ln"' in section, "source lines linked to the IR nodes they compute"
        assert "<h4>Fusion</h4>" in section


def test_provenance_links_resolve_and_nothing_is_fetched(page):
    path, _ = page
    text = path.read_text()
    parsed = Page(text)
    ids = set(parsed.ids)
    local = [link for link in parsed.links if link.startswith("#")]
    assert not [link for link in parsed.links if not link.startswith("#")], "links leave the page"
    assert not parsed.sources, "the page loads something"
    assert "<script" not in text and "url(http" not in text and "@import" not in text
    missing = sorted({link for link in local if link[1:] not in ids})
    assert not missing, missing[:5]
    assert sum(link.startswith("#n") for link in local) > 20, "IR nodes linked from source lines"
    assert sum(link.startswith("#kernel-") for link in local) > 20, "IR nodes linked to their kernels"


def test_roofline_and_buffer_timeline_are_inline_svg(page):
    text = page[0].read_text()
    roofline = text[text.index('<figure id="roofline-sm_80">'):]
    assert roofline.index("<svg") < roofline.index("</figure>")
    buffers = text[text.index('<section id="buffers">'):]
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="timeline"' in buffers
    assert "B3" in buffers and "written in place" in buffers


def test_check_and_history(mlp_page):
    text = mlp_page[0].read_text()
    assert text.count("kgen.check: max error") == len(mlp_page[1].kernels)
    history = text[text.index('<section id="history">'):]
    assert history.count('<polyline class="series"') == len(HISTORY)
    assert 'id="curve-loss"' in history and 'id="curve-accuracy"' in history


def test_the_cnn_page_stays_small(cnn_page):
    assert cnn_page[0].stat().st_size < CNN_PAGE_BYTES


def test_kgen_report_is_the_function_and_bad_history_is_refused(tmp_path, capsys):
    import sys

    import kgen.report  # noqa: F401 (the submodule's import leaves kgen.report the function, as kgen.check)
    assert callable(kgen.report) and kgen.report is sys.modules["kgen.report"].report
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"loss": ["high"]}))
    assert cli.main(["report", "linreg", "--history", str(bad), "--target", "sm_80", "--batch", "2",
                     "--out", str(tmp_path / "r.html")]) == 2
    assert "history: 'loss': expected a list of numbers" in capsys.readouterr().err
    assert cli.main(["report", "linreg", "--target", "sm_7", "--out", str(tmp_path / "r.html")]) == 2
    assert "unknown target 'sm_7'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _browser():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH (.ci/run installs Debian's chromium)")
def test_a_real_browser_renders_every_kernel_without_console_errors(cnn_page, tmp_path):
    path, step = cnn_page
    flags = [_browser(), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dumped = subprocess.run(flags + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    for kernel in step.kernels:
        assert f'id="{kernel_anchor(kernel.name)}"' in dumped.stdout
    console = [line for line in dumped.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "page.png"
    shown = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri()],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_artifact_directory_reports_from_its_manifest(tmp_path, capsys):
    artifact, out = tmp_path / "mlp64.kgen", tmp_path / "artifact.html"
    assert cli.main(["compile", "mlp64", "--out", str(artifact), "--target", "sm_80", "--batch", "4",
                     "--workers", "1"]) == 0
    assert cli.main(["report", str(artifact), "--out", str(out)]) == 0
    text = out.read_text()
    parsed = Page(text)
    assert not parsed.problems and len(parsed.ids) == len(set(parsed.ids))
    assert all(link[1:] in set(parsed.ids) for link in parsed.links)
    names = json.loads((artifact / "manifest.json").read_text())["launch_order"]
    for name in names:
        assert f'id="{kernel_anchor(name)}"' in text and f"def {name}(" in text
    assert text.count("<td>sm_80</td>") == len(names) and "need the program" in text
