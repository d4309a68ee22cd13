"""deploy/kuberay: the RayJob manifest is untested on Kubernetes (none here), so this checks what
can be checked without one: it parses, its cluster uses token authentication and this project's
Ray version, every `pipeline` command of its entrypoint parses with the real CLI, its params
load with the real config (shared storage on the volume every pod mounts, a tracking server)."""

from __future__ import annotations

import json
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from conftest import ROOT

from pipeline.cli import app
from pipeline.config import load_config

KUBERAY = ROOT / "deploy" / "kuberay"
STAGES = ["download", "clean", "tokenize", "reverse", "tune", "evaluate"]


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((KUBERAY / "rayjob.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def _entrypoint_commands(entrypoint: str) -> list[list[str]]:
    """`bash -c 'a && b && ...'` -> [argv of a, argv of b, ...]."""
    bash, flag, script = shlex.split(entrypoint)
    assert (bash, flag) == ("bash", "-c")
    return [shlex.split(part) for part in script.split("&&")]


def _parse(argv: list[str]) -> Any:
    """Parse `pipeline ...` argv with the real CLI (types, options), without running it: the
    sub-command's click context (typer's own click)."""
    group = typer.main.get_command(app)
    sub = group.get_command(group.context_class(group), argv[1])  # type: ignore[attr-defined]
    assert sub is not None, f"no such command: pipeline {argv[1]}"
    return sub.make_context(argv[1], argv[2:])


def test_the_ray_job_runs_the_stages_with_the_real_cli(manifest: dict, tmp_path: Path) -> None:
    commands = _entrypoint_commands(manifest["RayJob"]["spec"]["entrypoint"])
    pipeline = [c for c in commands if c[0] == "pipeline"]
    assert [c[1] for c in pipeline] == STAGES
    params = {_parse(c).params["params"] for c in pipeline}
    assert params == {Path("/etc/seq2seq/params.yaml")}
    assert all(c[0] in ("mkdir", "cd", "pipeline") for c in commands), commands
    with pytest.raises(Exception, match="No such option"):  # the parser really checks
        _parse(["pipeline", "tune", "--num-sample", "3"])


def test_the_cluster_uses_tokens_and_this_projects_ray(manifest: dict) -> None:
    cluster = manifest["RayJob"]["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == version("ray")
    base = re.search(r"^FROM rayproject/ray:(\S+)", (KUBERAY / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(f"{version('ray')}-")
    head = cluster["headGroupSpec"]["rayStartParams"]
    assert json.loads(json.loads(head["resources"]))["trial_driver"] >= 1  # KubeRay's quoting


def test_params_put_everything_on_the_shared_volume(manifest: dict, tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(manifest["ConfigMap"]["data"]["params.yaml"])
    cfg = load_config(tmp_path / "params.yaml")
    spec = manifest["RayJob"]["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    workers = spec["workerGroupSpecs"][0]
    mounts = {
        "head": {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]},
        "worker": {
            m["name"]: m["mountPath"]
            for m in workers["template"]["spec"]["containers"][0]["volumeMounts"]
        },
    }
    shared = mounts["head"]["shared"]
    assert mounts["worker"]["shared"] == shared  # the same path on every pod
    assert mounts["head"]["params"] == "/etc/seq2seq"
    claim = manifest["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for pod in (head, workers["template"]["spec"]):
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert cfg.ray.shared_storage and cfg.ray.address is None
    on_volume = [cfg.ray.storage_path, *cfg.paths.model_dump().values()]
    assert all(str(p).startswith(f"{shared}/") for p in on_volume), on_volume
    assert (cfg.mlflow.tracking_uri or "").startswith("http")
    assert cfg.train.num_workers <= workers["replicas"]
