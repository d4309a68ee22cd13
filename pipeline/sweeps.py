"""What a finished sweep leaves behind (`finish`): `models/best` (the best trial's best
checkpoint, its config, vocabularies and `info.json`), `models/trials.csv`, `models/curves/*.csv`
and `models/learning_curves.png`; on the sweep's parent run the best-trial summary, the figure
and the best model as an MLflow pyfunc model, registered as a new version of
`seq2seq-<corpus>-<src>-<tgt>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Config, trial_config
from pipeline.errors import UserError
from pipeline.ui import info

CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_ppl", "val_bleu")
INFO_FILE = "info.json"  # models/best: where it came from (read by evaluate)


def _curve(result: Any) -> Any:
    """A trial's per-epoch metrics (polars frame, one row per epoch, last report wins)."""
    import polars as pl

    df = result.metrics_dataframe
    if df is None or "epoch" not in df:
        return pl.DataFrame(
            {c: [] for c in CURVE_COLUMNS}, schema=dict.fromkeys(CURVE_COLUMNS, pl.Float64)
        )
    frame = pl.from_pandas(df[[c for c in CURVE_COLUMNS if c in df]])
    return frame.unique("epoch", keep="last").sort("epoch")


def trial_rows(cfg: Config, grid: Any, client: Any, exp_id: str, sweep: str) -> list[dict]:
    """One row per trial: id, sampled params, best metrics, epochs run, early stop, MLflow run."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    rows = []
    for result in grid:
        trial_id = Path(result.path).name
        curve = _curve(result)
        best = curve.sort(metric, descending=mode == "max").head(1).to_dicts() if len(curve) else []
        ran = int(curve["epoch"].max()) if len(curve) else 0
        row: dict[str, Any] = {"trial": trial_id, **(result.config or {})}
        for key in ("val_bleu", "val_loss", "val_ppl"):
            row[f"best_{key}" if key == metric else key] = best[0].get(key) if best else None
        row.update(
            epochs_run=ran,
            stopped_early=result.error is None and ran < cfg.train.epochs,
            status="error" if result.error is not None else "ok",
            mlflow_run_id=tracking.find_run(client, exp_id, f"{sweep}/{trial_id}") or "",
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
    best = grid.get_best_result(metric, mode, scope="all")
    if best is None or not best.metrics or "checkpoint_path" not in best.metrics:
        raise UserError(
            "no trial finished an epoch, so there is no checkpoint to export",
            fix="see the trial errors above (or run with --verbose)",
        )
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
    curve = _curve(best)
    top = curve.sort(metric, descending=mode == "max").head(1).to_dicts()[0]
    return {"trial": Path(best.path).name, "params": best.config, **top}


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


def finish(cfg: Config, grid: Any, client: Any, exp_id: str, sweep: str, prepared: Path) -> dict:
    """Export models/best, write trials.csv, curves and their figure, log the figure and the
    registered model on the parent run, close it, print a summary."""
    rows = trial_rows(cfg, grid, client, exp_id, sweep)
    _write_tables(cfg, grid, rows)
    _print_table(rows)
    summary = export_best(cfg, grid, prepared)
    figure = learning_curves_png(cfg, summary["trial"])
    parent = tracking.find_run(client, exp_id, sweep)
    version = None
    if parent:
        flat = {k: v for k, v in summary.items() if k != "params"}
        tracking.set_tags(client, parent, {"best_trial": summary["trial"]})
        tracking.log_summary(client, parent, flat)
        version = publish(cfg, client, exp_id, parent, {**summary, "sweep": sweep}, figure)
        tracking.close_run(client, parent, ok=True)
    best_dir = Path(cfg.paths.models, "best").resolve()
    info(
        f"best trial {summary['trial']} ({tracking.trial_name(summary['params'])}): "
        f"val BLEU {summary.get('val_bleu', float('nan')):.2f}, "
        f"val ppl {summary.get('val_ppl', float('nan')):.2f} at epoch {int(summary['epoch'])}"
    )
    info(f"best checkpoint, config and vocabularies: {best_dir}")
    if version is not None:
        info(
            f"registered model {version.name} version {version.version}: "
            f'mlflow.pyfunc.load_model("models:/{version.name}/{version.version}")'
        )
    info(f"MLflow: {tracking.ui_hint(client, exp_id)}")
    return summary
