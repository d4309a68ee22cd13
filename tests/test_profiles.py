"""`pipeline experiment PROFILE`: versioned profiles are checked against the config schema and
run as named DVC experiments (`dvc exp run -n NAME -S key=value ...`)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT, VENV_BIN, pipeline_cmd
from dvcrepo import dvc, env, project_copy

from pipeline import profiles
from pipeline.config import load_config

PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


def _run(args: list[str], cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*pipeline_cmd(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, **kw)  # fmt: skip


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_each_committed_profile_is_valid_and_its_dvc_command_sets_exactly_it(path) -> None:
    res = _run(["experiment", path.stem, "--dry-run"], ROOT)
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout.strip().splitlines()[-1])
    assert argv[:5] == ["dvc", "exp", "run", "-n", path.stem]
    sets = argv[6::2]
    assert all(flag == "-S" for flag in argv[5::2])
    wanted = yaml.safe_load(path.read_text())
    assert [s.split("=", 1)[0] for s in sets] == list(wanted)
    via_dvc = load_config(ROOT / "params.yaml", sets)  # what the -S values parse to
    assert via_dvc == load_config(ROOT / "params.yaml").with_overrides(wanted)


@pytest.mark.parametrize(
    "value", [None, {}, 2, 0.002, "multi30k", True, {"choice": [1, 2]}, [10, 20], "a b: c"]
)
def test_values_survive_the_round_trip_through_one_line_of_yaml(value) -> None:
    text = profiles.yaml_value(value)
    assert "\n" not in text and yaml.safe_load(text) == value


@pytest.mark.parametrize(
    "content, needle",
    [
        ("train.epoch: 3\n", "unknown config key 'train.epoch'"),
        ("train.epochs: 0\n", "train.epochs"),
        ("- a\n- b\n", "must be a mapping of dotted config keys"),
        ("train.epochs: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_profile_is_one_line_before_dvc_starts(tmp_path, content, needle) -> None:
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text(content)
    res = _run(["experiment", "bad"], tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and needle in out, out
    assert "Traceback" not in out and "dvc exp run" not in out  # refused before DVC


def test_a_missing_profile_names_the_ones_there_are(tmp_path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "one.yaml").write_text("train.epochs: 2\n")
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    res = _run(["experiment", "two"], tmp_path)
    assert res.returncode == 2
    assert "profile profiles/two.yaml does not exist" in res.stderr and "one" in res.stderr


@pytest.mark.slow
def test_queue_creates_a_named_dvc_experiment_with_the_profile_params(tmp_path) -> None:
    home = tmp_path / "home"
    proj = project_copy(tmp_path / "proj", home)
    (proj / "profiles" / "tiny.yaml").write_text("train.epochs: 3\nmodel.num_layers: 2\n")
    res = subprocess.run([str(VENV_BIN / "python"), "-m", "pipeline", "experiment", "tiny",
                          "--queue"], cwd=proj, env=env(home), capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tiny" in dvc(["queue", "status"], proj, home)
    queued = [
        exp
        for row in json.loads(dvc(["exp", "show", "--json"], proj, home))
        for exp in (row.get("experiments") or [])
        if exp.get("name") == "tiny"
    ]
    assert len(queued) == 1, queued
    (rev,) = queued[0]["revs"]
    params = rev["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["epochs"] == 3 and params["model"]["num_layers"] == 2
    dvc(["queue", "remove", "--all"], proj, home)
