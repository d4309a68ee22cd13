"""`pipeline train` end to end on Ray (2 CPU workers, gloo), with an injected worker fault:
the worker group restarts from the last checkpoint and the epochs continue, and running the
same command again resumes the stored (finished) run instead of training anew."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import make_prepared, pipeline_cmd, tiny_params
from mlflow.tracking import MlflowClient

from pipeline import trainloop
from seq2seq.precision import bf16_problem

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        full_env.pop(var, None)
    return subprocess.run(
        pipeline_cmd() + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=400
    )


def test_train_two_workers_survives_a_fault_and_resumes(tmp_path: Path) -> None:
    make_prepared(tmp_path / "prepared")
    params = tiny_params(tmp_path / "prepared", train__epochs=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    marker = tmp_path / "fault.marker"
    fault = {trainloop.FAULT_EPOCH_ENV: "2", trainloop.FAULT_MARKER_ENV: str(marker)}

    proc = _run(["train"], tmp_path, fault)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists(), "the fault hook did not fire"
    assert "InjectedFault" in proc.stderr  # the failure happened...
    assert "done: epoch 3/3" in proc.stderr  # ...and training still finished

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2"
    assert run.data.tags["corpus"] == "sample" and run.data.tags["direction"] == "de-en"
    # the restart continued at epoch 2 (from epoch 1's checkpoint): one value per epoch
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3]
    for key in ("val_loss", "val_ppl", "val_bleu", "tokens_per_s", "epoch_seconds", "bf16"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3, key
    # train.bf16 auto: the start-up probe's measured speedup, where bf16 runs on this CPU
    probed = bf16_problem("cpu") is None
    speedups = client.get_metric_history(run.info.run_id, "bf16_speedup")
    assert len(speedups) == (3 if probed else 0)
    assert all(m.value > 0 for m in speedups)
    ckpts = [p for p in (tmp_path / "ray_results").glob("train-*/checkpoint_*") if p.is_dir()]
    assert len(ckpts) == 3 and all((c / "checkpoint.pt").is_file() for c in ckpts)

    # the same command again: the stored run is complete, nothing is retrained or re-logged
    again = _run(["train"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 1/3" not in again.stderr.replace("done: epoch", "")
    assert "done: epoch 3/3" in again.stderr
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 3
