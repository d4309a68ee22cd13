"""`pipeline train`: one Ray Train (V2) DDP run of the params.yaml config, tracked in MLflow.

The run's name is a hash of the config (model, train, data, validation decoding) and of the
prepared data, so running the same command again RESUMES the stored run from its latest
checkpoint (a finished run then trains nothing and prints its result); `--fresh` deletes the
stored run and starts over with a new MLflow run. Ray Train reports every epoch; a driver-side
queue carries the reports to this process, which alone writes MLflow and prints progress.
"""

from __future__ import annotations

import hashlib
import json
import queue as queue_mod
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline import raycluster, tracking
from pipeline.config import Config, from_env
from pipeline.errors import UserError
from pipeline.ui import info
from seq2seq.text import Preprocessing

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


def prepared_meta(folder: Path) -> Preprocessing:
    """The prepared data's meta.json as the Preprocessing every checkpoint stores."""
    try:
        raw = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(
            f"{folder / 'meta.json'} is unreadable ({err})",
            fix="rebuild the data (`dvc repro reverse`)",
        ) from None
    return Preprocessing.from_dict(raw, str(folder / "meta.json"))


def _yaml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_bf16(cfg: Config) -> None:
    """Refuse `train.bf16: on` before any work when this machine's CPU workers cannot run it
    (a real probe, `seq2seq.training.bf16_problem`). Checked where the workers are known to be
    this machine's CPUs (a local cluster, no GPU); on other workers the same check runs there."""

    if cfg.train.bf16 != "on" or from_env("ray.address", cfg.ray.address):
        return
    import torch

    if cfg.train.use_gpu == "on" or (cfg.train.use_gpu == "auto" and torch.cuda.is_available()):
        return
    from seq2seq.training import autocast_enabled

    autocast_enabled("on", torch.device("cpu"))  # PrecisionError (one line, exit 2) if not


def run_key(cfg: Config, prepared: Path, prefix: str = "train", extra: Any = None) -> str:
    """Deterministic run name: same config + same data -> same name (-> resume)."""
    h = hashlib.sha256()
    parts = {k: cfg.model_dump()[k] for k in ("data", "model", "train")}
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
) -> Any:
    """A TorchTrainer for `cfg` (gloo on CPU, one GPU per worker otherwise)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.trainloop import loop_config, train_loop_per_worker

    scaling = ray.train.ScalingConfig(
        num_workers=cfg.train.num_workers,
        use_gpu=gpu,
        resources_per_worker=None if gpu else {"CPU": cfg.train.threads_per_worker},
    )
    run_config = ray.train.RunConfig(  # type: ignore[call-arg]  # Train V2's (mypy sees V1's)
        name=name,
        storage_path=storage,
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        callbacks=callbacks,
        logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING"),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(cfg, str(prepared)),
        scaling_config=scaling,
        run_config=run_config,
    )


def epoch_line(metrics: Mapping[str, Any], epochs: int, prefix: str = "") -> str:
    """One compact progress line for an epoch report."""

    def num(key: str, fmt: str) -> str:
        v = metrics.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    return (
        f"{prefix}epoch {int(metrics.get('epoch', 0))}/{epochs}  "
        f"train_loss {num('train_loss', '.3f')}  val_loss {num('val_loss', '.3f')}  "
        f"ppl {num('val_ppl', '.2f')}  BLEU {num('val_bleu', '.2f')}  "
        f"{num('tokens_per_s', ',.0f')} tok/s  {num('epoch_seconds', '.1f')} s"
    )


def _report_queue() -> tuple[Any, Any]:
    """A Ray queue and a Train callback (runs in the controller) that feeds it rank 0's reports."""
    import ray.train
    from ray.util.queue import Queue

    q = Queue(actor_options={"num_cpus": 0})

    class _ToQueue(ray.train.UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            q.put(dict(metrics[0]))

    return q, _ToQueue()


def _fit_streaming(trainer: Any, q: Any, on_report: Callable[[dict], None]) -> Any:
    """trainer.fit() in a thread while this thread handles the reports as they arrive."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while thread.is_alive() or not q.empty():
        try:
            on_report(q.get(timeout=0.5))
        except queue_mod.Empty:
            continue
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def run(cfg: Config, verbose: bool = False, fresh: bool = False) -> dict[str, Any]:
    """Train once with `train.num_workers` DDP workers; returns the last epoch's metrics."""
    raycluster.prepare_env(cfg, verbose)  # before ray is imported
    check_bf16(cfg)  # before any work: a bf16 mode the CPU cannot run
    prepared = check_prepared(cfg)
    client = tracking.client_for(cfg)  # schema initialised before any Ray process starts
    exp_id = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    name = run_key(cfg, prepared)
    storage = raycluster.storage_root(cfg)
    if fresh and "://" not in storage:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
    run_id = tracking.open_run(
        client,
        exp_id,
        name,
        name=name,
        reuse=not fresh,
        tags=tracking.base_tags(cfg, "pipeline train"),
        params=tracking.config_params(cfg),
    )
    tracking.log_inputs(client, run_id, tracking.dataset_inputs(cfg, ("train", "valid"), prepared))
    cluster = raycluster.init(cfg, verbose=verbose)
    gpu = raycluster.use_gpu(cfg, cluster)
    info(
        f"train {name}: {cfg.train.num_workers} {'GPU' if gpu else 'CPU'} worker(s), "
        f"{cfg.train.epochs} epochs; checkpoints in {storage}/{name}"
    )

    def on_report(metrics: dict) -> None:
        tracking.log_epoch(client, run_id, metrics)
        info(epoch_line(metrics, cfg.train.epochs))

    try:
        q, callback = _report_queue()
        trainer = build_trainer(
            cfg,
            prepared,
            name=name,
            storage=storage,
            gpu=gpu,
            callbacks=[callback],
            verbose=verbose,
        )
        result = _fit_streaming(trainer, q, on_report)
    except BaseException:
        tracking.close_run(client, run_id, ok=False)
        raise
    finally:
        raycluster.shutdown()
    final = dict(result.metrics or {})
    tracking.close_run(client, run_id, ok=True)
    info(epoch_line(final, cfg.train.epochs, prefix="done: "))
    info(f"checkpoint: {result.checkpoint.path if result.checkpoint else '-'}")
    info(f"MLflow run {run_id}; {tracking.ui_hint(client, exp_id)}")
    return final
