"""What runs inside a sweep's trial (Tune's trial actor): `run_trial`, the Tune trainable.

Kept apart from the sweep's driver code so that Ray's processes import no more than they run:
every trial starts a Tune trial actor (which imports this module) and a Ray Train controller
(`pipeline.raycluster`'s placement callback, `pipeline.trainloop`), and neither imports MLflow
(about 1 s of CPU a process on a 2-core laptop, where a 20-trial sweep starts 40 of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import raycluster, runs
from pipeline.config import trial_config
from pipeline.records import train_record


def run_trial(
    config: dict[str, Any], *, base: dict, prepared: str, storage: str, gpu: bool, verbose: bool
) -> None:
    """The Tune trainable: one Train V2 run of the base config with the sampled overrides."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = trial_config(base, config)
    trial_id = ray.tune.get_context().get_trial_id()
    record = train_record(f"{storage}/{trial_id}")
    if record and int(record[-1]["epoch"]) >= cfg.train.epochs:
        # Trained to the end before the driver was lost (Tune saves the sweep's state every
        # ~10 s, not when a trial completes): give Tune the last epoch and train nothing.
        ray.tune.report(record[-1])
        return
    trainer = runs.build_trainer(
        cfg,
        Path(prepared),
        name=trial_id,
        storage=storage,
        gpu=gpu,
        callbacks=[TuneReportCallback()],
        verbose=verbose,
        groups_file=raycluster.groups_file(storage, trial_id),
    )
    trainer.fit()  # same name + storage: a restored trial resumes from its checkpoint
