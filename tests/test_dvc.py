"""End to end through DVC on tiny settings: `dvc repro` twice, `dvc exp run --temp`, and a
multi30k data experiment from the local mirror, in a committed copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, VENV_BIN
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

TINY = {
    "data": {"sample": {"num_pairs": 400, "valid_fraction": 0.1, "test_fraction": 0.1},
             "max_len": 20, "min_freq": 1},
    "model": {"emb_dim": 16, "hidden_dim": 32, "num_layers": 1},
    "train": {"epochs": 2, "batch_size": 32, "num_workers": 1},
    "tune": {"num_samples": 2},
    "evaluate": {"beam_size": 2, "num_examples": 3},
    "ray": {"num_cpus": 2},
}  # fmt: skip


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # stage commands: `pipeline ...`
    env.pop("SEQ2SEQ_DATA_MIRROR", None)
    return env


def _sh(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600):
    res = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    assert res.returncode == 0, f"{args} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tracked project files, tiny params, `git init` and one commit."""
    dest = tmp_path_factory.mktemp("proj")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _sh(["git", "init", "-q"], dest)
    _sh([*git, "add", "-A"], dest)
    _sh([*git, "commit", "-qm", "tiny"], dest)
    return dest


def _runs(root: Path, experiment: str = "seq2seq-sample-de-en"):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} in {root}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_dvc_repro_runs_every_stage_then_nothing(project):
    dvc = str(VENV_BIN / "dvc")
    first = _sh([dvc, "repro"], project)
    for stage in ("download", "clean", "tokenize", "reverse", "tune", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (project / "models/best/checkpoint.pt").exists()
    shown = json.loads(_sh([dvc, "metrics", "show", "--json"], project).stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/eval.json"]["data"]
    assert 0.0 <= metrics["test_bleu"] <= 100.0 and metrics["test_ppl"] > 1.0
    second = _sh([dvc, "repro"], project)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout
    runs = _runs(project)
    parents = [r for r in runs if r.data.tags.get("mlflow.runName", "").startswith("sweep")
               or "mlflow.parentRunId" not in r.data.tags and "trial_id" not in r.data.tags
               and r.info.run_name != "evaluate"]  # fmt: skip
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert [r.info.run_name for r in runs].count("evaluate") == 1


def test_dvc_plots_show_finds_every_declared_plot_in_the_real_outputs(project, tmp_path):
    dvc = str(VENV_BIN / "dvc")
    _sh([dvc, "repro"], project)  # a no-op after the test above; the whole pipeline if run alone
    shown = json.loads(_sh([dvc, "plots", "show", "--json"], project).stdout)
    # the stages' figures
    images = ("models/learning_curves.png", "metrics/bleu_by_length.png",
              "metrics/bleu_by_rank.png", "metrics/encoder_pca.png")  # fmt: skip
    errors = shown.get("errors", [])
    assert not [e for e in errors if e.get("source") not in images], errors
    kinds = {name: {r["type"] for r in renders} for name, renders in shown["data"].items()}
    curves = sorted(n for n in kinds if n.startswith("models/curves/"))
    assert len(curves) == 2 and all(kinds[n] == {"vega"} for n in curves)  # one per trial
    assert kinds["metrics/bleu_by_length.json"] == kinds["metrics/bleu_by_rank.json"] == {"vega"}
    for image in images:
        assert kinds.get(image) == {"image"}, f"{image} was not written: {errors}"
    out = _sh([dvc, "plots", "show", "-o", str(tmp_path / "plots")], project)
    html = (tmp_path / "plots" / "index.html").read_text(encoding="utf8")
    assert "index.html" in out.stdout and "cdn.jsdelivr.net" not in html  # offline template


def test_dvc_exp_run_temp_logs_into_the_projects_store(project):
    before = len(_runs(project))
    _sh([str(VENV_BIN / "dvc"), "exp", "run", "--temp", "-S", "tune.num_samples=1"], project)
    after = _runs(project)
    # one more sweep parent, one trial, one evaluate run: all in the project's mlflow.db
    assert len(after) == before + 3
    assert not list((project / ".dvc").rglob("mlflow.db"))


def test_dvc_exp_run_multi30k_data_stages_from_the_mirror(project, multi30k_dir):
    env = {**_env(), "SEQ2SEQ_DATA_MIRROR": str(multi30k_dir)}
    args = [str(VENV_BIN / "dvc"), "exp", "run", "-S", "data.corpus=multi30k", "reverse"]
    _sh(args, project, env=env)
    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert manifest["corpus"] == "multi30k"
    assert manifest["splits"]["train"]["pairs"] == 29_000
    meta = json.loads((project / "data/prepared/meta.json").read_text())
    assert meta["rows"]["train"] > 25_000 and meta["reverse_source"] is True  # max_len 20
