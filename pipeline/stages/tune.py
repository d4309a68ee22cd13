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

A driver can die at any moment (SIGKILL): Tune's saved state then lags by up to ~10 s, so a
trial that had finished may be started again. Each trial's Ray Train checkpoints are the record
that survives (`records.train_record`): a trial whose record reaches its last epoch reports that
epoch and trains nothing, epochs saved but never logged are added to its MLflow run (each epoch
exactly once), and the outputs come from MLflow and the checkpoints (`sweeps.outcomes`), not from
Tune's result log. ASHA's rungs are not saved: a resumed sweep judges the remaining trials afresh.
Interrupted (Ctrl-C) or failed, no MLflow run is left RUNNING (KILLED or FAILED until resumed).

When the sweep ends (`finish`): `models/best` (the best checkpoint, its config, vocabularies and
`info.json`), `models/trials.csv`, `models/curves/*.csv` and `models/learning_curves.png`; on the
parent run the best-trial summary, the learning-curves figure and the best model as an MLflow
pyfunc model, registered as a new version of `seq2seq-<corpus>-<src>-<tgt>`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipeline import outage, raycluster, runs, sweeps, tracking
from pipeline.config import Config, check_output_folder
from pipeline.errors import UserError
from pipeline.trial import run_trial
from pipeline.ui import info


def search_space(cfg: Config) -> dict[str, Any]:
    """tune.search_space (dotted key -> distribution) as Ray Tune sampling objects."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, dist in cfg.tune.search_space.items():
        if dist.choice is not None:
            space[key] = tune.choice(list(dist.choice))
        elif dist.grid is not None:
            space[key] = tune.grid_search(list(dist.grid))
        elif dist.uniform is not None:
            space[key] = tune.uniform(*dist.uniform)
        elif dist.loguniform is not None:
            space[key] = tune.loguniform(*dist.loguniform)
        elif dist.randint is not None:
            space[key] = tune.randint(*dist.randint)
    return space


def _sweep_path(cfg: Config, prepared: Path, resume: bool) -> tuple[str, str]:
    """(Tune storage folder, sweep name): new for a fresh run, the newest match for --resume."""
    from ray import tune

    sweep = cfg.tune.model_dump(exclude={"num_samples", "max_concurrent_trials", "export_top"})
    key = runs.run_key(cfg, prepared, prefix="tune", extra=sweep)
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


def asha_max_t(epochs: int) -> int:
    """ASHA's `max_t` for runs of `epochs` epochs: one past the last, so that the scheduler
    never stops a trial at its last epoch itself (the run ends there; benchmarks/asha_replay.py
    replays sweeps with the same rungs)."""
    return epochs + 1


def _tuner(cfg: Config, trainable: Any, root: str, name: str, callback: Any, n: int) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    scheduler = (
        FIFOScheduler()
        if cfg.tune.scheduler == "fifo"
        else ASHAScheduler(
            time_attr="epoch",
            max_t=asha_max_t(cfg.train.epochs),
            grace_period=cfg.tune.grace_period,
            reduction_factor=cfg.tune.reduction_factor,
        )
    )
    tune_config = tune.TuneConfig(
        metric=cfg.tune.metric,
        mode=cfg.tune.mode,
        num_samples=cfg.tune.num_samples,
        scheduler=scheduler,
        search_alg=BasicVariantGenerator(random_state=cfg.tune.seed),
        max_concurrent_trials=n,
        trial_dirname_creator=lambda t: t.trial_id,
    )
    callbacks = [callback, raycluster.janitor_callback(callback.runs_root)]
    run_config = tune.RunConfig(name=name, storage_path=root, callbacks=callbacks, verbose=0)
    return tune.Tuner(
        trainable, param_space=search_space(cfg), tune_config=tune_config, run_config=run_config
    )


class SweepInterrupted(UserError):
    """The sweep stopped before every trial finished (Ctrl-C)."""


def next_step() -> str:
    """What continues an interrupted sweep: `pipeline tune --resume`; under DVC (which sets
    DVC_STAGE for its stage commands) also what `dvc repro` will do and how to record a resumed
    sweep's outputs in dvc.lock."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return "continue it with `pipeline tune --resume`"
    return (
        f"`dvc repro` runs the {stage} stage again as a new sweep; to continue this one instead, "
        f"run `pipeline tune --resume` in the project folder, then `dvc commit -f {stage}` "
        "(records its outputs) and `dvc repro` for the stages after it"
    )


def _check_complete(path: str, name: str) -> None:
    """Ctrl-C makes Tune stop gracefully and fit() return: the saved trial states tell."""
    from ray.tune import ExperimentAnalysis

    statuses = [t.status for t in ExperimentAnalysis(path).trials]
    done = sum(s in ("TERMINATED", "ERROR") for s in statuses)
    if done < len(statuses):
        raise SweepInterrupted(
            f"sweep {name} interrupted: {done} of {len(statuses)} trials finished; "
            "models/ left unchanged",
            fix=next_step(),
        )


def _tracking_caught_up(s: runs.Session, cfg: Config, callback: Any) -> None:
    """Every write an outage of the tracking server held back is sent before the outputs are
    built from MLflow; waits up to mlflow.retry_for_s for the server, else a UserError. (A
    resumed sweep's callback is Tune's restored copy: the probe then waits for the server, and
    `sweeps.outcomes` logs each checkpointed epoch a run lacks.)"""
    callback.drain()
    probe = outage.Buffer(s.client.tracking_uri, cfg.mlflow.retry_for_s, next_step=next_step())
    probe.submit("read the experiment", lambda: s.client.get_experiment(s.experiment_id))
    probe.drain()


def _close_runs(s: runs.Session, name: str, err: BaseException) -> None:
    """A sweep that ends without finishing leaves no MLflow run RUNNING: the parent and its
    open trials are KILLED when interrupted, FAILED otherwise (--resume reopens them). With
    the tracking server down they stay as they are (a line says so; --resume closes them)."""
    try:
        _close_open_runs(s, name, err)
    except Exception as close_err:
        if not outage.is_outage(close_err):
            raise
        info(f"[yellow]MLflow unreachable: sweep {name}'s runs are left open in MLflow[/]")


def _close_open_runs(s: runs.Session, name: str, err: BaseException) -> None:
    parent = tracking.find_run(s.client, s.experiment_id, name)
    if not parent:
        return
    killed = isinstance(err, (SweepInterrupted, KeyboardInterrupt))
    for child in tracking.running_children(s.client, s.experiment_id, parent):
        tracking.close_run(s.client, child, ok=False, killed=killed)
    tracking.close_run(s.client, parent, ok=False, killed=killed)


def run(
    cfg: Config, resume: bool = False, verbose: bool = False, register: bool = True
) -> dict[str, Any]:
    """Run (or resume) the sweep, export the best checkpoint, write the trials table/curves;
    `register`: the best model becomes a registered model version (not for `pipeline claim`)."""
    check_output_folder(cfg.paths.models, "paths.models")
    with runs.session(cfg, verbose) as s:
        from ray import tune

        outage.fail_fast(s.client.tracking_uri)  # outages are ridden out by pipeline.outage
        root, name = _sweep_path(cfg, s.prepared, resume)
        slots = raycluster.trials_that_fit(
            cfg, raycluster.planned_cpus(cfg), 0, cfg.train.use_gpu == "on"
        )
        cluster = s.start_cluster(trial_drivers=slots)
        try:
            n = raycluster.trials_that_fit(cfg, cluster.cpus, cluster.gpus, s.gpu)
            driver = {raycluster.TRIAL_DRIVER: 1.0} if cluster.trial_driver_slots else {"CPU": 1.0}
            train_runs = f"{raycluster.storage_root(cfg)}/sweep_runs/{name}"
            trainable = tune.with_resources(
                tune.with_parameters(
                    run_trial,
                    base=cfg.model_dump(),
                    prepared=str(s.prepared),
                    storage=train_runs,
                    gpu=s.gpu,
                    verbose=verbose,
                ),
                driver,
            )
            info(
                f"sweep {name}: {cfg.tune.trials} trials, {n} at a time, "
                f"{cfg.train.num_workers} {'GPU' if s.gpu else 'CPU'} worker(s) each"
                + (" (resumed)" if resume else "")
            )
            callback = tracking.callback_class()(
                s.client.tracking_uri, s.experiment_id, name, cfg, str(s.prepared), train_runs
            )
            if resume:
                path = f"{root}/{name}"
                tuner = tune.Tuner.restore(
                    path, trainable=trainable, resume_unfinished=True, resume_errored=True
                )
            else:
                tuner = _tuner(cfg, trainable, root, name, callback, n)
            grid = tuner.fit()
            _tracking_caught_up(s, cfg, callback)
            _check_complete(f"{root}/{name}", name)
            trials = sweeps.outcomes(cfg, grid, s.client, s.experiment_id, name, train_runs)
            return {
                **sweeps.finish(cfg, trials, s.client, s.experiment_id, name, s.prepared, register),
                "sweep": name,
            }
        except BaseException as err:  # interrupted or failed: the runs say so
            _close_runs(s, name, err)
            raise
