"""MLflow tracking, written by the driver process only.

Where runs go: `mlflow.tracking_uri`, else env `MLFLOW_TRACKING_URI`, else the SQLite file
`mlflow.db` in the project root as an ABSOLUTE URI (Ray workers and DVC change the cwd). The
project root is the cwd, except under `dvc exp run --temp`, which runs in a copy under
`<root>/.dvc/tmp/exps/...`: then the outer project's mlflow.db is used so those runs land in
the same store. One experiment per corpus and direction; a sweep is a parent run with one child
run per trial (tag `mlflow.parentRunId`). Runs are found again by a key tag, so a resumed
sweep or training run keeps logging into the runs it started.

MLflow 3.17's UI opens every experiment in its GenAI view unless the browser has chosen "Model
training" (the sidebar switch, or `?workflowType=machine_learning` in the URL; the experiment's
`mlflow.experimentKind` tag is only honoured by builds without that switch). So each experiment
also gets a description linking to its runs and a saved runs view with the metric columns
(`RUNS_VIEW_ID`, an `mlflow.sharedViewState.` experiment tag, listed under "Views").

Each run records the data it used as MLflow dataset inputs (`dataset_inputs`): one per split of
`paths.prepared`, digest = the split file's sha256, with the download manifest's hash of the raw
split in its profile.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from pipeline.config import Config, flatten, from_env, project_root, trial_config
from pipeline.errors import UserError
from pipeline.outage import Buffer
from pipeline.ui import epoch_line, info

RUN_KEY_TAG = "seq2seq.run_key"  # identifies a train run / sweep / trial across restarts
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EPOCH_METRICS = (
    "train_loss",
    "val_loss",
    "val_ppl",
    "val_bleu",
    "tokens_per_s",
    "epoch_seconds",
    "bf16",  # 1: trained under bf16 autocast (train.bf16, seq2seq.precision), 0: fp32
    "bf16_speedup",  # train.bf16 auto: the start-up probe's fp32 / bf16 step time (if it ran)
)
NOTE_TAG = "mlflow.note.content"  # the experiment's description (markdown)
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."  # + view id: a saved runs view (UI "Views")
RUNS_VIEW_ID = "seq2seq-runs"
RUNS_VIEW_NAME = "Runs with BLEU and loss"
VIEW_METRICS = ("best_val_bleu", "val_bleu", "val_loss", "test_bleu", "test_chrf")
DATA_CONTEXT_TAG = "mlflow.data.context"
SPLIT_CONTEXTS = {"train": "training", "valid": "validation", "test": "testing"}
LOGGED_AT = "logged_at_ms"  # an epoch's first logging attempt (pipeline.outage replays keep it)


# ------------------------------------------------------------------------------- resolution
SQLITE = "sqlite:///"  # + the database path: absolute with a fourth slash, else relative


def _absolute_sqlite(uri: str, root: Path) -> str:
    """`sqlite:///rel.db` is relative to the cwd; anchor it at the project root instead."""
    db = sqlite_file(uri)
    if db is not None and not db.is_absolute():
        return SQLITE + str((root / db).resolve())
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def tracking_uri(
    configured: str | None = None,
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """mlflow.tracking_uri > env MLFLOW_TRACKING_URI > sqlite:////<root>/mlflow.db."""
    env = os.environ if env is None else env
    root = project_root(cwd)
    uri = from_env("mlflow.tracking_uri", configured, env) or f"{SQLITE}{root / 'mlflow.db'}"
    return _absolute_sqlite(uri, root)


def experiment_name(cfg: Config) -> str:
    d = cfg.data
    return cfg.mlflow.experiment or f"seq2seq-{d.corpus}-{d.source_lang}-{d.target_lang}"


SERVER_TIMEOUT_S = 5.0


def check_server(uri: str, timeout: float = SERVER_TIMEOUT_S) -> None:
    """For an http(s) tracking URI: the server answers its /health within `timeout` seconds,
    else a UserError (MLflow's own client retries for minutes before it gives up)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as res:
            if res.status == 200:
                return
            problem = f"answered {res.status}"
    except urllib.error.HTTPError as err:
        problem = f"answered {err.code}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    raise UserError(
        f"the MLflow tracking server {uri} is not reachable ({problem}, within {timeout:g} s)",
        fix="start it (see the README's tracking server section) or set mlflow.tracking_uri "
        "(or MLFLOW_TRACKING_URI) to a reachable server or a local store",
    )


def client_for(cfg: Config, cwd: str | Path | None = None) -> MlflowClient:
    """A client on the resolved store, checked: a server must answer within seconds, and the
    schema of a local store is created here, once, before any worker could race on it (a fresh
    SQLite DB initialised concurrently fails)."""
    uri = tracking_uri(cfg.mlflow.tracking_uri, cwd=cwd)
    check_server(uri)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # forces schema creation/migration now
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id by name, created if missing (artifacts beside a local SQLite store), with
    its runs made easy to reach in the UI (`set_up_runs_page`)."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else _create_experiment(client, name)
    set_up_runs_page(client, exp_id, dict(exp.tags) if exp is not None else {})
    return exp_id


def runs_path(experiment_id: str) -> str:
    """The UI route of the experiment's runs in the model-training view, with the saved view."""
    return (
        f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={RUNS_VIEW_ID}"
    )


def runs_view_state() -> dict[str, Any]:
    """The saved runs view: default columns plus the metrics that tell sweeps and trials apart
    (same keys as the state the UI writes when a user saves a view)."""
    columns = ["attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`"]
    return {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns + [f"metrics.`{m}`" for m in VIEW_METRICS],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "FIRST_10_RUNS",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "globalLineChartConfig": {
            "xAxisKey": "step",
            "lineSmoothness": 0,
            "selectedXAxisMetricKey": "",
        },
    }


def experiment_description(experiment_id: str) -> str:
    return (
        f'**[Open the runs]({runs_path(experiment_id)})** (saved view "{RUNS_VIEW_NAME}"): a '
        "parent run per `pipeline tune` sweep with a child run per trial, `pipeline train` and "
        "`evaluate` runs; each sweep's best model is in the **Model registry**. MLflow opens "
        "experiments in its GenAI view: choose **Model training** at the top of the sidebar "
        "to land on the runs instead."
    )


def set_up_runs_page(
    client: MlflowClient, experiment_id: str, tags: Mapping[str, str] | None = None
) -> None:
    """Kind tag, description (unless the user wrote one) and saved runs view; writes only what
    is missing or outdated. `tags`: the experiment's current tags, when already fetched."""
    tags = dict(client.get_experiment(experiment_id).tags) if tags is None else dict(tags)
    wanted = {EXPERIMENT_KIND_TAG: "custom_model_development"}
    if not tags.get(NOTE_TAG):
        wanted[NOTE_TAG] = experiment_description(experiment_id)
    view_key = SAVED_VIEW_PREFIX + RUNS_VIEW_ID
    state = json.dumps(runs_view_state())
    try:
        current = json.loads(tags.get(view_key) or "{}")
    except ValueError:
        current = {}
    if current.get("state") != state or current.get("name") != RUNS_VIEW_NAME:
        now = int(time.time() * 1000)
        wanted[view_key] = json.dumps(
            {
                "name": RUNS_VIEW_NAME,
                "createdAt": current.get("createdAt", now),
                "updatedAt": now,
                "state": state,
            }
        )
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)


def _create_experiment(client: MlflowClient, name: str) -> str:
    uri = client.tracking_uri
    db = sqlite_file(uri)
    location = (db.parent / "mlruns").as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ---------------------------------------------------------------------------------- tags
def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def base_tags(cfg: Config, command: str, cwd: str | Path | None = None) -> dict[str, str]:
    """Tags every run carries: git commit, corpus, direction, DVC stage (or the command)."""
    line = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) or command
    tags = {
        "corpus": cfg.data.corpus,
        "direction": f"{cfg.data.source_lang}-{cfg.data.target_lang}",
        "dvc_stage": os.environ.get("DVC_STAGE") or command,
        "command": line,
        "mlflow.source.name": line,  # the runs table's Source column
        "mlflow.source.type": "LOCAL",
    }
    commit = git_commit(project_root(cwd))
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    return tags


def config_params(cfg: Config | Mapping[str, Any]) -> dict[str, str]:
    """The flattened config as MLflow params (strings, within MLflow's value limit)."""
    tree = cfg.model_dump() if isinstance(cfg, Config) else dict(cfg)
    return {k: str(v)[:6000] for k, v in flatten(tree).items()}


# --------------------------------------------------------------------------------- runs
def find_run(client: MlflowClient, experiment_id: str, key: str) -> str | None:
    """The newest run tagged with run key `key`, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def open_run(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    *,
    name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    parent_id: str | None = None,
    reuse: bool = True,
) -> str:
    """Reuse the run tagged `key` (marked running again) or create it; returns its id."""
    run_id = find_run(client, experiment_id, key) if reuse else None
    if run_id is not None:
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return run_id
    all_tags = {**tags, RUN_KEY_TAG: key}
    if parent_id:
        all_tags[PARENT_TAG] = parent_id
    run_id = client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id
    if params:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=items[i : i + 100])
    return run_id


def log_epoch(client: MlflowClient, run_id: str, metrics: Mapping[str, Any]) -> None:
    """Per-epoch metrics with step = metrics["epoch"] (only the known numeric keys), stamped
    `metrics[LOGGED_AT]` (ms) when given: a replayed write then repeats the same rows."""
    step = int(metrics["epoch"])
    now = int(metrics.get(LOGGED_AT) or time.time() * 1000)
    batch = [
        Metric(k, float(metrics[k]), now, step)
        for k in EPOCH_METRICS
        if isinstance(metrics.get(k), (int, float))
    ]
    batch.append(Metric("epoch", float(step), now, step))
    client.log_batch(run_id, metrics=batch)


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def close_run(client: MlflowClient, run_id: str, ok: bool = True, killed: bool = False) -> None:
    """FINISHED when ok, KILLED when interrupted (Ctrl-C), else FAILED."""
    status = RunStatus.FINISHED if ok else RunStatus.KILLED if killed else RunStatus.FAILED
    client.set_terminated(run_id, status=RunStatus.to_string(status))


def logged_steps(client: MlflowClient, run_id: str) -> set[int]:
    """The epochs a run already holds (steps of its `epoch` metric, written by `log_epoch`)."""
    return {m.step for m in client.get_metric_history(run_id, "epoch")}


def metric_rows(client: MlflowClient, run_id: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """A run's per-epoch metrics as rows `{"epoch": step, key: value, ...}` sorted by epoch (the
    latest value of a step wins; a key missing at a step is None)."""
    rows: dict[int, dict[str, Any]] = {}
    for key in keys:
        for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            rows.setdefault(m.step, dict.fromkeys(keys))[key] = m.value
    return [{**rows[step], "epoch": step} for step in sorted(rows)]


def running_children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[str]:
    """Ids of the child runs of `parent_id` still marked RUNNING."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'",
    )
    return [r.info.run_id for r in runs]


def ui_hint(client: MlflowClient, experiment_id: str | None = None) -> str:
    """How to open the runs: the command, and the runs page of `experiment_id` when given."""
    uri = client.tracking_uri
    page = f", then open http://127.0.0.1:5000/{runs_path(experiment_id)}" if experiment_id else ""
    db = sqlite_file(uri)
    if db is not None:
        return f"run `mlflow ui` in {db.parent} (or `mlflow ui --backend-store-uri {uri}`){page}"
    page = f" and go to {uri.rstrip('/')}/{runs_path(experiment_id)}" if experiment_id else ""
    return f"open the MLflow server at {uri}{page}"


# ------------------------------------------------------------------------------ datasets
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rows(path: Path, meta: Mapping[str, Any], split: str) -> int:
    rows = meta.get("rows")
    if isinstance(rows, dict) and isinstance(rows.get(split), int):
        return rows[split]
    import polars as pl

    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _split_schema() -> str:
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    schema = Schema(
        [
            ColSpec(DataType.string, "src"),
            ColSpec(DataType.string, "tgt"),
            ColSpec(Array(DataType.long), "src_ids"),
            ColSpec(Array(DataType.long), "tgt_ids"),
        ]
    )
    return json.dumps({"mlflow_colspec": schema.to_dict()})


def dataset_input(cfg: Config, split: str, prepared: str | Path | None = None) -> DatasetInput:
    """One split of the prepared data as an MLflow dataset input.

    Name `<corpus>-<src>-<tgt>-<split>`, digest: the first 16 hex digits of the split file's
    sha256 (the exact bytes the run read), source: its local URI; the profile holds the row
    count, the preprocessing flags from meta.json and the raw split's sha256 from the download
    manifest (`paths.raw/manifest.json`), when those files are there.
    """
    folder = Path(prepared if prepared is not None else cfg.paths.prepared).resolve()
    path = folder / f"{split}.parquet"
    digest = _sha256(path)
    meta = _read_json(folder / "meta.json")
    manifest = _read_json(Path(cfg.paths.raw) / "manifest.json")
    raw = (manifest.get("splits") or {}).get(split) or {}
    d = cfg.data
    profile: dict[str, Any] = {
        "num_rows": _rows(path, meta, split),
        "sha256": digest,
        "corpus": d.corpus,
        "direction": f"{d.source_lang}-{d.target_lang}",
        **{k: meta[k] for k in ("lowercase", "reverse_source") if k in meta},
        **({"raw_sha256": raw["sha256"]} if raw.get("sha256") else {}),
    }
    dataset = Dataset(
        name=f"{d.corpus}-{d.source_lang}-{d.target_lang}-{split}",
        digest=digest[:16],
        source_type="local",
        source=json.dumps({"uri": path.as_uri()}),
        schema=_split_schema(),
        profile=json.dumps(profile),
    )
    context = InputTag(DATA_CONTEXT_TAG, SPLIT_CONTEXTS.get(split, split))
    return DatasetInput(dataset, tags=[context])


def dataset_inputs(
    cfg: Config, splits: Iterable[str], prepared: str | Path | None = None
) -> list[DatasetInput]:
    """`dataset_input` for each split whose file exists."""
    folder = Path(prepared if prepared is not None else cfg.paths.prepared)
    return [dataset_input(cfg, s, folder) for s in splits if (folder / f"{s}.parquet").is_file()]


def log_inputs(
    client: MlflowClient, run_id: str, datasets: Sequence[DatasetInput], models: Sequence = ()
) -> None:
    """Dataset (and logged-model) inputs of a run; logging the same input again is a no-op."""
    if datasets or models:
        client.log_inputs(run_id, datasets=list(datasets), models=list(models) or None)


def backfill(
    client: MlflowClient, run_id: str, record: Iterable[Mapping[str, Any]], logged: set[int]
) -> int:
    """Log each epoch of `record` that the run does not hold yet (`logged`: its epochs, updated);
    returns how many were logged. A lost driver can miss epochs whose checkpoint was saved:
    the training run resumes after them, so they are never reported again."""
    n = 0
    for metrics in record:
        if "epoch" in metrics and int(metrics["epoch"]) not in logged:
            log_epoch(client, run_id, metrics)
            logged.add(int(metrics["epoch"]))
            n += 1
    return n


def tag_outcome(
    client: MlflowClient, run_id: str, logged: set[int], epochs: int, ok: bool
) -> tuple[int, bool]:
    """Tag a trial's run with the epochs it holds (over every driver that logged into it) and
    whether it stopped before `epochs`; returns (epochs_run, stopped_early)."""
    ran = max(logged, default=0)
    stopped = ok and ran < epochs
    set_tags(client, run_id, {"stopped_early": str(stopped).lower(), "epochs_run": ran})
    return ran, stopped


class SweepTracker:
    """A sweep as one parent run with a child run per trial; reused on --resume.

    Pure MlflowClient calls, so the Tune callback that drives it (in the driver) stays thin.
    Every epoch lands in its trial's run exactly once, whichever driver reports it: the epochs a
    run holds are read from MLflow when the trial (re)starts, and an epoch it holds is skipped.
    """

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        sweep_key: str,
        *,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        epochs: int,
        inputs: Sequence[DatasetInput] = (),
    ) -> None:
        self.client, self.experiment_id, self.sweep_key = client, experiment_id, sweep_key
        self.tags, self.epochs, self.inputs = dict(tags), epochs, list(inputs)
        self.parent_id = open_run(
            client, experiment_id, sweep_key, name=sweep_key, tags=tags, params=params
        )
        log_inputs(client, self.parent_id, self.inputs)
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.logged: dict[str, set[int]] = {}  # trial id -> epochs its run holds
        self.trial_epochs: dict[str, int] = {}  # trial id -> its configured epochs

    def trial_started(
        self, trial_id: str, name: str, config: Config, record: Iterable[Mapping] = ()
    ) -> str:
        """Open (or reopen, on resume) the trial's run; log the epochs of `record` (what the
        trial's checkpoints hold) that it lacks."""
        run_id = open_run(
            self.client,
            self.experiment_id,
            f"{self.sweep_key}/{trial_id}",
            name=name,
            tags={**self.tags, "trial_id": trial_id},
            params=config_params(config),
            parent_id=self.parent_id,
        )
        log_inputs(self.client, run_id, self.inputs)
        self.runs[trial_id] = run_id
        self.logged[trial_id] = logged_steps(self.client, run_id)
        self.trial_epochs[trial_id] = config.train.epochs
        backfill(self.client, run_id, record, self.logged[trial_id])
        return run_id

    def trial_result(self, trial_id: str, metrics: Mapping[str, Any]) -> bool:
        """Log one epoch's metrics unless the run holds that epoch; True when logged."""
        if trial_id not in self.runs:
            return False
        return backfill(self.client, self.runs[trial_id], [metrics], self.logged[trial_id]) > 0

    def epochs_run(self, trial_id: str) -> int:
        return max(self.logged.get(trial_id, ()), default=0)

    def trial_finished(
        self, trial_id: str, ok: bool = True, record: Iterable[Mapping] = ()
    ) -> bool:
        """Complete the trial's run from `record`, tag and close it; returns (and tags) whether
        it stopped early (ASHA)."""
        if trial_id not in self.runs:
            return False
        run_id, logged = self.runs[trial_id], self.logged[trial_id]
        backfill(self.client, run_id, record, logged)
        epochs = self.trial_epochs.get(trial_id, self.epochs)
        _, stopped = tag_outcome(self.client, run_id, logged, epochs, ok)
        close_run(self.client, run_id, ok=ok)
        return stopped


def log_summary(client: MlflowClient, run_id: str, summary: Mapping[str, Any]) -> None:
    """A sweep's best-trial numbers on its parent run, as `best_<key>` metrics/tags."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"best_{k}", float(v), now, 0)
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    tags = [RunTag(f"best_{k}", str(v)) for k, v in summary.items() if isinstance(v, str)]
    client.log_batch(run_id, metrics=metrics, tags=tags)


# ---------------------------------------------------------------------- a sweep's Tune callback
TRAIN_SPLITS = ("train", "valid")  # what every trial reads (its dataset inputs)


def trial_name(sampled: dict[str, Any]) -> str:
    """A readable name from the sampled values, e.g. `num_layers=2 dropout=0.13`."""
    parts = []
    for key, value in sorted(sampled.items()):
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return " ".join(parts) or "defaults"


class MlflowTrialCallback:
    """Driver-side Tune callback: MLflow parent/child runs and a progress line per epoch.

    Pickled into the sweep's state (Tuner.restore brings it back), so it keeps only plain
    data and reconnects to MLflow lazily; runs are found again by their key tags. `runs_root`:
    the folder of the trials' Ray Train runs, whose checkpoints record every epoch that was
    saved (`records.train_record`): a trial that (re)starts or ends first gets from there the
    epochs a lost driver never logged.
    """

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        sweep: str,
        cfg: Config,
        prepared: str | None = None,
        runs_root: str | None = None,
    ) -> None:
        self.uri, self.experiment_id, self.sweep = uri, experiment_id, sweep
        self.base, self.prepared, self.runs_root = cfg.model_dump(), prepared, runs_root
        self._tracker: SweepTracker | None = None
        self._buffer: Buffer | None = None

    def __getstate__(self) -> dict:  # pickled by Tune: no client, no queued closures
        return {**self.__dict__, "_tracker": None, "_buffer": None}

    @property
    def buffer(self) -> Buffer:
        """Tracking writes, kept across an outage of the tracking server (pipeline.outage)."""
        if getattr(self, "_buffer", None) is None:
            retry_for_s = Config.model_validate(self.base).mlflow.retry_for_s
            fix = "run `pipeline tune --resume` (every checkpointed epoch is logged then)"
            self._buffer = Buffer(self.uri, retry_for_s, next_step=fix)
        return self._buffer  # type: ignore[return-value]

    def drain(self) -> None:
        """Send what an outage held back; a UserError if the server stays down too long."""
        self.buffer.drain()

    @property
    def tracker(self) -> SweepTracker:
        if self._tracker is None:
            from mlflow.tracking import MlflowClient

            cfg = Config.model_validate(self.base)
            prepared = getattr(self, "prepared", None)  # absent in callbacks pickled before
            self._tracker = SweepTracker(
                MlflowClient(self.uri),
                self.experiment_id,
                self.sweep,
                tags=base_tags(cfg, "pipeline tune"),
                params=config_params(cfg),
                epochs=cfg.train.epochs,
                inputs=dataset_inputs(cfg, TRAIN_SPLITS, prepared),
            )
        return self._tracker

    def record(self, trial_id: str) -> list[dict[str, Any]]:
        """The epochs the trial's checkpoints hold ([] before its first checkpoint)."""
        root = getattr(self, "runs_root", None)
        if not root:
            return []
        from pipeline.records import train_record

        return train_record(f"{root}/{trial_id}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info_: Any) -> None:
        tid, name = trial.trial_id, trial_name(trial.config)
        cfg = trial_config(self.base, trial.config)
        record = self.record(tid)
        self.buffer.submit(
            f"open {tid}'s run", lambda: self.tracker.trial_started(tid, name, cfg, record)
        )
        resumed = f" (resumed after epoch {record[-1]['epoch']})" if record else ""
        info(f"{tid} started: {name}{resumed}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **_) -> None:
        tid, metrics = trial.trial_id, {**result, LOGGED_AT: int(time.time() * 1000)}
        what = f"{tid} epoch {metrics.get('epoch')}"
        sent, logged = self.buffer.submit(what, lambda: self.tracker.trial_result(tid, metrics))
        if logged or not sent:  # a new epoch (or one held back by an outage): show it
            epochs = trial_config(self.base, trial.config).train.epochs
            held = "" if sent else " [yellow](MLflow down: kept for replay)[/]"
            info(epoch_line(result, epochs, prefix=f"{tid} ") + held)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
        tid, record = trial.trial_id, self.record(trial.trial_id)
        sent, stopped = self.buffer.submit(
            f"close {tid}'s run", lambda: self.tracker.trial_finished(tid, ok=True, record=record)
        )
        ran = (
            self.tracker.epochs_run(tid)
            if sent
            else max([int(r["epoch"]) for r in record], default=0)
        )
        note = " (stopped early by ASHA)" if stopped else ""
        info(f"{tid} finished after {ran} epoch(s){note}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
        tid, record = trial.trial_id, self.record(trial.trial_id)
        self.buffer.submit(
            f"close {tid}'s run", lambda: self.tracker.trial_finished(tid, ok=False, record=record)
        )
        info(f"[red]{tid} failed[/]: see {trial.local_path}")


def callback_class() -> type:
    """MlflowTrialCallback as a ray.tune.Callback (ray imported only when a sweep runs)."""
    from ray.tune import Callback

    return type("MlflowTuneCallback", (MlflowTrialCallback, Callback), {})
