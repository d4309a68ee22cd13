"""`mlflow ui` shows a sweep as users see it: a real headless Chromium, driven by Playwright.

Runs when Chromium and Playwright are installed (`INSTALL_BROWSER=1 bash scripts/install.sh`,
which CI uses); skipped otherwise. The store is written by the same tracking functions the
sweep uses (a parent run, three child runs with per-epoch metrics).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import VENV_BIN
from mlflow.tracking import MlflowClient

from pipeline import tracking
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


def _sweep(db: Path) -> tuple[str, list[str]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    client.search_experiments(max_results=1)
    exp = tracking.ensure_experiment(client, tracking.experiment_name(Config()))
    parent = tracking.open_run(client, exp, "sweep-ui", name="sweep-ui", tags={"corpus": "sample"})
    kids = []
    for i, bleu in BLEU.items():
        params = tracking.config_params(Config())
        run = tracking.open_run(client, exp, f"trial-{i}", name=f"trial_{i}", parent_id=parent,
                                tags={"trial_id": f"t{i}"}, params=params)  # fmt: skip
        for epoch in (1, 2):
            tracking.log_epoch(client, run, {"epoch": epoch, "val_loss": 3.0 / epoch,
                                             "val_bleu": bleu / (3 - epoch)})  # fmt: skip
        tracking.close_run(client, run)
        kids.append(run)
    tracking.close_run(client, parent)
    return exp, kids


@pytest.fixture
def ui(tmp_path):
    db = tmp_path / "mlflow.db"
    exp, kids = _sweep(db)
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
        yield url, exp, kids
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_experiment_page_lists_trials_with_val_bleu_and_compare_opens(ui):
    url, exp, kids = ui
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 2000, "height": 1000})
        page.goto(f"{url}/#/experiments/{exp}/runs?workflowType=machine_learning")
        page.get_by_text("sweep-ui", exact=True).wait_for(timeout=60_000)
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
