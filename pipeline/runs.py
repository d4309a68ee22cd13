"""One home for the Ray run machinery that `pipeline train` and `pipeline tune` share.

`session(cfg, verbose)` is the skeleton of both commands, in this order, so that bad input never
costs a cluster start or touches an MLflow record: the job's environment, the bf16 mode, the
prepared data against the config, the MLflow store, the storage path, the experiment; then the
command's own cheap checks; then `Session.start_cluster` (a local Ray, or the configured one,
whose storage must be shared when it has several nodes);
the cluster is shut down however the command ends. Also here: the deterministic run key, the
TorchTrainer builder and the prepared data's meta (the one truth about how the data was made).

Why `pipeline train` is not a one-trial Tune run: its run name is the config-and-data key, so
rerunning the command resumes it (Tune's resume is per sweep folder), and it saves Tune's trial
machinery (~5 s and 9 actors on a laptop). It reports through Ray Train's own callback; a sweep
reports through Tune's (`tracking.MlflowTrialCallback`). Both log with the same tracking calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import raycluster
from pipeline.config import Config, check_storage_root, from_env
from pipeline.errors import UserError
from pipeline.prepared import prepared_meta
from pipeline.ui import info

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PREPARED_FILES = ("train.parquet", "valid.parquet", "vocab.src.json", "vocab.tgt.json", "meta.json")


def check_prepared(cfg: Config) -> Path:
    """The absolute prepared-data folder, once its files exist and its meta.json (the one truth
    about how the data was made) agrees with the config; else a UserError naming the fix."""
    folder = Path(cfg.paths.prepared).resolve()
    for name in PREPARED_FILES:
        if not (folder / name).is_file():
            raise UserError(
                f"{folder / name} is missing: the training data has not been prepared",
                fix="run `dvc repro reverse` (or pipeline download, clean, tokenize, reverse)",
            )
    prep = prepared_meta(folder)
    for key in ("source_lang", "target_lang", "lowercase", "reverse_source"):
        made, wanted = getattr(prep, key), getattr(cfg.data, key)
        if made != wanted:
            raise UserError(
                f"{folder} was prepared with data.{key}={_yaml(made)}, but the config says "
                f"{_yaml(wanted)}: the model would be trained on other data than the config "
                "describes",
                fix="rebuild the data with this config (`dvc repro reverse`) or set "
                f"data.{key}={_yaml(made)}",
            )
    return folder


def _yaml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_bf16(cfg: Config) -> None:
    """Refuse `train.bf16: on` before any work when this machine's CPU workers cannot run it
    (a real probe, `seq2seq.precision.bf16_problem`). Checked where the workers are known to be
    this machine's CPUs (a local cluster, no GPU); on other workers the same check runs there."""

    if cfg.train.bf16 != "on" or from_env("ray.address", cfg.ray.address):
        return
    import torch

    if cfg.train.use_gpu == "on" or (cfg.train.use_gpu == "auto" and torch.cuda.is_available()):
        return
    from seq2seq.precision import autocast_enabled

    autocast_enabled("on", torch.device("cpu"))  # PrecisionError (one line, exit 2) if not


def run_key(cfg: Config, prepared: Path, prefix: str = "train", extra: Any = None) -> str:
    """Deterministic run name: same config + same data -> same name (-> resume)."""
    h = hashlib.sha256()
    parts = {k: cfg.model_dump()[k] for k in ("data", "model", "train")}
    parts["train"].pop("placement_strategy")  # where the workers run, not what they compute
    parts["valid_decoding"] = cfg.evaluate.max_len_ratio  # batch_size: speed only, not results
    parts["extra"] = extra
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for name in PREPARED_FILES:
        with open(prepared / name, "rb") as f:  # in 1 MiB chunks: never a whole split in memory
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return f"{prefix}-{h.hexdigest()[:12]}"


def build_trainer(
    cfg: Config,
    prepared: Path,
    *,
    name: str,
    storage: str,
    gpu: bool,
    callbacks: list,
    verbose: bool,
    placement_sink: Any = None,
    groups_file: str | None = None,
) -> Any:
    """A TorchTrainer for `cfg` (gloo on CPU, one GPU per worker otherwise), its workers placed
    by `train.placement_strategy`; the nodes they run on go to `placement_sink` (a Ray queue)
    or, without one, to a printed line (`raycluster.placement_callback`); the ids of their
    placement groups to `groups_file` when given."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.trainloop import loop_config, train_loop_per_worker

    scaling = ray.train.ScalingConfig(
        num_workers=cfg.train.num_workers,
        use_gpu=gpu,
        resources_per_worker=None if gpu else {"CPU": cfg.train.threads_per_worker},
        placement_strategy=cfg.train.placement_strategy,
    )
    placement = raycluster.placement_callback(placement_sink, groups_file)
    run_config = ray.train.RunConfig(  # type: ignore[call-arg]  # Train V2's (mypy sees V1's)
        name=name,
        storage_path=storage,
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        callbacks=[*callbacks, placement] if placement else callbacks,
        logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING"),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, str(prepared)),
        scaling_config=scaling,
        run_config=run_config,
    )


@dataclass
class Session:
    """What a checked Ray run has to work with (from `session`)."""

    cfg: Config
    prepared: Path  # absolute, checked against the config
    client: MlflowClient
    experiment_id: str
    verbose: bool
    cluster: raycluster.Cluster | None = None

    def start_cluster(self, trial_drivers: int = 0) -> raycluster.Cluster:
        """Start or join the Ray cluster; on several nodes the storage must be shared."""
        self.cluster = raycluster.init(self.cfg, verbose=self.verbose, trial_drivers=trial_drivers)
        raycluster.check_shared_storage(self.cfg, self.cluster)
        if self.cluster.address:  # an existing cluster: say which, and how big
            info(self.cluster.describe())
        return self.cluster

    @property
    def gpu(self) -> bool:
        assert self.cluster is not None, "start_cluster first"
        return raycluster.use_gpu(self.cfg, self.cluster)


@contextmanager
def session(cfg: Config, verbose: bool = False) -> Iterator[Session]:
    """Check everything a Ray run needs, open the MLflow store; shut Ray down at the end."""
    from pipeline import tracking  # not at import: MLflow stays out of Ray's processes

    raycluster.prepare_env(cfg, verbose)  # before ray is imported
    check_bf16(cfg)
    prepared = check_prepared(cfg)
    client = tracking.client_for(cfg)  # server answers; schema initialised before any Ray process
    check_storage_root(raycluster.storage_root(cfg))
    exp_id = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    try:
        yield Session(cfg, prepared, client, exp_id, verbose)
    finally:
        raycluster.shutdown()
