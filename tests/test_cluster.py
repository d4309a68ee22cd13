"""An existing Ray cluster, for real: a 2-node cluster started with `ray start` on this machine
(token authentication, distinct ports, its own temp dirs, stopped by process id, never by
`ray stop`, which would stop every cluster of the machine), then `pipeline train` (2 workers on
different nodes) and a 2-sample `pipeline tune` against it. Also: our own local cluster always
uses token authentication, and the shared-storage rule and the placement knob without Ray."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, VENV_BIN, make_prepared, pipeline_cmd, tiny_params
from mlflow.tracking import MlflowClient

from pipeline import raycluster, runs
from pipeline.config import load_config
from pipeline.errors import UserError

AMBIENT = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
           "RAY_AUTH_TOKEN_PATH")  # fmt: skip
NODE_ID = re.compile(r"node_([0-9a-f]{56})")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    return {**env, **extra}


# ------------------------------------------------------------------- no Ray: rules and knobs
def _cfg(tmp_path: Path, *overrides: str):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ray": {"num_cpus": 1}}))
    return load_config(tmp_path / "params.yaml", list(overrides))


def test_storage_on_this_disk_is_refused_on_several_nodes(tmp_path: Path) -> None:
    two = raycluster.Cluster(cpus=2, gpus=0, trial_driver_slots=0, nodes=2, address="h:1")
    local = _cfg(tmp_path, f"ray.storage_path={tmp_path / 'runs'}")
    with pytest.raises(UserError) as err:
        raycluster.check_shared_storage(local, two)
    assert str(tmp_path / "runs") in err.value.problem and "2 nodes" in err.value.problem
    assert "ray.shared_storage=true" in err.value.fix and "s3://" in err.value.fix
    file_uri = _cfg(tmp_path, f"ray.storage_path=file://{tmp_path}/runs")
    with pytest.raises(UserError):
        raycluster.check_shared_storage(file_uri, two)
    # one node, the user's word, a bucket: accepted
    raycluster.check_shared_storage(local, raycluster.Cluster(2, 0, 0, nodes=1))
    raycluster.check_shared_storage(_cfg(tmp_path, "ray.shared_storage=true"), two)
    raycluster.check_shared_storage(_cfg(tmp_path, "ray.storage_path=s3://bucket/runs"), two)


def test_a_folder_on_a_network_filesystem_counts_as_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts = (
        "/dev/sda1 / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "/dev/sdb1 /mnt/shared/scratch ext4 rw 0 0\n"
        "tmpfs /mnt/my\\040disk tmpfs rw 0 0\n"
    )
    assert raycluster.mount_type(Path("/mnt/shared/runs"), mounts) == "nfs4"
    assert raycluster.mount_type(Path("/mnt/shared"), mounts) == "nfs4"
    assert raycluster.mount_type(Path("/mnt/shared/scratch/x"), mounts) == "ext4"
    assert raycluster.mount_type(Path("/mnt/sharedness/x"), mounts) == "ext4"  # not a prefix
    assert raycluster.mount_type(Path("/mnt/my disk/x"), mounts) == "tmpfs"
    assert raycluster.mount_type(Path("/"), "") is None
    if sys.platform == "linux":
        assert raycluster.mount_type(tmp_path) is not None  # /proc/self/mounts is read
    two = raycluster.Cluster(cpus=2, gpus=0, trial_driver_slots=0, nodes=2)
    cfg = _cfg(tmp_path, f"ray.storage_path={tmp_path / 'runs'}")
    monkeypatch.setattr(raycluster, "mount_type", lambda path, mounts=None: "nfs4")
    raycluster.check_shared_storage(cfg, two)
    monkeypatch.setattr(raycluster, "mount_type", lambda path, mounts=None: "ext4")
    with pytest.raises(UserError, match=r"own disk \(ext4\)"):
        raycluster.check_shared_storage(cfg, two)


def test_placement_strategy_knob(tmp_path: Path) -> None:
    assert _cfg(tmp_path).train.placement_strategy == "PACK"  # Ray's default
    spread = _cfg(tmp_path, "train.placement_strategy=strict_spread")
    assert spread.train.placement_strategy == "STRICT_SPREAD"
    with pytest.raises(UserError, match="STRICT_SPREAD"):
        _cfg(tmp_path, "train.placement_strategy=diagonal")
    # where the workers run is not what they compute: the run key (resume) stays the same
    prepared = make_prepared(tmp_path / "prepared", n_train=8, n_valid=4)
    assert runs.run_key(spread, prepared) == runs.run_key(_cfg(tmp_path), prepared)
    assert runs.run_key(_cfg(tmp_path, "train.num_workers=2"), prepared) != runs.run_key(
        spread, prepared
    )
    line = raycluster.placement_line(["a" * 56, "b" * 56, "a" * 56])
    assert line == "workers on 2 node(s): rank 0 on aaaaaaaa, rank 1 on bbbbbbbb, rank 2 on " + (
        "aaaaaaaa"
    )


# -------------------------------------------------------------- a 2-node cluster, for real
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _session_pids(sid: int) -> list[int]:
    """Live processes of the session `ray start` began (its daemons and their workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # after ")": state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def _stop(sids: list[int]) -> None:
    """SIGTERM, then SIGKILL after 5 s, to every process of our `ray start` sessions."""
    start = time.monotonic()
    while (pids := [p for sid in sids for p in _session_pids(sid)]) and (
        time.monotonic() - start < 60
    ):
        sig = signal.SIGTERM if time.monotonic() - start < 5 else signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.5)


@dataclass
class RayCluster:
    address: str
    token: str
    node_ids: set[str]
    temp: Path


def _ray_start(args: list[str], env: dict[str, str], log: Path, sids: list[int]) -> None:
    """`ray start ...` in a session of its own (its id, = its pid, appended to `sids`). Tried
    up to 3 times: on a loaded machine a node may miss Ray's fixed 30 s registration window
    ("The current node timed out during startup"); a failed try's processes are stopped."""
    for attempt in range(3):
        with open(log.with_suffix(f".{attempt}.log"), "w") as out:
            proc = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--disable-usage-stats", *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            rc = proc.wait(timeout=180)
        if rc == 0:
            sids.append(proc.pid)
            return
        _stop([proc.pid])
    pytest.fail(f"ray start failed 3 times: {log.with_suffix('.2.log').read_text()[-3000:]}")


def _node_ids(address: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        [str(VENV_BIN / "ray"), "status", f"--address={address}"],
        env=env, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return set(NODE_ID.findall(out.split("Pending:")[0]))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    temp = tmp_path_factory.mktemp("ray")
    token = secrets.token_hex(32)
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    p = _free_ports(11)
    gcs = f"127.0.0.1:{p[0]}"
    head = ["--head", "--node-ip-address=127.0.0.1", f"--port={p[0]}",
            f"--ray-client-server-port={p[1]}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p[2]}", f"--dashboard-agent-listen-port={p[3]}",
            f"--dashboard-agent-grpc-port={p[4]}", f"--runtime-env-agent-port={p[5]}",
            f"--metrics-export-port={p[6]}", f"--temp-dir={temp / 'head'}"]  # fmt: skip
    worker = [f"--address={gcs}", "--node-ip-address=127.0.0.1",
              f"--dashboard-agent-listen-port={p[7]}", f"--dashboard-agent-grpc-port={p[8]}",
              f"--runtime-env-agent-port={p[9]}", f"--metrics-export-port={p[10]}",
              f"--temp-dir={temp / 'worker'}"]  # fmt: skip
    each = ["--num-cpus=1", '--resources={"trial_driver": 1}']
    sids: list[int] = []
    try:
        _ray_start(head + each, env, temp / "head", sids)
        _ray_start(worker + each, env, temp / "worker", sids)
        ids: set[str] = set()
        for _ in range(30):  # the worker node registers within seconds
            if len(ids := _node_ids(gcs, env)) == 2:
                break
            time.sleep(1)
        assert len(ids) == 2, ids
        yield RayCluster(gcs, token, ids, temp)
    finally:
        _stop(sids)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    make_prepared(root / "prepared", n_train=96, n_valid=16)
    params = tiny_params(root / "prepared", train__epochs=1)
    del params["ray"]["num_cpus"]  # an existing cluster has its own size
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _pipeline(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        pipeline_cmd() + list(args), cwd=project, env=_env(**env),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], lines
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.slow
def test_wrong_or_missing_token_is_one_line_in_seconds(
    ray_cluster: RayCluster, project: Path
) -> None:
    at = f"ray.address={ray_cluster.address}"
    start = time.monotonic()
    wrong = _pipeline(project, "train", "--set", at, RAY_AUTH_TOKEN="0" * 64)
    _one_line(wrong, f"the Ray cluster at {ray_cluster.address} refused this machine's token")
    none = _pipeline(project, "train", "--set", at, HOME=str(project))  # no ~/.ray/auth_token
    _one_line(none, "needs a token", "RAY_AUTH_TOKEN")
    # Ray alone retries a refused token for 20 s, logging every try: the single line above
    # shows that the one-request check answered instead; the time is mostly Python's start-up
    assert time.monotonic() - start < 120
    assert not (project / "mlflow.db").exists() or not _runs(project)


def _logs(cluster: RayCluster) -> str:
    """The worker processes' output in the cluster's own log folders (both nodes)."""
    files = cluster.temp.glob("*/session_latest/logs/worker-*.out")
    return "".join(f.read_text(errors="replace") for f in files)


def _runs(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow
def test_train_and_tune_on_an_existing_two_node_cluster(
    ray_cluster: RayCluster, project: Path
) -> None:
    at = ("--set", f"ray.address={ray_cluster.address}")
    token = {"RAY_AUTH_TOKEN": ray_cluster.token}  # RAY_AUTH_MODE: set by the pipeline
    spread = ("--set", "train.placement_strategy=STRICT_SPREAD")

    # 1. the default storage (ray_results/ in the project) is this machine's disk: refused
    #    after connecting, before any training or MLflow run
    local = _pipeline(project, "train", *at, *spread, **token)
    _one_line(local, "ray.storage_path", "2 nodes", "ray.shared_storage=true")
    assert not (project / "ray_results").exists() or not any((project / "ray_results").iterdir())
    assert _runs(project) == []

    # 2. shared storage asserted: 2 workers, one on each node of THIS cluster (no Ray of our own)
    shared = project.parent / f"{project.name}-shared"
    store = ("--set", f"ray.storage_path={shared}", "--set", "ray.shared_storage=true")
    train = _pipeline(project, "train", *at, *spread, *store, **token)
    assert train.returncode == 0, train.stderr[-4000:]
    assert f"Ray: the cluster at {ray_cluster.address}, 2 node(s), 2 CPUs" in train.stderr
    assert "workers on 2 node(s)" in train.stderr and "done: epoch 1/1" in train.stderr
    (run,) = _runs(project)
    assert run.info.status == "FINISHED"
    assert set(run.data.tags["ray.worker_nodes"].split(",")) == ray_cluster.node_ids
    assert run.data.params["train.placement_strategy"] == "STRICT_SPREAD"
    ckpts = list(shared.glob("train-*/checkpoint_*/checkpoint.pt"))
    assert len(ckpts) == 1, list(shared.rglob("*"))
    assert not (project / "ray_results").exists() or not any((project / "ray_results").iterdir())

    # 3. a 2-sample sweep, 1 worker per trial, side by side on the same cluster
    tune = _pipeline(project, "tune", "--num-samples", "2", *at, *store, "--set",
                     "train.num_workers=1", **token)  # fmt: skip
    assert tune.returncode == 0, tune.stderr[-4000:]
    assert f"Ray: the cluster at {ray_cluster.address}, 2 node(s)" in tune.stderr
    # each trial's Train controller ran on this cluster: its log there says where its worker ran
    placed = re.findall(r"workers on 1 node\(s\): rank 0 on ([0-9a-f]{8})", _logs(ray_cluster))
    assert len(placed) >= 2, tune.stderr[-4000:]
    assert set(placed) <= {n[:8] for n in ray_cluster.node_ids}
    trials = list(shared.glob("sweep_runs/tune-*/*/checkpoint_*"))
    assert len({c.parent.name for c in trials}) == 2, list(shared.rglob("*"))
    assert list(shared.glob("sweeps/tune-*/tuner.pkl"))
    finished = [r for r in _runs(project) if r.info.status == "FINISHED"]
    assert len(finished) == 4, [(r.info.run_name, r.info.status) for r in _runs(project)]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in finished} - {None}
    assert len(parents) == 1  # one sweep parent with its 2 trial runs; the train run
    assert _node_ids(ray_cluster.address, _env(RAY_AUTH_MODE="token", **token)) == (
        ray_cluster.node_ids
    )  # the cluster is still the same 2 nodes


# ---------------------------------------------------- our own local cluster: token auth on
LOCAL = """
import os, sys
import ray
from pipeline import raycluster
from pipeline.config import load_config
cfg = load_config(sys.argv[1], ["ray.num_cpus=1"])
raycluster.init(cfg)
print(ray.get_runtime_context().gcs_address, os.environ.get("RAY_AUTH_MODE"), flush=True)
sys.stdin.read()  # the test probes the cluster meanwhile
raycluster.shutdown()
"""
PROBE = "import sys; from pipeline.raycluster import check_token; check_token(sys.argv[1])"


@pytest.mark.slow
def test_our_own_local_cluster_always_requires_the_token(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("ray: {num_cpus: 1}\n")
    py = str(VENV_BIN / "python")
    proc = subprocess.Popen(
        [py, "-c", LOCAL, str(tmp_path / "params.yaml")], cwd=ROOT,
        env=_env(RAY_AUTH_MODE="disabled"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        gcs, mode = proc.stdout.readline().split()
        assert mode == "token"  # the inherited `disabled` was dropped, Ray turned tokens on
        home = tmp_path / "home"
        home.mkdir()
        no_token = subprocess.run([py, "-c", PROBE, gcs], cwd=ROOT, env=_env(HOME=str(home)),
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
        assert no_token.returncode != 0 and "needs a token" in no_token.stderr, no_token.stderr
        same = subprocess.run([py, "-c", PROBE, gcs], cwd=ROOT, capture_output=True,
                              env=_env(RAY_AUTH_MODE="token"), text=True, timeout=60)  # fmt: skip
        assert same.returncode == 0, same.stderr
    finally:
        out, err = proc.communicate("", timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "RAY_AUTH_MODE=disabled ignored" in err
