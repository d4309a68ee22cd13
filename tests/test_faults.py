"""Faults survived for real (issue 13): a sweep whose driver is SIGKILLed (right after a trial
finished, and mid-trial) is finished by `pipeline tune --resume` without training a finished
trial again; Ctrl-C in `dvc repro`'s tune stage leaves no MLflow run RUNNING and says what to run
next; a sweep of several trials, two at a time with ASHA stopping some, logs every epoch of
every trial exactly once and leaves no placement group behind. Unit tests: the MLflow side of
the same guarantees (exactly once across drivers, backfill, runs closed on interrupt).

The Ray tests run real drivers in their own session (`start_new_session`) and kill that session
by process id (never `ray stop`, which would hit other clusters on the machine).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import VENV_BIN, make_prepared, pipeline_cmd, tiny_params
from mlflow.tracking import MlflowClient

from pipeline import raycluster, runs, tracking
from pipeline.config import Config
from pipeline.stages import tune

EXPERIMENT = "seq2seq-sample-de-en"
CURVE_KEYS = ("train_loss", "val_loss", "val_ppl", "val_bleu", "epoch")


# ------------------------------------------------------------------------------------ helpers
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env = {k: v for k, v in env.items() if not k.startswith("DVC_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def _project(tmp_path: Path, n_train: int = 192, **overrides: object) -> Path:
    make_prepared(tmp_path / "prepared", n_train=n_train)
    params = tiny_params(tmp_path / "prepared", train__num_workers=1, **overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _query(project: Path, sql: str) -> list[tuple]:
    """Read the project's MLflow store while a driver writes it ([] before it exists)."""
    try:
        with sqlite3.connect(f"file:{project}/mlflow.db?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _trial_steps(project: Path) -> dict[str, tuple[str, int]]:
    """trial id -> (run status, highest epoch logged), read while the sweep runs."""
    rows = _query(
        project,
        "select t.value, r.status, (select max(step) from metrics m where m.run_uuid = "
        "r.run_uuid and m.key = 'epoch') from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'trial_id'",
    )
    return {trial: (status, step or 0) for trial, status, step in rows}


def _wait_for(
    proc: subprocess.Popen, log: Path, what: str, ready: Callable[[], bool], timeout: float = 400
) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"driver exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # session id; zombies are gone already
            pids.append(int(entry.name))
    return pids


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (its local Ray: GCS, raylet,
    workers), by id; repeated while Ray forks stragglers."""
    for _ in range(20):
        pids = _session_pids(proc.pid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.25)
    proc.wait(timeout=30)


def _start(cmd: list[str], project: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            cmd, cwd=project, env=env, stdout=out, stderr=out, start_new_session=True
        )


def _checkpoints(train_run: Path) -> list[str]:
    """The checkpoint folders of a trial's Ray Train run."""
    return sorted(p.name for p in train_run.glob("checkpoint_*") if p.is_dir())


def _run_to_end(cmd: list[str], project: Path, log: Path, env: dict, timeout: float = 900) -> int:
    """Run a driver to its end (its session killed however the wait ends); its exit code."""
    proc = _start(cmd, project, log, env)
    try:
        return proc.wait(timeout=timeout)
    finally:
        _kill_session(proc)


def _runs(project: Path) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name(EXPERIMENT)
    every = client.search_runs([exp.experiment_id])
    parents = [r for r in every if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in every if tracking.PARENT_TAG in r.data.tags]
    return client, parents, children


def _assert_outputs_agree_with_mlflow(project: Path, client: MlflowClient, children: list) -> None:
    """Each trial's run holds epochs 1..epochs_run once per metric; trials.csv and the trial's
    curve file say the same."""
    with open(project / "models" / "trials.csv") as f:
        table = {row["trial"]: row for row in csv.DictReader(f)}
    assert set(table) == {c.data.tags["trial_id"] for c in children}
    for child in children:
        trial, ran = child.data.tags["trial_id"], int(child.data.tags["epochs_run"])
        for key in CURVE_KEYS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(1, ran + 1)), f"{trial} {key}: steps {steps}"
        row = table[trial]
        assert row["mlflow_run_id"] == child.info.run_id and int(row["epochs_run"]) == ran
        assert row["stopped_early"] == child.data.tags["stopped_early"]
        with open(project / "models" / "curves" / f"{trial}.csv") as f:
            curve = list(csv.DictReader(f))
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [int(r["epoch"]) for r in curve] == list(range(1, ran + 1))
        by_step = {m.step: m.value for m in history}
        assert [float(r["val_loss"]) for r in curve] == [by_step[e] for e in range(1, ran + 1)]


# --------------------------------------------------------------------------------- unit tests
def _tracker(client: MlflowClient, exp_id: str, epochs: int = 3) -> tracking.SweepTracker:
    return tracking.SweepTracker(
        client, exp_id, "sweep-x", tags={"corpus": "sample"}, params={}, epochs=epochs
    )


def _epoch(e: int) -> dict:
    return {"epoch": e, "train_loss": 3.0 - e / 10, "val_loss": 3.1 - e / 10, "val_bleu": e}


def test_each_epoch_lands_once_whichever_driver_reports_it(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.create_experiment("faults")
    cfg = Config().with_overrides({"train.epochs": 4})
    first = _tracker(client, exp_id)
    run_id = first.trial_started("t0", "t0", cfg)
    assert first.trial_result("t0", _epoch(1)) and first.trial_result("t0", _epoch(2))
    # the driver dies: epoch 3 was checkpointed (in the trial's record) but never logged
    again = _tracker(client, exp_id)
    assert again.trial_started("t0", "t0", cfg, record=[_epoch(1), _epoch(2), _epoch(3)]) == run_id
    assert again.trial_result("t0", _epoch(3)) is False  # a restored trial re-reports it
    assert again.trial_result("t0", _epoch(4)) is True
    assert again.trial_finished("t0", record=[_epoch(4)]) is False  # ran all of its 4 epochs
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["epochs_run"] == "4"
    for key in ("train_loss", "val_loss", "val_bleu", "epoch"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4]


def test_epochs_run_counts_every_driver_and_the_trials_own_epochs(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.create_experiment("faults")
    first = _tracker(client, exp_id, epochs=3)
    cfg = Config().with_overrides({"train.epochs": 5})  # the trial's sampled epochs win
    run_id = first.trial_started("t1", "t1", cfg)
    first.trial_result("t1", _epoch(1))
    again = _tracker(client, exp_id, epochs=3)
    again.trial_started("t1", "t1", cfg)
    again.trial_result("t1", _epoch(2))
    assert again.trial_finished("t1") is True  # 2 of its 5 epochs: stopped early
    tags = client.get_run(run_id).data.tags
    assert (tags["epochs_run"], tags["stopped_early"]) == ("2", "true")


def test_an_interrupted_sweep_leaves_no_run_running(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.create_experiment("faults")
    sweep, cfg = _tracker(client, exp_id), Config()
    done, open_ = sweep.trial_started("t0", "t0", cfg), sweep.trial_started("t1", "t1", cfg)
    sweep.trial_finished("t0")
    s = runs.Session(cfg, tmp_path, client, exp_id, verbose=False)
    tune._close_runs(s, "sweep-x", tune.SweepInterrupted("interrupted"))
    status = {r: client.get_run(r).info.status for r in (sweep.parent_id, done, open_)}
    assert status == {sweep.parent_id: "KILLED", done: "FINISHED", open_: "KILLED"}
    sweep.trial_started("t1", "t1", cfg)  # --resume reopens it; a crash then marks it FAILED
    tune._close_runs(s, "sweep-x", RuntimeError("boom"))
    assert client.get_run(open_).info.status == "FAILED"
    assert client.get_run(sweep.parent_id).info.status == "FAILED"


def test_the_next_step_of_an_interrupted_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert tune.next_step() == "continue it with `pipeline tune --resume`"
    monkeypatch.setenv("DVC_STAGE", "tune")  # what DVC 3 sets for a stage's command
    hint = tune.next_step()
    assert "`dvc repro`" in hint and "`pipeline tune --resume`" in hint
    assert "`dvc commit -f tune`" in hint


# ------------------------------------------------------------------------------------- slow
def _kill_after_a_trial_finished(
    project: Path, proc: subprocess.Popen, log: Path
) -> tuple[str, dict[str, tuple[str, int]]]:
    """SIGKILL the driver 1 s after its first trial's run is FINISHED: (that trial, the
    trials' MLflow state then)."""

    def finished() -> bool:
        return any(status == "FINISHED" for status, _ in _trial_steps(project).values())

    try:
        _wait_for(proc, log, "finished trial", finished)
        time.sleep(1.0)
    finally:
        _kill_session(proc)
    state = _trial_steps(project)
    (first,) = [t for t, (status, _) in state.items() if status == "FINISHED"]
    return first, state


def _one_finished_sweep(project: Path, trials: int) -> tuple[MlflowClient, list]:
    """One parent run, FINISHED, with exactly one FINISHED child run for each of `trials`."""
    client, parents, children = _runs(project)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len({ch.data.tags["trial_id"] for ch in children}) == len(children) == trials
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return client, children


@pytest.mark.slow
def test_driver_killed_after_a_trial_finished_and_mid_trial_then_resumed(tmp_path: Path) -> None:
    """Tune saves its state at most every TUNE_GLOBAL_CHECKPOINT_S (~10 s by default) and not
    when a trial completes; 600 s makes the lost-state case certain: the finished trial is
    restored as unfinished and must not train again."""
    project = _project(tmp_path, n_train=1500, train__epochs=4,
                       tune__max_concurrent_trials=1, tune__grace_period=4)  # fmt: skip
    env = _env(TUNE_GLOBAL_CHECKPOINT_S="600")
    cmd = pipeline_cmd() + ["tune", "--num-samples", "2"]

    log_a = tmp_path / "a.log"  # 1) killed 1 s after the first trial finished
    first, after_a = _kill_after_a_trial_finished(project, _start(cmd, project, log_a, env), log_a)
    train_runs = next((project / "ray_results" / "sweep_runs").iterdir())
    saved = _checkpoints(train_runs / first)
    assert len(saved) == 4

    def mid_trial() -> bool:  # the second trial trained an epoch in this driver, not all
        return any(
            t != first and after_a.get(t, ("", 0))[1] < step < 4
            for t, (_, step) in _trial_steps(project).items()
        )

    log_b = tmp_path / "b.log"  # 2) resumed, killed while the second trial trains
    b = _start(cmd + ["--resume"], project, log_b, env)
    try:
        _wait_for(b, log_b, "epoch of the second trial", mid_trial)
    finally:
        _kill_session(b)
    second = next(t for t in _trial_steps(project) if t != first)
    assert _trial_steps(project)[second][1] < 4, "killed too late to test a mid-trial kill"

    log_c = tmp_path / "c.log"  # 3) resumed to the end
    code = _run_to_end(cmd + ["--resume"], project, log_c, env)
    assert code == 0, log_c.read_text()[-3000:]
    resumed = log_b.read_text() + log_c.read_text()
    assert f"{first} started: " in resumed and "(resumed after epoch 4)" in resumed
    assert f"{first} epoch" not in resumed  # the finished trial never trains again
    assert _checkpoints(train_runs / first) == saved
    # one per epoch, plus at most one for the epoch in flight at the kill: its checkpoint can be
    # on disk before Ray Train records it, so the resumed trial trains that epoch again
    assert 4 <= len(_checkpoints(train_runs / second)) <= 5

    client, children = _one_finished_sweep(project, 2)
    assert {ch.data.tags["trial_id"] for ch in children} == {first, second}
    for child in children:
        assert (child.data.tags["epochs_run"], child.data.tags["stopped_early"]) == ("4", "false")
    _assert_outputs_agree_with_mlflow(project, client, children)
    assert (project / "models" / "best" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_ctrl_c_in_dvc_repro_leaves_no_run_running(tmp_path: Path) -> None:
    """A real `dvc repro` of a tune stage, interrupted as a terminal does (SIGINT to the whole
    foreground process group: DVC, the stage command, its Ray)."""
    project = _project(tmp_path, n_train=1500, train__epochs=4, tune__max_concurrent_trials=1)
    stage = {"cmd": "pipeline tune", "deps": ["prepared"], "params": ["tune"], "outs": ["models"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"tune": stage}}))
    env = _env()
    subprocess.run([str(VENV_BIN / "dvc"), "init", "--no-scm", "-q"], cwd=project, env=env,
                   check=True)  # fmt: skip
    log = tmp_path / "repro.log"

    def one_epoch() -> bool:
        return any(step >= 1 for _, step in _trial_steps(project).values())

    proc = _start([str(VENV_BIN / "dvc"), "repro", "tune"], project, log, env)
    try:
        _wait_for(proc, log, "first epoch", one_epoch)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=300)
    finally:
        _kill_session(proc)
    text = log.read_text()
    assert code != 0 and "interrupted" in text, text[-3000:]
    assert "`pipeline tune --resume`" in text and "`dvc commit -f tune`" in text
    _, parents, children = _runs(project)
    assert len(parents) == 1 and children
    statuses = [r.info.status for r in (*parents, *children)]
    assert "RUNNING" not in statuses and parents[0].info.status == "KILLED", statuses
    assert not (project / "models").exists()  # nothing exported from a partial sweep


SWEEP_SCRIPT = """
import json, time
from pathlib import Path
import ray
from pipeline import raycluster
from pipeline.config import load_config
from pipeline.stages import tune
raycluster.shutdown = lambda: None  # keep this cluster up to look at it after the sweep
tune.run(load_config(Path("params.yaml"), None))
def held(table):  # groups that still hold CPUs: what makes later trials wait for ever
    return {k: pg["state"] for k, pg in table.items() if pg["state"] != "REMOVED"
            and any("CPU" in bundle for bundle in pg["bundles"].values())}

for _ in range(240):  # Ray Train's cleaner removes a stopped trial's group within seconds
    table = ray.util.placement_group_table()
    if not held(table):
        break
    time.sleep(0.5)
print("PLACEMENT_GROUPS " + json.dumps({k: pg["state"] for k, pg in table.items()}))
print("HELD " + json.dumps(held(table)))
print("BUNDLES " + json.dumps({k: pg["bundles"] for k, pg in table.items()
                               if pg["state"] != "REMOVED"}, default=str))
from ray.util.state import list_actors
try:
    actors = {k: [f"{a.class_name} {a.state}" for a in list_actors(
        filters=[("placement_group_id", "=", k)], timeout=5)] for k in held(table)}
except Exception as e:  # the state API did not answer
    actors = {"error": repr(e)}
print("ACTORS " + json.dumps(actors))  # what each held group still runs, if anything
ray.shutdown()
"""


@pytest.mark.slow
def test_many_trials_two_at_a_time_log_every_epoch_once(tmp_path: Path) -> None:
    """6 trials, 2 at a time. tune.seed 11 samples lr 0.01 for trials 0, 1, 3 and 1e-6 (learns
    nothing) for 2, 4, 5, so ASHA stops those after epoch 1 whatever the timing."""
    space = {"train.lr": {"choice": [0.01, 1e-6]}}
    project = _project(tmp_path, train__epochs=2, tune__num_samples=6, tune__seed=11,
                       tune__max_concurrent_trials=2, tune__metric="val_loss",
                       tune__search_space=space)  # fmt: skip
    log = tmp_path / "sweep.log"
    code = _run_to_end([sys.executable, "-c", SWEEP_SCRIPT], project, log, _env())
    assert code == 0, log.read_text()[-3000:]
    lines = log.read_text().splitlines()
    groups = json.loads(next(x for x in lines if x.startswith("PLACEMENT_GROUPS "))[17:])
    held = json.loads(next(x for x in lines if x.startswith("HELD "))[5:])
    assert groups and held == {}, [x for x in lines if x.startswith(("BUNDLES ", "ACTORS "))]
    recorded = (project / "ray_results" / "sweep_runs").glob(f"*/{raycluster.GROUPS_DIR}/*")
    ids = {i for f in recorded for i in f.read_text().split()}
    assert len(ids) >= 6 and all(groups.get(i) == "REMOVED" for i in ids), (ids, groups)

    client, children = _one_finished_sweep(project, 6)
    stopped = {c.data.tags["trial_id"] for c in children if c.data.tags["stopped_early"] == "true"}
    assert stopped, "ASHA stopped no trial: the placement-group check saw no stopped trial"
    _assert_outputs_agree_with_mlflow(project, client, children)
    points = sum(len(client.get_metric_history(c.info.run_id, "val_loss")) for c in children)
    assert points == sum(int(c.data.tags["epochs_run"]) for c in children)


GROUP_SCRIPT = """
import json, sys, time
import ray
from ray.util.placement_group import PlacementGroup, placement_group
from pipeline import raycluster

ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")

@ray.remote(num_cpus=0)
class Controller:  # as Ray Train's: the worker group's placement group is made in an actor
    def start(self):
        pg = placement_group([{"CPU": 1}])
        ray.get(pg.ready())
        return pg.id.hex()

controller = Controller.remote()
pg_id = ray.get(controller.start.remote())
with open(sys.argv[1], "w") as f:
    f.write(pg_id + "\\n")
ray.kill(controller)  # dies without removing it
time.sleep(2)
pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
before = ray.util.placement_group_table(pg)["state"]
removed = raycluster.remove_worker_groups(sys.argv[1])
time.sleep(1)
after = ray.util.placement_group_table(pg)["state"]
again = raycluster.remove_worker_groups(sys.argv[1])
print("RESULT " + json.dumps([before, removed, after, again, ray.available_resources()["CPU"]]))
"""


@pytest.mark.slow
def test_a_group_left_by_a_dead_controller_is_freed(tmp_path: Path) -> None:
    """A placement group made in an actor outlives it (its lifetime is the job's), holding its
    CPU: `remove_worker_groups` frees it, and a second call finds nothing to free."""
    ids = tmp_path / "groups"
    proc = subprocess.run(
        [sys.executable, "-c", GROUP_SCRIPT, str(ids)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    assert json.loads(line.split(" ", 1)[1]) == ["CREATED", 1, "REMOVED", 0, 2.0]


ORPHAN_SCRIPT = """
import json, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from ray.util.state import list_placement_groups
from pipeline import raycluster

ray.init(num_cpus=3, resources={raycluster.TRIAL_DRIVER: 1}, include_dashboard=True,
         dashboard_host="127.0.0.1", logging_level="ERROR")
orphan, used = placement_group([{"CPU": 1}]), placement_group([{"CPU": 1}])
token = placement_group([{raycluster.TRIAL_DRIVER: 1}])  # a trial driver's: never touched
ray.get([orphan.ready(), used.ready(), token.ready()])

@ray.remote(num_cpus=1)
class Worker:
    def ping(self):
        return 1

worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(used)).remote()
ray.get(worker.ping.remote())
for _ in range(120):  # the state API answers once the dashboard is up
    try:
        if len(list_placement_groups(timeout=5)) >= 3:
            break
    except Exception:
        pass
    time.sleep(0.5)
seen = {}
first = raycluster.free_orphan_groups(seen, grace_s=2.0)  # first sighting: too early
time.sleep(2.5)
second = raycluster.free_orphan_groups(seen, grace_s=2.0)
time.sleep(1)
states = [ray.util.placement_group_table(g)["state"] for g in (orphan, used, token)]

@ray.remote(num_cpus=0)
class RayTrainWorker:  # named as Ray Train's workers are
    def ping(self):
        return 1

train_worker = RayTrainWorker.remote()
ray.get(train_worker.ping.remote())
alive = raycluster.live_train_actors()  # Worker above is not Train's: not counted
ray.kill(train_worker)
for _ in range(40):
    if raycluster.live_train_actors() == 0:
        break
    time.sleep(0.25)
alive = [alive, raycluster.live_train_actors()]

pending = placement_group([{"CPU": 8}])  # more than the cluster has: pending for ever
for _ in range(40):  # until the state API lists it
    if list_placement_groups(filters=[("state", "=", "PENDING")], timeout=5):
        break
    time.sleep(0.25)
end = [raycluster.free_all_worker_groups()]  # a sweep's end: used and pending go, token stays
end += [ray.util.placement_group_table(g)["state"] for g in (used, pending, token)]
end.append(raycluster.free_all_worker_groups())  # nothing left to free
print("RESULT " + json.dumps([first, second, states, sorted(seen), alive, end]))
"""


@pytest.mark.slow
def test_a_group_no_actor_uses_is_freed_after_its_grace_and_live_ones_stay(
    tmp_path: Path,
) -> None:
    """A worker group's placement group whose start was abandoned holds its CPU with no actor
    in it and no recorded id: the janitor frees it once seen so for its grace period, and
    leaves a group with a live worker and a trial driver's token group alone (until the sweep
    ends: then every worker group goes, pending ones too, and the token group stays)."""
    proc = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    result = json.loads(line.split(" ", 1)[1])
    assert result[:5] == [0, 1, ["REMOVED", "CREATED", "CREATED"], [], [1, 0]]
    # at a sweep's end every worker group goes, the pending one too; the token group stays
    assert result[5] == [2, "REMOVED", "REMOVED", "CREATED", 0]


def _janitor_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
    alive: list[int | None],
    freed: list[int | None],
    unanswered_before: int = 0,
) -> list[str]:
    """Run the janitor's end of sweep on scripted state-API answers; what it called, in order
    (an answer list's last item repeats)."""
    calls: list[str] = []
    answers = {"alive": alive, "freed": freed}
    asked = dict.fromkeys(answers, 0)

    def answer(name: str) -> int | None:
        calls.append(name)
        asked[name] += 1
        return answers[name][min(asked[name], len(answers[name])) - 1]

    monkeypatch.setattr(raycluster, "live_train_actors", lambda: answer("alive"))
    monkeypatch.setattr(raycluster, "free_all_worker_groups", lambda: answer("freed"))
    monkeypatch.setattr(raycluster.time, "sleep", lambda s: calls.append("sleep"))
    janitor = raycluster.janitor_callback("/nowhere")
    janitor.unanswered = unanswered_before  # the state API's silence while the sweep ran
    janitor.on_experiment_end(trials=[])
    return calls


def test_the_janitor_frees_every_group_at_the_end_until_no_train_actor_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a sweep's end a dying Train controller whose workers died first may ask for a new
    group (CI found one CREATED after a sweep, its worker dead): the janitor removes every
    worker group of the job until two rounds in a row find no Train actor alive and nothing to
    remove; a round that frees something, or sees an actor alive, starts the count again."""
    one = ["alive", "freed"]
    calls = _janitor_at_the_end(monkeypatch, alive=[1, 0, 0, 0, 0], freed=[0, 0, 1, 0])
    assert calls == (one + ["sleep"]) * 4 + one  # rounds 1 (alive) and 3 (freed) are not clean
    assert _janitor_at_the_end(monkeypatch, alive=[0], freed=[0]) == one + ["sleep"] + one
    # the state API unanswered in 2 rounds: stop asking; past END_SETTLE_S: give up
    assert _janitor_at_the_end(monkeypatch, alive=[None], freed=[1]) == ["alive", "sleep", "alive"]
    assert _janitor_at_the_end(monkeypatch, alive=[0], freed=[0, None, 0]) == (
        one + ["sleep"] + one + ["sleep"] + one + ["sleep"] + one
    )  # an unanswered round in between starts the count of clean rounds again
    assert _janitor_at_the_end(monkeypatch, [1], [1], unanswered_before=3) == []
    monkeypatch.setattr(raycluster, "END_SETTLE_S", 0.0)
    assert _janitor_at_the_end(monkeypatch, alive=[1], freed=[1]) == one


def test_each_trial_records_its_groups_in_its_own_file() -> None:
    assert raycluster.groups_file("/r", "t1") == "/r/.worker_groups/t1"
    assert raycluster.groups_file("s3://b/r", "t1") is None  # bucket storage: not recorded
