"""`pipeline train`: one Ray Train (V2) DDP run of the params.yaml config, tracked in MLflow.

The run's name is a hash of the config (model, train, data, validation decoding) and of the
prepared data, so running the same command again RESUMES the stored run from its latest
checkpoint (a finished run then trains nothing and prints its result); `--fresh` deletes the
stored run and starts over with a new MLflow run. Ray Train reports every epoch; a driver-side
queue carries the reports to this process, which alone writes MLflow and prints progress.
"""

from __future__ import annotations

import queue as queue_mod
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import outage, raycluster, runs, tracking
from pipeline.config import Config
from pipeline.ui import epoch_line, info


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


def _record_placement(client: Any, run_id: str, nodes: list[str]) -> None:
    """Where the workers run (node ids in rank order): a tag on the run and a line."""
    client.set_tag(run_id, "ray.worker_nodes", ",".join(nodes)[:5000])
    info(raycluster.placement_line(nodes))


class _Reporter:
    """The driver's side of rank 0's reports: MLflow writes through an outage buffer (a lost
    tracking server is waited for, pipeline.outage), and a progress line per epoch."""

    def __init__(self, client: Any, cfg: Config, run_id: str) -> None:
        self.client, self.run_id, self.epochs = client, run_id, cfg.train.epochs
        fix = "run the same `pipeline train` again (it resumes and logs what MLflow lacks)"
        self.buffer = outage.Buffer(client.tracking_uri, cfg.mlflow.retry_for_s, next_step=fix)

    def catch_up(self, run_dir: str) -> None:
        """Log the checkpointed epochs the run lacks (a driver lost before it logged them), as
        the first buffered write: a server lost already is waited for like any other write."""
        from pipeline.records import train_record

        record = train_record(run_dir)  # what is on disk now; later epochs are reported

        def backfill() -> None:
            logged = tracking.logged_steps(self.client, self.run_id)
            tracking.backfill(self.client, self.run_id, record, logged)

        self.buffer.submit("catch up on checkpointed epochs", backfill)

    def close(self) -> None:
        """Close the run FINISHED once every write before it is sent (waits out an outage)."""
        self.buffer.submit("close run", lambda: tracking.close_run(self.client, self.run_id, True))
        self.buffer.drain()

    def __call__(self, metrics: dict) -> None:
        if raycluster.WORKER_NODES in metrics:  # the worker group (re)started
            nodes = metrics[raycluster.WORKER_NODES]
            self.buffer.submit("tag ray.worker_nodes", lambda: self._placement(nodes))
            return
        stamped = {**metrics, tracking.LOGGED_AT: int(time.time() * 1000)}
        sent, _ = self.buffer.submit(
            f"epoch {metrics.get('epoch')}",
            lambda: tracking.log_epoch(self.client, self.run_id, stamped),
        )
        held = "" if sent else " [yellow](MLflow down: kept for replay)[/]"
        info(epoch_line(metrics, self.epochs) + held)

    def _placement(self, nodes: list[str]) -> None:
        _record_placement(self.client, self.run_id, nodes)


def _close_failed(client: Any, run_id: str) -> None:
    """Mark the run FAILED, unless the tracking server is what failed (then it stays open)."""
    try:
        tracking.close_run(client, run_id, ok=False)
    except Exception as err:
        if not outage.is_outage(err):
            raise


def run(cfg: Config, verbose: bool = False, fresh: bool = False) -> dict[str, Any]:
    """Train once with `train.num_workers` DDP workers; returns the last epoch's metrics."""
    with runs.session(cfg, verbose) as s:
        name = runs.run_key(cfg, s.prepared)
        storage = raycluster.storage_root(cfg)
        if fresh and "://" not in storage:
            shutil.rmtree(Path(storage) / name, ignore_errors=True)
        s.start_cluster()  # before the MLflow run is opened: a cluster error touches no record
        run_id = tracking.open_run(
            s.client,
            s.experiment_id,
            name,
            name=name,
            reuse=not fresh,
            tags=tracking.base_tags(cfg, "pipeline train"),
            params=tracking.config_params(cfg),
        )
        splits = tracking.dataset_inputs(cfg, ("train", "valid"), s.prepared)
        tracking.log_inputs(s.client, run_id, splits)
        workers = f"{cfg.train.num_workers} {'GPU' if s.gpu else 'CPU'} worker(s)"
        info(f"train {name}: {workers}, {cfg.train.epochs} epochs; checkpoints in {storage}/{name}")
        outage.fail_fast(s.client.tracking_uri)
        report = _Reporter(s.client, cfg, run_id)
        report.catch_up(f"{storage}/{name}")
        try:
            q, callback = _report_queue()
            trainer = runs.build_trainer(
                cfg,
                s.prepared,
                name=name,
                storage=storage,
                gpu=s.gpu,
                callbacks=[callback],
                verbose=verbose,
                placement_sink=q,
            )
            result = _fit_streaming(trainer, q, report)
            report.close()
        except BaseException:
            _close_failed(s.client, run_id)
            raise
    final = dict(result.metrics or {})
    info(epoch_line(final, cfg.train.epochs, prefix="done: "))
    info(f"checkpoint: {result.checkpoint.path if result.checkpoint else '-'}")
    info(f"MLflow run {run_id}; {tracking.ui_hint(s.client, s.experiment_id)}")
    return final
