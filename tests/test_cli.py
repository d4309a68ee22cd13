"""The `pipeline` command as users reach it: console script, `python -m`, `typer ... run`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, VENV_BIN, pipeline_cmd

COMMANDS = ["download", "clean", "tokenize", "reverse", "train", "tune", "evaluate", "translate"]


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
