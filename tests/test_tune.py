"""pipeline.stages.tune: search space, sizing, and (slow) real sweeps on Ray with their MLflow
contents, exported best model, trials table and curves; an interrupted sweep resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_prepared, pipeline_cmd, tiny_params
from mlflow.tracking import MlflowClient

from pipeline import raycluster, tracking
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages import tune


# ----------------------------------------------------------------------------------- unit
def test_search_space_maps_each_distribution() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    cfg = Config().with_overrides(
        {
            "tune.search_space": {
                "model.num_layers": {"choice": [1, 2]},
                "model.dropout": {"uniform": [0.0, 0.4]},
                "train.lr": {"loguniform": [1e-4, 1e-2]},
                "model.hidden_dim": {"randint": [16, 64]},
            }
        }
    )
    space = tune.search_space(cfg)
    assert isinstance(space["model.num_layers"], Categorical)
    assert space["model.num_layers"].categories == [1, 2]
    assert isinstance(space["model.dropout"], Float) and space["model.dropout"].upper == 0.4
    assert isinstance(space["train.lr"], Float) and space["train.lr"].lower == 1e-4
    assert isinstance(space["model.hidden_dim"], Integer)


def test_trial_name_is_readable() -> None:
    name = tracking.trial_name({"model.dropout": 0.123456, "model.num_layers": 2})
    assert name == "dropout=0.123 num_layers=2"


def test_trials_that_fit() -> None:
    cfg = Config().with_overrides({"train.num_workers": 2})
    assert raycluster.trials_that_fit(cfg, cpus=2, gpus=0, gpu=False) == 1
    assert raycluster.trials_that_fit(cfg, cpus=8, gpus=0, gpu=False) == 4
    assert raycluster.trials_that_fit(cfg, cpus=1, gpus=0, gpu=False) == 1  # at least one
    assert raycluster.trials_that_fit(cfg, cpus=16, gpus=4, gpu=True) == 2
    fixed = cfg.with_overrides({"tune.max_concurrent_trials": 3})
    assert raycluster.trials_that_fit(fixed, cpus=2, gpus=0, gpu=False) == 3


def test_trial_processes_import_no_mlflow_and_no_cli() -> None:
    """What a trial's Ray processes import (the trainable's module, the controller's callbacks,
    the workers' loop) leaves MLflow out (about 1 s of CPU each) and the CLI (Typer and every
    command's imports: `pipeline.app` is imported on first use)."""
    import sys

    code = (
        "import sys; import pipeline.trial, pipeline.raycluster, pipeline.runs, "
        "pipeline.trainloop; print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'mlflow', 'typer'}), 'pipeline.cli' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
    assert tune.run_trial.__module__ == "pipeline.trial"  # what Tune pickles by reference
    import typer

    import pipeline

    assert isinstance(pipeline.app, typer.Typer) and "app" in dir(pipeline)  # `typer pipeline`


def test_resume_without_a_sweep_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    prepared = make_prepared(tmp_path / "prepared")
    cfg = Config().with_overrides({"paths.prepared": str(prepared)})
    with pytest.raises(UserError, match="no interrupted sweep"):
        tune._sweep_path(cfg, prepared, resume=True)
    root, fresh = tune._sweep_path(cfg, prepared, resume=False)
    assert root.endswith("ray_results/sweeps") and fresh.startswith("tune-")


# ----------------------------------------------------------------------------------- slow
def _env() -> dict:
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    return env


def _project(tmp_path: Path, **overrides: object) -> Path:
    make_prepared(tmp_path / "prepared")
    params = tiny_params(tmp_path / "prepared", train__num_workers=1, **overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _children(tmp_path: Path) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


@pytest.mark.slow
def test_tune_three_samples_logs_parent_and_children(tmp_path: Path) -> None:
    _project(tmp_path)
    proc = subprocess.run(
        pipeline_cmd() + ["tune", "--num-samples", "3"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best trial" in proc.stderr and "mlflow ui" in proc.stderr

    client, parents, children = _children(tmp_path)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert "best_val_bleu" in parent.data.metrics
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["trial_id"] and child.data.tags["corpus"] == "sample"
        assert child.data.tags["stopped_early"] in ("true", "false")
        assert child.data.params["model.emb_dim"] == "16"  # flattened full config
        assert child.data.params["model.num_layers"] in ("1", "2")  # sampled
        history = client.get_metric_history(child.info.run_id, "val_loss")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)) and steps[0] == 1  # one value per epoch
        expected = 2 if child.data.tags["stopped_early"] == "false" else len(steps)
        assert len(steps) == expected

    best = tmp_path / "models" / "best"
    assert {p.name for p in best.iterdir()} == {
        "checkpoint.pt", "config.json", "vocab.src.json", "vocab.tgt.json", "info.json",
    }  # fmt: skip
    info = json.loads((best / "info.json").read_text())
    assert info["sweep_run_id"] == parent.info.run_id and info["dvc_exp"] == "workspace"
    assert info["mlflow_run_id"] in {c.info.run_id for c in children}

    # lineage: every run names the data it read; the parent holds the figure and the model
    for run in (parent, *children):
        names = sorted(i.dataset.name for i in run.inputs.dataset_inputs)
        assert names == ["sample-de-en-train", "sample-de-en-valid"], names
    figures = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
    assert figures == ["figures/learning_curves.png"]
    assert (tmp_path / "models" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    version = client.get_model_version("seq2seq-sample-de-en", "1")
    assert version.run_id == parent.info.run_id and version.tags["dvc_exp"] == "workspace"
    assert str(info["model_version"]) == "1" and info["model_id"] == version.tags["model_id"]
    from seq2seq.checkpoint import load_checkpoint

    assert load_checkpoint(best / "checkpoint.pt").config["model"]["emb_dim"] == 16
    top = tmp_path / "models" / "top"  # ensemble members: every trial (3 <= tune.export_top 5)
    members = json.loads((top / "members.json").read_text())
    assert [m["rank"] for m in members] == [1, 2, 3] and members[0]["trial"] == info["trial_id"]
    ranked = [m["val_bleu"] for m in members]
    assert ranked == sorted(ranked, reverse=True)
    first, exported = load_checkpoint(top / "1"), load_checkpoint(best)
    assert first.optimizer_state is None and first.epoch == exported.epoch
    assert all(v.equal(exported.model_state[k]) for k, v in first.model_state.items())
    with open(tmp_path / "models" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {r["mlflow_run_id"] for r in rows} == {c.info.run_id for c in children}
    curves = sorted((tmp_path / "models" / "curves").glob("*.csv"))
    assert len(curves) == 3
    assert curves[0].read_text().startswith("epoch,train_loss,val_loss,val_ppl,val_bleu")


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    _project(tmp_path, tune__max_concurrent_trials=1, tune__grace_period=2)
    cmd = pipeline_cmd() + ["tune", "--num-samples", "3"]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stderr=log, stdout=log, text=True)
    deadline = time.time() + 300
    while "finished after" not in (tmp_path / "first.log").read_text():
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no trial finished in time"
        time.sleep(1)
    first.send_signal(signal.SIGINT)  # Ctrl-C: the sweep is interrupted
    assert first.wait(timeout=120) == 2  # interrupted: a one-line error, nothing exported
    log.close()
    text = (tmp_path / "first.log").read_text()
    assert "pipeline tune --resume" in text
    assert not (tmp_path / "models" / "best").exists()
    _, parents, children = _children(tmp_path)
    assert parents[0].info.status == "KILLED"  # until resumed; no trial's run left RUNNING
    assert "RUNNING" not in {c.info.status for c in children}
    done_first = [line.split()[0] for line in text.splitlines() if "finished after" in line]
    assert 1 <= len(done_first) < 3

    again = subprocess.run(
        cmd + ["--resume"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=500
    )
    assert again.returncode == 0, again.stderr[-3000:]
    for trial in done_first:  # finished trials are not trained again
        assert f"{trial} epoch" not in again.stderr
    client, parents, children = _children(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert steps == sorted(set(steps)), f"epochs logged twice: {steps}"
    with open(tmp_path / "models" / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
