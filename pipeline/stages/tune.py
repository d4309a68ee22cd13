"""`pipeline tune`: a Ray Tune sweep whose every trial is a Ray Train (V2) DDP run.

Shape (Ray 2.60): a Tune function trainable builds a `TorchTrainer` and calls `.fit()` with
`TuneReportCallback`, so rank 0's epoch reports reach Tune (ASHA on `epoch`) and the driver.
Each trial's driver holds one `trial_driver` token (no CPU), and `max_concurrent_trials` is
sized so that every running trial's worker group fits the cluster at once (otherwise trial
drivers hold the CPUs their workers wait for, and the sweep deadlocks).

A fresh `pipeline tune` always starts a new sweep (a timestamped name); `--resume` continues the
newest sweep of the same config and data, without redoing finished trials; unfinished trials
resume from their last epoch checkpoint. Only this driver writes MLflow: a parent run for the
sweep and a child run per trial, through `MlflowTrialCallback`, each with the prepared train and
valid splits as dataset inputs.

When the sweep ends (`finish`): `models/best` (the best checkpoint, its config, vocabularies and
`info.json`), `models/trials.csv`, `models/curves/*.csv` and `models/learning_curves.png`; on the
parent run the best-trial summary, the learning-curves figure and the best model as an MLflow
pyfunc model, registered as a new version of `seq2seq-<corpus>-<src>-<tgt>`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline import raycluster, tracking
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages.train import (
    build_trainer,
    check_bf16,
    check_prepared,
    epoch_line,
    info,
    run_key,
)


def search_space(cfg: Config) -> dict[str, Any]:
    """tune.search_space (dotted key -> distribution) as Ray Tune sampling objects."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, dist in cfg.tune.search_space.items():
        if dist.choice is not None:
            space[key] = tune.choice(list(dist.choice))
        elif dist.uniform is not None:
            space[key] = tune.uniform(*dist.uniform)
        elif dist.loguniform is not None:
            space[key] = tune.loguniform(*dist.loguniform)
        else:
            space[key] = tune.randint(*dist.randint)
    return space


def trial_name(sampled: dict[str, Any]) -> str:
    """A readable name from the sampled values, e.g. `num_layers=2 dropout=0.13`."""
    parts = []
    for key, value in sorted(sampled.items()):
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return " ".join(parts) or "defaults"


def run_trial(
    config: dict[str, Any], *, base: dict, prepared: str, storage: str, gpu: bool, verbose: bool
) -> None:
    """The Tune trainable: one Train V2 run of the base config with the sampled overrides."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = Config.model_validate(base).with_overrides(config)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(
        cfg, Path(prepared), name=trial_id, storage=storage, gpu=gpu,
        callbacks=[TuneReportCallback()], verbose=verbose,
    )  # fmt: skip
    trainer.fit()  # same name + storage: a restored trial resumes from its checkpoint


class MlflowTrialCallback:
    """Driver-side Tune callback: MLflow parent/child runs and a progress line per epoch.

    Pickled into the sweep's state (Tuner.restore brings it back), so it keeps only plain
    data and reconnects to MLflow lazily; runs are found again by their key tags.
    """

    def __init__(
        self, uri: str, experiment_id: str, sweep: str, cfg: Config, prepared: str | None = None
    ) -> None:
        self.uri, self.experiment_id, self.sweep = uri, experiment_id, sweep
        self.base, self.prepared = cfg.model_dump(), prepared
        self._tracker: tracking.SweepTracker | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tracker": None}

    @property
    def tracker(self) -> tracking.SweepTracker:
        if self._tracker is None:
            from mlflow.tracking import MlflowClient

            cfg = Config.model_validate(self.base)
            prepared = getattr(self, "prepared", None)  # absent in callbacks pickled before
            self._tracker = tracking.SweepTracker(
                MlflowClient(self.uri), self.experiment_id, self.sweep,
                tags=tracking.base_tags(cfg, "pipeline tune"),
                params=tracking.config_params(cfg), epochs=cfg.train.epochs,
                inputs=tracking.dataset_inputs(cfg, TRAIN_SPLITS, prepared),
            )  # fmt: skip
        return self._tracker

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info_: Any) -> None:
        cfg = Config.model_validate(self.base).with_overrides(trial.config)
        self.tracker.trial_started(trial.trial_id, trial_name(trial.config), cfg)
        info(f"{trial.trial_id} started: {trial_name(trial.config)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **_) -> None:
        self.tracker.trial_result(trial.trial_id, result)
        if "epoch" in result:
            info(epoch_line(result, self.tracker.epochs, prefix=f"{trial.trial_id} "))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
        stopped = self.tracker.trial_finished(trial.trial_id, ok=True)
        ran = self.tracker.last_epoch.get(trial.trial_id, 0)
        note = " (stopped early by ASHA)" if stopped else ""
        info(f"{trial.trial_id} finished after {ran} epoch(s){note}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
        self.tracker.trial_finished(trial.trial_id, ok=False)
        info(f"[red]{trial.trial_id} failed[/]: see {trial.local_path}")


def _callback_class() -> type:
    """MlflowTrialCallback as a ray.tune.Callback (ray imported only when a sweep runs)."""
    from ray.tune import Callback

    return type("MlflowTuneCallback", (MlflowTrialCallback, Callback), {})


def _sweep_path(cfg: Config, prepared: Path, resume: bool) -> tuple[str, str]:
    """(Tune storage folder, sweep name): new for a fresh run, the newest match for --resume."""
    from ray import tune

    sweep = cfg.tune.model_dump(exclude={"num_samples", "max_concurrent_trials"})
    key = run_key(cfg, prepared, prefix="tune", extra=sweep)
    root = f"{raycluster.storage_root(cfg)}/sweeps"
    if not resume:
        return root, f"{key}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(root)
    found = sorted(folder.glob(f"{key}-*")) if folder.is_dir() else []
    found = [p for p in found if tune.Tuner.can_restore(str(p))]
    if not found:
        raise UserError(
            f"no interrupted sweep of this config and data under {root}",
            fix="run `pipeline tune` without --resume to start a new sweep",
        )
    return root, found[-1].name


def _tuner(cfg: Config, trainable: Any, root: str, name: str, callback: Any, n: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=cfg.train.epochs + 1,
        grace_period=cfg.tune.grace_period, reduction_factor=cfg.tune.reduction_factor,
    )  # fmt: skip
    tune_config = tune.TuneConfig(
        metric=cfg.tune.metric, mode=cfg.tune.mode, num_samples=cfg.tune.num_samples,
        scheduler=scheduler, search_alg=BasicVariantGenerator(random_state=cfg.tune.seed),
        max_concurrent_trials=n, trial_dirname_creator=lambda t: t.trial_id,
    )  # fmt: skip
    run_config = tune.RunConfig(name=name, storage_path=root, callbacks=[callback], verbose=0)
    return tune.Tuner(
        trainable, param_space=search_space(cfg), tune_config=tune_config, run_config=run_config
    )


def _check_complete(path: str, name: str) -> None:
    """Ctrl-C makes Tune stop gracefully and fit() return: the saved trial states tell."""
    from ray.tune import ExperimentAnalysis

    statuses = [t.status for t in ExperimentAnalysis(path).trials]
    done = sum(s in ("TERMINATED", "ERROR") for s in statuses)
    if done < len(statuses):
        raise UserError(
            f"sweep {name} interrupted: {done} of {len(statuses)} trials finished; "
            "models/ left unchanged",
            fix="continue it with `pipeline tune --resume`",
        )


def run(cfg: Config, resume: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Run (or resume) the sweep, export the best checkpoint, write the trials table/curves."""
    raycluster.prepare_env(cfg, verbose)  # before ray is imported
    from ray import tune

    check_bf16(cfg)  # before any work: a bf16 mode the CPU cannot run
    prepared = check_prepared(cfg)
    client = tracking.client_for(cfg)  # schema initialised before any Ray process
    exp_id = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    root, name = _sweep_path(cfg, prepared, resume)
    gpu_hint = cfg.train.use_gpu == "on"
    slots = raycluster.trials_that_fit(cfg, raycluster.planned_cpus(cfg), 0, gpu_hint)
    cluster = raycluster.init(cfg, verbose=verbose, trial_drivers=slots)
    try:
        gpu = raycluster.use_gpu(cfg, cluster)
        n = raycluster.trials_that_fit(cfg, cluster.cpus, cluster.gpus, gpu)
        driver = {raycluster.TRIAL_DRIVER: 1} if cluster.trial_driver_slots else {"CPU": 1}
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, base=cfg.model_dump(), prepared=str(prepared),
                storage=f"{raycluster.storage_root(cfg)}/sweep_runs/{name}", gpu=gpu,
                verbose=verbose,
            ),
            driver,
        )  # fmt: skip
        info(
            f"sweep {name}: {cfg.tune.num_samples} trials, {n} at a time, "
            f"{cfg.train.num_workers} {'GPU' if gpu else 'CPU'} worker(s) each"
            + (" (resumed)" if resume else "")
        )
        callback = _callback_class()(client.tracking_uri, exp_id, name, cfg, str(prepared))
        if resume:
            tuner = tune.Tuner.restore(
                f"{root}/{name}", trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = _tuner(cfg, trainable, root, name, callback, n)
        grid = tuner.fit()
        _check_complete(f"{root}/{name}", name)
        return finish(cfg, grid, client, exp_id, name, prepared)
    except BaseException:  # interrupted or failed: the parent run says so (--resume reopens it)
        parent = tracking.find_run(client, exp_id, name)
        if parent:
            tracking.close_run(client, parent, ok=False)
        raise
    finally:
        raycluster.shutdown()


# ---------------------------------------------------------------------------- when it ends
CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_ppl", "val_bleu")
TRAIN_SPLITS = ("train", "valid")  # what every trial reads (dataset inputs)
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
    trial_cfg = Config.model_validate(cfg.model_dump()).with_overrides(best.config)
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
        f"best trial {summary['trial']} ({trial_name(summary['params'])}): "
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
