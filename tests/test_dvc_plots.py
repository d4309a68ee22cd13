"""`dvc plots show` renders offline: every plot of dvc.yaml in a real headless Chromium.

DVC's default page loads Vega from a CDN and is blank without internet; the committed
.dvc/config points `plots.html_template` at vendor/vega/dvc_plots.html, which inlines vega,
vega-lite and vega-embed. A temporary git+DVC repo gets the project's dvc.yaml, params.yaml,
.dvc/config and template, small fabricated plot inputs at the paths the stages write (two trial
curves, BLEU by length, the two PNG figures), then a plain `dvc plots show`. The page is opened
from file:// with every other request refused: data plots must draw (canvas/SVG), images load.

The non-browser checks run everywhere; the page check runs when Chromium and Playwright are
installed (`INSTALL_BROWSER=1 bash scripts/install.sh`, as CI does) and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import ROOT, VENV_BIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TEMPLATE = ROOT / "vendor" / "vega" / "dvc_plots.html"
DATA_PLOTS = ["models/curves/trial_0.csv", "models/curves/trial_1.csv",
              "metrics/bleu_by_length.json", "metrics/bleu_by_rank.json"]  # fmt: skip
IMAGE_PLOTS = [
    "models/learning_curves.png",
    "metrics/bleu_by_length.png",
    "metrics/bleu_by_rank.png",
    "metrics/encoder_pca.png",
]
CURVE = "epoch,train_loss,val_loss,val_ppl,val_bleu\n1,4.1,3.6,36.6,{b1}\n2,3.2,3.3,27.1,{b2}\n"
BUCKETS = [
    {"bucket": "1-10", "lo": 1, "hi": 10, "n": 40, "bleu": 31.5},
    {"bucket": "11-20", "lo": 11, "hi": 20, "n": 35, "bleu": 22.25},
    {"bucket": "21+", "lo": 21, "hi": None, "n": 0, "bleu": None},
]


RANKS = [
    {"bucket": "3-40", "lo": 3.2, "hi": 40.5, "n": 38, "bleu": 35.0},
    {"bucket": "41-900", "lo": 41.0, "hi": 900.0, "n": 37, "bleu": 18.5},
]


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd / "home")}  # the default remote lives under ~/.cache
    res = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, f"dvc {args} failed:\n{res.stdout}\n{res.stderr}"
    return res


def _png(path: Path, width: int = 120, height: int = 80) -> None:
    """A small valid RGB PNG (a gradient): a stand-in for the pipeline's matplotlib figures."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\0" + bytes(c for x in range(width) for c in (2 * x % 256, 3 * y % 256, 128))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A git+DVC repo with the project's DVC files and fabricated plot inputs."""
    repo = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(["init", "-q"], repo)
    for rel in (".dvc/config", "dvc.yaml", "params.yaml", "vendor/vega/dvc_plots.html"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    (repo / "models" / "curves").mkdir(parents=True)
    (repo / "metrics").mkdir()
    for i, (b1, b2) in enumerate([(2.0, 5.5), (1.0, 3.25)]):
        (repo / f"models/curves/trial_{i}.csv").write_text(CURVE.format(b1=b1, b2=b2))
    (repo / "metrics/bleu_by_length.json").write_text(json.dumps(BUCKETS))
    (repo / "metrics/bleu_by_rank.json").write_text(json.dumps(RANKS))
    (repo / "metrics/eval.json").write_text('{"test_bleu": 21.5, "test_chrf": 40.1}')
    for rel in IMAGE_PLOTS:
        _png(repo / rel)
    return repo


@pytest.fixture(scope="module")
def page_html(plots_repo) -> Path:
    out = _dvc(["plots", "show"], plots_repo)  # no flags: the template comes from .dvc/config
    index = plots_repo / "dvc_plots" / "index.html"
    assert index.as_uri() in out.stdout
    return index


def test_dvc_yaml_declares_data_and_image_plots(plots_repo):
    shown = json.loads(_dvc(["plots", "show", "--json"], plots_repo).stdout)
    assert not shown.get("errors")
    kinds = {name: {r["type"] for r in renders} for name, renders in shown["data"].items()}
    assert kinds == {**{p: {"vega"} for p in DATA_PLOTS}, **{p: {"image"} for p in IMAGE_PLOTS}}


def test_page_inlines_vega_and_loads_nothing_from_a_cdn(page_html):
    html = page_html.read_text(encoding="utf8")
    assert "cdn.jsdelivr.net" not in html and "<script src=" not in html
    for lib in ("vega@5", "vega-lite@5", "vega-embed@6"):
        assert lib in html
    for rel in IMAGE_PLOTS:  # DVC copies images next to the page
        assert (page_html.parent / "static" / f"workspace_{rel.replace('/', '_')}").is_file()


@pytest.mark.browser
def test_every_plot_renders_offline_in_chromium(page_html):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed")
    requested, errors = [], []

    def offline(route) -> None:  # anything but the page's own files is refused
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1200})
            context.route("**/*", offline)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_html.as_uri())
            charts = page.locator(".vega-embed canvas, .vega-embed svg.marks")
            charts.nth(len(DATA_PLOTS) - 1).wait_for(timeout=30_000)
            divs = page.locator("div[id]").evaluate_all("els => els.map(e => e.id)")
            for rel in DATA_PLOTS:
                div = rel.replace("/", "_").replace(".", "_")
                assert div in divs
                size = page.locator(f"#{div} canvas, #{div} svg.marks").first.bounding_box()
                assert size and size["width"] > 100 and size["height"] > 100, (rel, size)
            images = page.locator("img").evaluate_all(
                "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
            )
            assert len(images) == len(IMAGE_PLOTS)
            assert all(done and width > 0 for _, done, width in images), images
            text = page.inner_text("body")
            assert all(rel in text for rel in IMAGE_PLOTS)
        finally:
            browser.close()
    assert not errors, errors
    assert not requested, f"the page asked the network for {requested}"
