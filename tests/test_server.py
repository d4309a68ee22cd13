"""`pipeline server`: a team's tracking server (`mlflow server` on PostgreSQL, artifacts in a
shared folder, both on 127.0.0.1) that `pipeline train` logs to; bad input to the command is
one line and exit 2, and `stop` never ends a process that is not the server's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_prepared, pipeline_cmd, tiny_params

from pipeline import server
from pipeline.errors import UserError


def _pipeline(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        pipeline_cmd() + [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------ bad input
def test_a_port_in_use_is_one_line_and_nothing_is_made(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _pipeline(["server", "start", "--dir", tmp_path / "srv", "--port", port], tmp_path)
    line = _one_error_line(proc)
    assert f"MLflow port {port} on 127.0.0.1 is not free" in line and "--port" in line
    assert not (tmp_path / "srv" / "postgres").exists()
    assert not (tmp_path / "srv" / server.STATE_FILE).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "70000"], "MLflow port 70000 is not a port number"),
        (["--pg-port", "-1"], "PostgreSQL port -1 is not a port number"),
        (["--workers", "0"], "--workers 0: at least 1"),
        (["--timeout", "0"], "--timeout 0: must be more than 0 seconds"),
        (["--artifacts", "afile"], "is a file, not a folder"),
    ],
)
def test_bad_start_options_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "afile").write_text("x")
    proc = _pipeline(["server", "start", "--dir", tmp_path / "srv", "--port", "0", *args], tmp_path)
    assert expected in _one_error_line(proc)
    assert not (tmp_path / "srv" / "postgres").exists()


def test_a_broken_record_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / server.STATE_FILE).write_text("{not json")
    for command in ("start", "stop", "status"):
        proc = _pipeline(["server", command, "--dir", tmp_path / "srv"], tmp_path)
        assert "is not a server record" in _one_error_line(proc), command


def test_status_and_stop_without_a_server(tmp_path: Path) -> None:
    status = _pipeline(["server", "status", "--dir", tmp_path / "none"], tmp_path)
    assert status.returncode == 3 and status.stdout == ""
    assert "not running (no server recorded)" in status.stderr
    stop = _pipeline(["server", "stop", "--dir", tmp_path / "none"], tmp_path)
    assert stop.returncode == 0 and "nothing to stop" in stop.stderr


def test_stop_leaves_a_process_that_reused_a_recorded_id(tmp_path: Path) -> None:
    """A recorded process id now naming another program (after a reboot, say) is not ended."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / "srv").mkdir()
        record = server.Server(
            root=str(tmp_path / "srv"), port=1, pg_port=2, artifacts=str(tmp_path),
            mlflow_pid=other.pid, postgres_pid=other.pid,
        )  # fmt: skip
        server._save(record)
        proc = _pipeline(["server", "stop", "--dir", tmp_path / "srv"], tmp_path)
        assert proc.returncode == 0 and "already stopped" in proc.stderr
        time.sleep(0.2)
        assert other.poll() is None, "stop ended a process that was not the server's"
    finally:
        other.kill()
        other.wait()


def test_start_options_must_match_a_running_server(tmp_path: Path) -> None:
    record = server.Server(str(tmp_path), 5000, 6000, artifacts=str(tmp_path.resolve()))
    server._check_unchanged(record, {})  # no options: the running server as it is
    server._check_unchanged(record, {"port": 5000, "artifacts": tmp_path / "." / ""})
    with pytest.raises(UserError, match=r"other settings \(port 5000, workers 1\)"):
        server._check_unchanged(record, {"port": 5001, "workers": 3})


def test_postgresql_missing_or_no_user_to_run_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setattr(server, "PG_LIB", Path("/nonexistent/postgresql"))
    with pytest.raises(UserError, match="PostgreSQL is not installed.*install.sh"):
        server.pg_bin("initdb")
    if os.geteuid() == 0:
        with pytest.raises(UserError, match="refuses to run as root.*'no-such-user-x'"):
            server._pg_os_user("no-such-user-x")
        with pytest.raises(UserError, match="refuses to run as root"):
            server._pg_os_user("root")
    else:
        assert server._pg_os_user(None) is None  # runs as ourselves


# ------------------------------------------------------------------ end to end (slow)
def _listening(pids: list[int]) -> list[tuple[str, int]]:
    import psutil

    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _query(record: server.Server, sql: str, args: tuple = ()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=record.pg_port, user="mlflow", dbname="mlflow", connect_timeout=5
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def server_folder():
    """A folder PostgreSQL's own user can reach when we are root (pytest's are private)."""
    try:
        server.pg_bin("postgres")
    except UserError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL: {err}")
        pytest.skip(str(err))
    folder = Path(tempfile.mkdtemp(prefix="seq2seq-server-"))
    folder.chmod(0o755)
    yield folder
    record = server.load(folder / "srv")
    if record is not None:
        server.stop(record)
    shutil.rmtree(folder, ignore_errors=True)


def _start(srv: Path, shared: Path, cwd: Path) -> server.Server:
    """`pipeline server start` on free ports; checks what it printed and where it listens."""
    args = ["--port", "0", "--pg-port", "0", "--artifacts", shared, "--workers", "1"]
    start = _pipeline(["server", "start", "--dir", srv, *args, "--timeout", "300"], cwd, 400)
    assert start.returncode == 0, start.stderr[-3000:]
    record = server.load(srv)
    assert record is not None and record.mlflow_pid and record.postgres_pid
    assert start.stdout.strip() == f"mlflow.tracking_uri: http://127.0.0.1:{record.port}"
    groups = [record.mlflow_pid, record.postgres_pid]
    listening = _listening([p for g in groups for p in server.group_members(g)])
    assert {("127.0.0.1", record.port), ("127.0.0.1", record.pg_port)} <= set(listening)
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening  # nothing on 0.0.0.0
    return record


def _stop(srv: Path, record: server.Server, cwd: Path) -> None:
    """`pipeline server stop`: no process of either server left, nothing on their ports."""
    import psutil

    stop = _pipeline(["server", "stop", "--dir", srv], cwd, 90)
    assert stop.returncode == 0, stop.stderr
    assert server.group_members(record.mlflow_pid or 0) == []
    assert server.group_members(record.postgres_pid or 0) == []
    ports = {record.port, record.pg_port}
    assert not [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN
                and c.laddr.port in ports]  # fmt: skip
    assert _pipeline(["server", "status", "--dir", srv], cwd).returncode == 3


@pytest.mark.slow
def test_train_logs_to_a_postgres_backed_server(tmp_path: Path, server_folder: Path) -> None:
    srv, shared = server_folder / "srv", server_folder / "shared-artifacts"
    record = _start(srv, shared, tmp_path)

    make_prepared(tmp_path / "prepared", n_train=64, n_valid=16)
    params = tiny_params(tmp_path / "prepared", train__epochs=1, train__num_workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    train = _pipeline(["train", "--set", f"mlflow.tracking_uri={record.uri}"], tmp_path, 300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store

    # PostgreSQL itself holds the run, its metrics and params
    assert "PostgreSQL" in _query(record, "SELECT version()")[0][0]
    ((run_id, status),) = _query(record, "SELECT run_uuid, status FROM runs")
    assert status == "FINISHED"
    keys = _query(record, "SELECT key, step FROM metrics WHERE run_uuid = %s", (run_id,))
    assert {("train_loss", 1), ("val_loss", 1), ("val_bleu", 1)} <= set(keys)
    assert _query(record, "SELECT value FROM params WHERE key = 'train.epochs'") == [("1",)]

    # artifacts go through the server into the shared folder
    from mlflow.tracking import MlflowClient

    client = MlflowClient(record.uri)
    client.log_text(run_id, "hello", "notes/hello.txt")
    (saved,) = shared.rglob("hello.txt")
    assert run_id in saved.parts and saved.read_text() == "hello"
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")

    status = _pipeline(["server", "status", "--dir", srv], tmp_path)
    assert status.returncode == 0 and record.uri in status.stdout
    again = _pipeline(["server", "start", "--dir", srv], tmp_path)  # nothing new is started
    assert again.returncode == 0 and "already running" in again.stderr
    other = _pipeline(["server", "start", "--dir", srv, "--artifacts", tmp_path], tmp_path)
    assert "already runs with other settings (artifacts " in _one_error_line(other)
    assert server.load(srv) == record
    _stop(srv, record, tmp_path)
