"""The `pipeline` command as users reach it: console script, `python -m`, `typer ... run`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, VENV_BIN, pipeline_cmd

STAGES = ["download", "clean", "tokenize", "reverse", "tune", "evaluate"]
COMMANDS = [*STAGES, "train", "translate", "figures"]


def _run(args: list[str], cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "entry",
    [
        pipeline_cmd(),
        [sys.executable, "-m", "pipeline"],
        [str(VENV_BIN / "typer"), "pipeline", "run"],
    ],
    ids=["console-script", "python-m", "typer-run"],
)
def test_every_entry_point_lists_every_stage_command(entry):
    res = _run([*entry, "--help"])
    assert res.returncode == 0, res.stderr
    for command in COMMANDS:
        assert command in res.stdout


def test_tune_help_shows_num_samples_and_resume():
    res = _run([*pipeline_cmd(), "tune", "--help"])
    assert res.returncode == 0
    assert "--num-samples" in res.stdout and "--resume" in res.stdout


def test_bad_override_is_one_line_and_exit_2(tmp_path):
    res = _run([*pipeline_cmd(), "clean", "--params", str(ROOT / "params.yaml"),
                "--set", "data.min_freq=0"], cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "data.min_freq" in lines[0] and "Fix:" in lines[0]


def test_unknown_key_in_params_file_names_its_path(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("  lowercase:", "  lowercse:"))
    res = _run([*pipeline_cmd(), "download", "--params", str(params)], cwd=tmp_path)
    assert res.returncode == 2
    assert "data.lowercse: unknown key" in res.stderr
    assert not (tmp_path / "data").exists()  # rejected before any work started


def test_typer_runner_reports_user_errors_the_same_way(tmp_path):
    typer_run = [str(VENV_BIN / "typer"), "pipeline", "run"]
    args = ["reverse", "--params", str(ROOT / "params.yaml"), "--set", "data.reverse_source=maybe"]
    res = _run([*typer_run, *args], cwd=tmp_path)
    assert res.returncode == 2
    assert "data.reverse_source" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["train", "tune"])
def test_bf16_on_without_bf16_kernels_is_refused_before_any_work(tmp_path, command):
    """On a CPU without bf16 LSTM kernels (oneDNN capped at AVX2 stands in for one), `on` is
    one clear line and exit 2, before Ray starts or MLflow is touched."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = [*pipeline_cmd(), command, "--params", str(ROOT / "params.yaml"),
            "--set", "train.bf16=on", "--set", "train.use_gpu=off"]  # fmt: skip
    res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "bf16 autocast cannot train the LSTM" in lines[0] and "train.bf16" in lines[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()
