"""What a finished sweep leaves behind (`finish`): `models/best` (the best trial's best
checkpoint, its config, vocabularies and `info.json`), `models/top/<rank>/checkpoint.pt` (the best
checkpoint of each of the `tune.export_top` best trials, for ensembles) with
`models/top/members.json`, `models/trials.csv`, `models/curves/*.csv`
and `models/learning_curves.png`; on the sweep's parent run the best-trial summary, the figure
and the best model as an MLflow pyfunc model, registered as a new version of
`seq2seq-<corpus>-<src>-<tgt>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Config, trial_config
from pipeline.errors import UserError
from pipeline.records import train_record
from pipeline.ui import info

CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_ppl", "val_bleu")
INFO_FILE = "info.json"  # models/best: where it came from (read by evaluate)


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the sweep's outputs see it, rebuilt from what survives a lost driver: Tune's
    trial list (id, sampled config, error), the trial's MLflow run (every epoch, exactly once)
    and its Ray Train checkpoints. Tune's own result log is not used: a trial restored after the
    driver died restarts there from nothing while its training run resumes. Has the fields of
    Tune's `Result` that the exports read (`path`, `config`, `error`, `metrics`)."""

    path: str  # Tune's trial folder: its name is the trial id
    config: dict[str, Any]  # the sampled values
    error: Any  # None unless the trial failed
    curve: Any  # polars frame, CURVE_COLUMNS, one row per epoch (its MLflow run's history)
    metrics: dict[str, Any]  # the latest checkpoint's metrics and checkpoint_path; {}: none
    run_id: str  # its MLflow run ("" if none)


def _curve(result: Any) -> Any:
    """A trial's per-epoch metrics (polars frame, one row per epoch)."""
    return result.curve


def _frame(rows: list[dict[str, Any]]) -> Any:
    import polars as pl

    schema = {c: pl.Int64 if c == "epoch" else pl.Float64 for c in CURVE_COLUMNS}
    return pl.DataFrame([{c: r.get(c) for c in CURVE_COLUMNS} for r in rows], schema=schema)


def outcome(cfg: Config, result: Any, client: Any, exp_id: str, sweep: str, runs: str) -> Any:
    """A finished trial's `TrialOutcome` from Tune's `result` (id, config, error): its MLflow
    run completed from its checkpoints' record, tagged and closed if still open; the curve is
    the run's history, so trials.csv and curves agree with MLflow."""
    trial_id = Path(result.path).name
    record = train_record(f"{runs}/{trial_id}")
    run_id = tracking.find_run(client, exp_id, f"{sweep}/{trial_id}") or ""
    if not run_id and record:  # its start never reached MLflow (the server was down)
        run_id = _open_trial_run(cfg, client, exp_id, sweep, trial_id, result.config or {})
    ok = result.error is None
    rows: list[dict[str, Any]] = record
    if run_id:
        logged = tracking.logged_steps(client, run_id)
        tracking.backfill(client, run_id, record, logged)
        epochs = trial_config(cfg, result.config or {}).train.epochs
        tracking.tag_outcome(client, run_id, logged, epochs, ok)
        if client.get_run(run_id).info.status == "RUNNING":
            tracking.close_run(client, run_id, ok=ok)
        rows = tracking.metric_rows(client, run_id, CURVE_COLUMNS[1:])
    metrics = dict(record[-1]) if record else {}
    return TrialOutcome(
        result.path, result.config or {}, result.error, _frame(rows), metrics, run_id
    )


def _open_trial_run(
    cfg: Config, client: Any, exp_id: str, sweep: str, trial_id: str, sampled: dict[str, Any]
) -> str:
    """Open a trial's run (and the sweep's parent, if missing) as the sweep's callback would."""
    tracker = tracking.SweepTracker(
        client,
        exp_id,
        sweep,
        tags=tracking.base_tags(cfg, "pipeline tune"),
        params=tracking.config_params(cfg),
        epochs=cfg.train.epochs,
        inputs=tracking.dataset_inputs(cfg, tracking.TRAIN_SPLITS),
    )
    name = tracking.trial_name(sampled)
    return tracker.trial_started(trial_id, name, trial_config(cfg, sampled))


def outcomes(cfg: Config, grid: Any, client: Any, exp_id: str, sweep: str, runs: str) -> list:
    """`outcome` of every trial of the finished sweep (`runs`: its Train runs' folder)."""
    return [outcome(cfg, result, client, exp_id, sweep, runs) for result in grid]


def trial_rows(cfg: Config, grid: Any, client: Any, exp_id: str, sweep: str) -> list[dict]:
    """One row per trial: id, sampled params, best metrics, epochs run, early stop, MLflow run."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    rows = []
    for result in grid:
        trial_id = Path(result.path).name
        curve = _curve(result).drop_nulls(metric)
        best = curve.sort(metric, descending=mode == "max").head(1).to_dicts()
        ran = int(_curve(result)["epoch"].max() or 0)
        row: dict[str, Any] = {"trial": trial_id, **(result.config or {})}
        for key in ("val_bleu", "val_loss", "val_ppl"):
            row[f"best_{key}" if key == metric else key] = best[0].get(key) if best else None
        epochs = trial_config(cfg, result.config or {}).train.epochs
        row.update(
            epochs_run=ran,
            stopped_early=result.error is None and ran < epochs,
            status="error" if result.error is not None else "ok",
            mlflow_run_id=result.run_id,
        )
        rows.append(row)
    return rows


def export_best(cfg: Config, grid: Any, prepared: Path) -> dict[str, Any]:
    """Best trial's best checkpoint + its config + vocabularies -> paths.models/best (atomic)."""
    import json
    import os
    import shutil

    import ray.train

    from seq2seq.io import atomic_dir

    metric, mode = cfg.tune.metric, cfg.tune.mode
    ranked = ranked_trials(grid, metric, mode)
    if not ranked:
        raise UserError(
            "no trial finished an epoch, so there is no checkpoint to export",
            fix="see the trial errors above (or run with --verbose)",
        )
    top, best = ranked[0]
    run_dir = os.path.dirname(best.metrics["checkpoint_path"])
    ckpt = ray.train.Result.from_path(run_dir).get_best_checkpoint(metric, mode)
    if ckpt is None:
        raise UserError(
            f"the best trial {Path(best.path).name} has no checkpoint in {run_dir}",
            fix="check ray.storage_path, then `pipeline tune --resume` or a fresh sweep",
        )
    trial_cfg = trial_config(cfg, best.config)
    with atomic_dir(Path(cfg.paths.models) / "best") as tmp, ckpt.as_directory() as src:
        shutil.copy2(Path(src) / "checkpoint.pt", tmp / "checkpoint.pt")
        (tmp / "config.json").write_text(json.dumps(trial_cfg.model_dump(), indent=2) + "\n")
        for name in ("vocab.src.json", "vocab.tgt.json"):
            shutil.copy2(prepared / name, tmp / name)
    return {"trial": Path(best.path).name, "params": best.config, **top}


def ranked_trials(grid: Any, metric: str, mode: str) -> list[tuple[dict, Any]]:
    """(best epoch row, result) of every trial that reported a checkpoint, best trial first
    (by its best `metric`, as `get_best_result(scope="all")` ranks them; ties by trial id)."""
    ranked = []
    for result in grid:
        if not result.metrics or "checkpoint_path" not in result.metrics:
            continue
        curve = _curve(result)
        if metric not in curve.columns:
            continue
        rows = curve.drop_nulls(metric).sort(metric, descending=mode == "max").head(1).to_dicts()
        if rows:
            ranked.append((rows[0], result))
    sign = -1.0 if mode == "max" else 1.0
    return sorted(ranked, key=lambda pair: (sign * pair[0][metric], Path(pair[1].path).name))


def _trial_checkpoint(result: Any, metric: str, mode: str) -> Any:
    """A trial's best Ray checkpoint (None when its run folder holds none)."""
    import os

    import ray.train

    run_dir = os.path.dirname(result.metrics["checkpoint_path"])
    return ray.train.Result.from_path(run_dir).get_best_checkpoint(metric, mode)


def export_top(cfg: Config, grid: Any) -> list[dict]:
    """The best checkpoint of each of the `tune.export_top` best trials -> paths.models/top/
    <rank>/checkpoint.pt (rank 1: the best trial, the checkpoint models/best holds; optimizer
    state dropped) and top/members.json (rank, trial, metric, epoch, sampled params), atomically.
    Fewer when fewer trials left a checkpoint; evaluate.ensemble takes ranks 1..K."""
    from pipeline.ensembles import MEMBERS_FILE, TOP_DIR
    from seq2seq.checkpoint import copy_for_inference
    from seq2seq.io import atomic_dir, write_json

    metric, mode = cfg.tune.metric, cfg.tune.mode
    members: list[dict] = []
    with atomic_dir(Path(cfg.paths.models) / TOP_DIR) as tmp:
        for row, result in ranked_trials(grid, metric, mode):
            if len(members) == cfg.tune.export_top:
                break
            ckpt = _trial_checkpoint(result, metric, mode)
            if ckpt is None:
                continue
            rank = len(members) + 1
            with ckpt.as_directory() as src:
                copy_for_inference(Path(src) / "checkpoint.pt", tmp / str(rank))
            trial = Path(result.path).name
            epoch, params = int(row["epoch"]), result.config or {}
            members.append(
                {
                    "rank": rank,
                    "trial": trial,
                    metric: row[metric],
                    "epoch": epoch,
                    "params": params,
                }
            )
        write_json(tmp / MEMBERS_FILE, members)
    return members


def _write_tables(cfg: Config, grid: Any, rows: list[dict]) -> None:
    import polars as pl

    from seq2seq.io import atomic_dir, atomic_file

    models = Path(cfg.paths.models)
    with atomic_file(models / "trials.csv") as tmp:
        pl.DataFrame(rows).write_csv(tmp)
    with atomic_dir(models / "curves") as tmp:
        for result in grid:
            _curve(result).write_csv(tmp / f"{Path(result.path).name}.csv")


def learning_curves_png(cfg: Config, best_trial: str | None = None) -> Path:
    """models/learning_curves.png from models/curves/*.csv (val_bleu, val_loss per trial)."""
    from pipeline import figures

    models = Path(cfg.paths.models)
    curves = figures.read_curves(models / "curves")
    return figures.learning_curves(curves, models / figures.LEARNING_CURVES_FILE, best=best_trial)


def publish(cfg: Config, client: Any, exp_id: str, parent: str, summary: dict, figure: Path) -> Any:
    """On the sweep's parent run: the figure, and models/best as a registered pyfunc model;
    then models/best/info.json says which trial, run and model version it is."""
    from pipeline import registry
    from seq2seq.io import write_json

    best = Path(cfg.paths.models) / "best"
    client.log_artifact(parent, str(figure), "figures")
    commit = tracking.git_commit(tracking.project_root())
    version = registry.log_best_model(
        client,
        cfg,
        parent,
        best,
        tags={
            "git_commit": commit or "unknown",
            "sweep": summary.get("sweep", ""),
            "best_trial": summary["trial"],
            "val_bleu": summary.get("val_bleu", ""),
        },
    )
    trial_run = tracking.find_run(client, exp_id, f"{summary.get('sweep', '')}/{summary['trial']}")
    write_json(
        best / INFO_FILE,
        {
            "trial_id": summary["trial"],
            "mlflow_run_id": trial_run or "",
            "sweep_run_id": parent,
            "registered_model": version.name,
            "model_version": version.version,
            "model_id": version.tags.get("model_id", ""),
            "dvc_exp": registry.dvc_experiment(),
            "git_commit": commit,
        },
    )
    return version


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.ui import console

    if not console.is_terminal:  # logs (DVC, CI): wide enough for one row per trial
        console = Console(stderr=True, width=200)

    if not rows:
        return
    table = Table(title="trials")
    keys = list(rows[0])
    for k in keys:
        table.add_column(k.rsplit(".", 1)[-1], overflow="fold")
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in map(row.get, keys)]
        table.add_row(*cells)
    console.print(table)


def finish(
    cfg: Config,
    grid: Any,
    client: Any,
    exp_id: str,
    sweep: str,
    prepared: Path,
    register: bool = True,
) -> dict:
    """Export models/best, write trials.csv, curves and their figure, log the figure and (with
    `register`) the registered model on the parent run, close it, print a summary."""
    rows = trial_rows(cfg, grid, client, exp_id, sweep)
    _write_tables(cfg, grid, rows)
    _print_table(rows)
    summary = export_best(cfg, grid, prepared)
    members = export_top(cfg, grid)
    figure = learning_curves_png(cfg, summary["trial"])
    parent = tracking.find_run(client, exp_id, sweep)
    version = None
    if parent:
        flat = {k: v for k, v in summary.items() if k != "params"}
        tracking.set_tags(client, parent, {"best_trial": summary["trial"]})
        tracking.log_summary(client, parent, flat)
        if register:
            version = publish(cfg, client, exp_id, parent, {**summary, "sweep": sweep}, figure)
        else:
            client.log_artifact(parent, str(figure), "figures")
        tracking.close_run(client, parent, ok=True)
    best_dir = Path(cfg.paths.models, "best").resolve()
    info(
        f"best trial {summary['trial']} ({tracking.trial_name(summary['params'])}): "
        f"val BLEU {summary.get('val_bleu', float('nan')):.2f}, "
        f"val ppl {summary.get('val_ppl', float('nan')):.2f} at epoch {int(summary['epoch'])}"
    )
    info(f"best checkpoint, config and vocabularies: {best_dir}")
    top_dir = Path(cfg.paths.models, "top").resolve()
    info(f"{len(members)} ensemble member(s) for evaluate.ensemble: {top_dir}")
    if version is not None:
        info(
            f"registered model {version.name} version {version.version}: "
            f'mlflow.pyfunc.load_model("models:/{version.name}/{version.version}")'
        )
    info(f"MLflow: {tracking.ui_hint(client, exp_id)}")
    return summary
