"""`mlflow ui` shows a sweep as users see it: a real headless Chromium, driven by Playwright.

Runs when Chromium and Playwright are installed (`INSTALL_BROWSER=1 bash scripts/install.sh`,
which CI uses); skipped otherwise. The store is written by the same functions the stages use: a
sweep (parent run, three child runs with per-epoch metrics and dataset inputs, the learning-curves
figure and the registered pyfunc model on the parent) and an evaluate run with its figure. Each
browser starts with a fresh profile, as a newcomer's would.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from conftest import VENV_BIN, make_best, make_prepared
from mlflow.tracking import MlflowClient

from pipeline import figures, registry, tracking
from pipeline.config import Config

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed", allow_module_level=True)

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BLEU = {0: 10.0, 1: 12.5, 2: 7.25}  # each trial's last val_bleu
TEST_BLEU = 9.75
MODEL = "seq2seq-sample-de-en"


def _sweep(root: Path) -> tuple[str, str, list[str]]:
    """A sweep and an evaluate run as the stages log them, into root/mlflow.db."""
    prepared = make_prepared(root / "data" / "prepared")
    cfg = Config().with_overrides({"paths.prepared": str(prepared), "model.emb_dim": 8,
                                   "model.hidden_dim": 16, "model.num_layers": 1})  # fmt: skip
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    client.search_experiments(max_results=1)
    exp = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    params = tracking.config_params(cfg)
    sweep = tracking.SweepTracker(
        client, exp, "sweep-ui", tags={"corpus": "sample"}, params=params, epochs=2,
        inputs=tracking.dataset_inputs(cfg, ["train", "valid"]),
    )  # fmt: skip
    curves = {}
    for i, bleu in BLEU.items():
        run = sweep.trial_started(f"t{i}", f"trial_{i}", cfg)
        client.set_tag(run, "mlflow.runName", f"trial_{i}")
        rows = [{"epoch": e, "val_loss": 3.0 / e, "val_bleu": bleu / (3 - e)} for e in (1, 2)]
        for row in rows:
            sweep.trial_result(f"t{i}", row)
        sweep.trial_finished(f"t{i}")
        curves[f"t{i}"] = pl.DataFrame(rows)
    parent = sweep.parent_id
    tracking.log_summary(client, parent, {"val_bleu": BLEU[1], "trial": "t1"})
    png = figures.learning_curves(curves, root / "models" / "learning_curves.png", best="t1")
    client.log_artifact(parent, str(png), "figures")
    registry.log_best_model(
        client, cfg, parent, make_best(cfg, root / "models" / "best"), tags={"sweep": "ui"}
    )
    tracking.close_run(client, parent)

    evaluation = client.create_run(exp, run_name="evaluate").info.run_id
    tracking.log_inputs(client, evaluation, tracking.dataset_inputs(cfg, ["test"]))
    client.log_metric(evaluation, "test_bleu", TEST_BLEU)
    buckets = [{"bucket": "1-10", "lo": 1, "hi": 10, "n": 24, "bleu": TEST_BLEU}]
    png = figures.bleu_bars(buckets, root / "metrics" / "bleu_by_length.png")
    client.log_artifact(evaluation, str(png), "figures")
    client.set_terminated(evaluation)
    return exp, parent, list(sweep.runs.values())


@pytest.fixture
def ui(tmp_path):
    exp, parent, kids = _sweep(tmp_path)
    db = tmp_path / "mlflow.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not come up within 60 s")
        yield url, exp, parent, kids
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_experiment_page_lists_trials_with_val_bleu_and_compare_opens(ui):
    url, exp, _, kids = ui
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 2000, "height": 1000})
        page.goto(f"{url}/#/experiments/{exp}/runs?workflowType=machine_learning")
        page.get_by_text("sweep-ui", exact=True).first.wait_for(timeout=60_000)
        page.get_by_role("row").filter(has_text="sweep-ui").get_by_role("button").first.click()
        for i in BLEU:
            page.get_by_text(f"trial_{i}", exact=True).wait_for(timeout=30_000)
        page.get_by_role("button", name="Columns").click()
        page.get_by_text("val_bleu", exact=True).first.click()
        page.keyboard.press("Escape")
        page.get_by_role("columnheader", name="val_bleu").first.wait_for(timeout=30_000)
        cells = " ".join(page.get_by_role("gridcell").all_inner_texts())
        for bleu in BLEU.values():
            assert f"{bleu:g}" in cells  # each trial's latest val_bleu is in the table

        page.goto(f"{url}/#/compare-runs?runs={json.dumps(kids)}&experiments={json.dumps([exp])}")
        page.get_by_text("val_bleu").first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert all(f"trial_{i}" in text for i in BLEU)
        browser.close()


def _open_runs_from_home(context, url: str):
    """A newcomer's path: home page -> the experiment -> "Open the runs" in its description
    (MLflow opens experiments in its GenAI view; the link opens a new tab on the runs)."""
    page = context.new_page()
    page.goto(f"{url}/")
    page.get_by_role("link", name=MODEL, exact=True).first.click()  # Recent experiments
    link = page.locator("a", has_text="Open the runs")  # by CSS: a tip may hide it from ARIA
    link.wait_for(timeout=60_000)
    got_it = page.get_by_role("button", name="Got it")  # the GenAI overview's first-visit tip
    with contextlib.suppress(playwright.TimeoutError):  # no tip this time
        got_it.first.click(timeout=10_000)  # its backdrop takes the clicks until dismissed
    with context.expect_page() as opened:
        link.click()
    runs = opened.value
    runs.wait_for_load_state()
    return runs


def test_newcomer_from_home_sees_runs_metrics_datasets_registry_and_figures(ui):
    url, _, _, _ = ui
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 2000, "height": 1000})  # fresh profile
        page = _open_runs_from_home(context, url)
        assert "workflowType=machine_learning" in page.url

        # the saved view: metric columns without touching "Columns"; datasets and the model
        for metric in ("best_val_bleu", "val_bleu", "test_bleu"):
            page.get_by_role("columnheader", name=metric).first.wait_for(timeout=60_000)
        page.get_by_text("sweep-ui", exact=True).first.wait_for(timeout=30_000)
        cells = " ".join(page.get_by_role("gridcell").all_inner_texts())
        assert f"{BLEU[1]:g}" in cells and f"{TEST_BLEU:g}" in cells
        assert "sample-de-en-train" in cells and "sample-de-en-test" in cells
        assert MODEL in cells  # the sweep's registered model in its Models column
        page.get_by_role("row").filter(has_text="sweep-ui").get_by_role("button").first.click()
        for i in BLEU:
            page.get_by_text(f"trial_{i}", exact=True).wait_for(timeout=30_000)
        cells = " ".join(page.get_by_role("gridcell").all_inner_texts())
        assert all(f"{bleu:g}" in cells for bleu in BLEU.values())

        # the Model registry (in the model-training sidebar) lists the sweep's model, version 1
        runs_url = page.url
        page.get_by_role("link", name="Model registry").first.click()
        for href in (f"#/models/{MODEL}", f"#/models/{MODEL}/versions/1"):
            page.locator(f"a[href='{href}']").first.wait_for(timeout=30_000)  # under a promo

        # figures: the sweep's learning curves and evaluate's BLEU by length, shown as images
        for run, figure in (
            ("sweep-ui", "learning_curves.png"),
            ("evaluate", "bleu_by_length.png"),
        ):
            page.goto(runs_url)
            page.get_by_role("link", name=run, exact=True).first.click()
            page.get_by_role("tab", name="Artifacts").first.click()
            page.get_by_text("figures", exact=True).first.click()
            page.get_by_text(figure, exact=True).first.click()
            page.locator("img[src^='blob:']").first.wait_for(timeout=30_000)
        browser.close()
