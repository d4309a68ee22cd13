"""A tracking server lost mid-sweep (`pipeline.outage`): writes are kept in order while it is
down, retried with backoff, replayed once when it answers, and the run fails with one line only
if it stays down for `mlflow.retry_for_s`. The errors are MLflow's real ones, from a real client
pointed at a port where nothing listens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_prepared, pipeline_cmd, tiny_params
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.tracking import MlflowClient

from pipeline import outage, tracking
from pipeline.errors import UserError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> MlflowException:
    """The exception MLflow's client raises when its server is gone (no retries, to be quick)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(MlflowException) as caught:
        client.get_experiment("0")
    return caught.value


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Server:
    """Writes into a list, or fails with MLflow's real connection error while down."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.up, self.rows, self.calls = error, True, [], 0

    def write(self, row: object):  # noqa: ANN201 - a write closure
        def send() -> object:
            self.calls += 1
            if not self.up:
                raise self.error
            self.rows.append(row)
            return row

        return send


def test_a_lost_server_is_an_outage_and_a_bad_request_is_not(refused: MlflowException) -> None:
    assert outage.is_outage(refused)
    assert not outage.is_outage(MlflowException("bad metric", error_code=INVALID_PARAMETER_VALUE))
    assert not outage.is_outage(ValueError("x"))
    assert outage.is_outage(MlflowException("later", error_code=TEMPORARILY_UNAVAILABLE))


def test_writes_are_kept_in_order_with_backoff_and_replayed_once(
    refused: MlflowException, capsys: pytest.CaptureFixture
) -> None:
    clock, srv = Clock(), Server(refused)
    buf = outage.Buffer("http://srv", 600, clock=clock, sleep=clock.sleep)
    assert buf.submit("e1", srv.write(1)) == (True, 1)
    srv.up = False
    assert buf.submit("e2", srv.write(2)) == (False, None)
    assert "MLflow server http://srv unreachable" in capsys.readouterr().err
    # retries are due after 1, 2, 4 ... s: a write before that is queued without a call
    calls = srv.calls
    clock.now += 0.5
    assert buf.submit("e3", srv.write(3)) == (False, None) and srv.calls == calls
    delays = []
    for _ in range(8):
        clock.now = buf.next_try
        buf.flush()
        delays.append(buf.next_try - clock.now)
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    srv.up = True
    clock.now = buf.next_try
    assert buf.submit("e4", srv.write(4)) == (True, 4)
    assert srv.rows == [1, 2, 3, 4]  # every write once, in order
    assert not buf.pending and not buf.down and buf.replayed == 3
    assert "is back after" in capsys.readouterr().err


def test_drain_waits_for_the_server_then_sends(refused: MlflowException) -> None:
    clock, srv = Clock(), Server(refused)
    buf = outage.Buffer("http://srv", 600, clock=clock, sleep=clock.sleep)
    srv.up = False
    buf.submit("e1", srv.write(1))

    def back_after_a_while(s: float) -> None:
        clock.sleep(s)
        srv.up = clock.now > 150

    buf.sleep = back_after_a_while
    buf.drain()
    assert srv.rows == [1] and not buf.pending
    assert 150 < clock.now < 150 + outage.MAX_DELAY_S + 1


def test_drain_gives_up_after_retry_for_s_with_one_clear_error(refused: MlflowException) -> None:
    clock, srv = Clock(), Server(refused)
    fix = "run `pipeline tune --resume`"
    buf = outage.Buffer("http://srv:5000", 30, next_step=fix, clock=clock, sleep=clock.sleep)
    srv.up = False
    buf.submit("e1", srv.write(1))
    buf.submit("e2", srv.write(2))
    with pytest.raises(UserError) as caught:
        buf.drain()
    msg = str(caught.value)
    assert "http://srv:5000 has been unreachable for 30 s" in msg
    assert "2 tracking write(s) not sent" in msg and "pipeline tune --resume" in msg
    assert "retry_for_s" in caught.value.fix
    assert clock.now == pytest.approx(130.0)  # gave up at the deadline, not a backoff step later


def test_an_error_that_is_not_an_outage_raises_at_once(refused: MlflowException) -> None:
    buf = outage.Buffer("http://srv", 600)

    def bad() -> None:
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run x", RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        buf.submit("e1", bad)
    assert not buf.down


def test_fail_fast_only_for_servers_and_keeps_the_users_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in outage.FAIL_FAST_ENV:
        monkeypatch.delenv(key, raising=False)
    outage.fail_fast("sqlite:///x.db")
    assert not any(k in os.environ for k in outage.FAIL_FAST_ENV)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    outage.fail_fast("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_a_replayed_epoch_writes_the_same_rows_once(tmp_path: Path) -> None:
    """The first attempt's timestamp travels with the epoch: a write the server committed
    but never answered, sent again, leaves one row per metric and step."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    epoch = {"epoch": 1, "val_loss": 2.5, tracking.LOGGED_AT: 1_700_000_000_000}
    tracking.log_epoch(client, run_id, epoch)
    tracking.log_epoch(client, run_id, dict(epoch))  # the replay
    history = client.get_metric_history(run_id, "val_loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(1, 2.5, 1_700_000_000_000)]


class Flaky:
    """A real (SQLite) MLflow client that raises MLflow's real connection error while down."""

    def __init__(self, client: MlflowClient, error: BaseException) -> None:
        self.client, self.error, self.up = client, error, True
        self.tracking_uri = "http://srv"

    def __getattr__(self, name: str) -> object:
        method = getattr(self.client, name)

        def call(*args: object, **kwargs: object) -> object:
            if not self.up:
                raise self.error
            return method(*args, **kwargs)

        return call


def test_pipeline_train_catches_up_and_closes_through_an_outage(
    tmp_path: Path, refused: MlflowException, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pipeline train`'s driver: a server lost before its catch-up (the run just opened) or
    before it closes the run is waited for; every epoch lands once, then FINISHED."""
    from pipeline import records
    from pipeline.config import load_config
    from pipeline.stages import train

    real = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = real.create_run(real.create_experiment("x")).info.run_id
    on_disk = [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": 2.0}]
    monkeypatch.setattr(records, "train_record", lambda run_dir: on_disk)
    cfg = load_config(Path(__file__).parents[1] / "params.yaml", ["train.epochs=3"])
    client = Flaky(real, refused)
    report = train._Reporter(client, cfg, run_id)
    clock = Clock()
    report.buffer.clock, report.buffer.sleep = clock, clock.sleep
    client.up = False
    report.catch_up("runs/x")  # kept, no error
    report({"epoch": 3, "val_loss": 1.0})
    assert len(report.buffer.pending) == 2

    def back_after_a_while(s: float) -> None:
        clock.sleep(s)
        client.up = clock.now > 130

    report.buffer.sleep = back_after_a_while
    report.close()
    history = real.get_metric_history(run_id, "val_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert real.get_run(run_id).info.status == "FINISHED"


# ------------------------------------------------------------------ end to end (slow)
class MlflowServer:
    """A real `mlflow server` (SQLite store) on 127.0.0.1 that can be stopped and started again
    on the same port and store, as a team's server restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _closed_port()  # free now, ours to bind
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'srv.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 300  # a fresh store's migrations: a minute under load
        while time.monotonic() < deadline:
            try:
                tracking.check_server(self.uri, timeout=2)
                return
            except UserError:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        self.stop()  # not left running when its fixture fails
        raise AssertionError("mlflow server did not answer within 300 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # lost, not shut down
            self.proc.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path):
    srv = MlflowServer(tmp_path / "server")
    srv.folder.mkdir()
    srv.start()
    yield srv
    srv.stop()


def _sweep_project(folder: Path, uri: str, retry_for_s: float) -> Path:
    make_prepared(folder / "prepared", n_train=960)
    params = tiny_params(
        folder / "prepared",
        train__num_workers=1,
        train__epochs=EPOCHS,
        tune__num_samples=2,
        tune__max_concurrent_trials=1,
        tune__grace_period=EPOCHS,  # ASHA stops nothing: every trial logs every epoch
        mlflow__tracking_uri=uri,
        mlflow__retry_for_s=retry_for_s,
    )
    folder.mkdir(exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def _tune(project: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = open(project / f"tune{len(list(project.glob('tune*.log')))}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        pipeline_cmd() + ["tune", *args], cwd=project, env=env, stdout=log, stderr=log, text=True
    )


def _wait_for(path_glob: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = sorted(path_glob.parent.glob(path_glob.name))
        out = logs[-1].read_text() if logs else ""
        if text in out:
            return out
        assert proc.poll() is None, f"tune ended before {text!r}:\n{out[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} within {timeout} s")


def _every_epoch_once(uri: str) -> list:
    """Each trial's run holds steps 1..EPOCHS exactly once per metric; returns the runs."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
    for child in children:
        for key in ("val_loss", "train_loss", "epoch"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)
        assert child.data.tags["epochs_run"] == str(EPOCHS)
    return runs


EPOCHS = 4


@pytest.mark.slow
def test_a_server_lost_mid_sweep_and_back_loses_and_doubles_nothing(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    project = _sweep_project(tmp_path / "project", mlflow_server.uri, retry_for_s=300)
    proc = _tune(project)
    try:
        _wait_for(project / "tune*.log", "started:", proc)
        mlflow_server.stop()  # lost before the first epoch is logged
        _wait_for(project / "tune*.log", "kept for replay", proc)
        time.sleep(3)
        mlflow_server.start()
        assert proc.wait(timeout=400) == 0, (project / "tune0.log").read_text()[-3000:]
    finally:
        proc.kill()
    out = (project / "tune0.log").read_text()
    assert "unreachable" in out and "is back after" in out and "replayed" in out
    assert "Traceback" not in out
    _every_epoch_once(mlflow_server.uri)
    assert (project / "models" / "best" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_server_that_stays_down_fails_in_one_line_and_resume_logs_everything(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    project = _sweep_project(tmp_path / "project", mlflow_server.uri, retry_for_s=5)
    proc = _tune(project)
    try:
        _wait_for(project / "tune*.log", "started:", proc)
        mlflow_server.stop()
        assert proc.wait(timeout=400) != 0
    finally:
        proc.kill()
    out = (project / "tune0.log").read_text()
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has been unreachable for" in errors[0], out[-3000:]
    assert "pipeline tune --resume" in out
    assert not (project / "models" / "best").exists()  # no half-written outputs

    mlflow_server.start()
    resumed = _tune(project, "--resume")
    assert resumed.wait(timeout=400) == 0, (project / "tune1.log").read_text()[-3000:]
    _every_epoch_once(mlflow_server.uri)


@pytest.mark.slow
def test_pipeline_train_rides_out_a_lost_server(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    project = _sweep_project(tmp_path / "project", mlflow_server.uri, retry_for_s=300)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = open(project / "train0.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        pipeline_cmd() + ["train"], cwd=project, env=env, stdout=log, stderr=log, text=True
    )
    try:
        _wait_for(project / "train*.log", "checkpoints in", proc)  # its run is open
        mlflow_server.stop()
        _wait_for(project / "train*.log", "kept for replay", proc)
        mlflow_server.start()
        assert proc.wait(timeout=400) == 0, (project / "train0.log").read_text()[-3000:]
    finally:
        proc.kill()
    out = (project / "train0.log").read_text()
    assert "is back after" in out and "Traceback" not in out
    client = MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("seq2seq-sample-de-en").experiment_id]
    )
    assert run.info.status == "FINISHED"
    for key in ("val_loss", "epoch"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)
