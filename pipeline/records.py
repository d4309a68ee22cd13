"""`train_record`: what a Ray Train run's checkpoints say, epoch by epoch. It survives a lost
driver, so the sweep's and `pipeline train`'s MLflow records are completed from it. No project
imports and no MLflow: a sweep's trial actors read it too (`pipeline.trial`)."""

from __future__ import annotations

from typing import Any


def train_record(run_dir: str) -> list[dict[str, Any]]:
    """The per-epoch metrics of every checkpoint a Ray Train run saved (rank 0's report, plus its
    `checkpoint_path`), by epoch; [] before its first checkpoint. Read from the run's checkpoint
    snapshot, which Ray Train writes before a report reaches Tune: it survives the driver."""
    import logging

    import ray.train

    log = logging.getLogger("ray.train")  # "A run snapshot was found ..." on every read
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        result = ray.train.Result.from_path(run_dir)
    except RuntimeError:  # no run folder, or no checkpoint yet
        return []
    finally:
        log.setLevel(level)
    by_epoch = {
        int(metrics["epoch"]): {**metrics, "checkpoint_path": ckpt.path}
        for ckpt, metrics in result.best_checkpoints or []
        if "epoch" in metrics
    }
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
