"""`train_loop_per_worker`: the Ray Train adapter around seq2seq.training.

Every rank trains on its share of each global batch (DDP syncs the gradients); rank 0 alone
computes the validation loss, perplexity and greedy BLEU while the others wait at the
`ray.train.report` barrier, and rank 0 alone writes the checkpoint (model unwrapped from DDP,
optimizer, epoch, config, vocabularies). A restarted worker group resumes from
`ray.train.get_checkpoint()` at the next epoch; `fit`'s seeding rule (per seed, epoch, rank)
makes a resumed run draw the same batches, dropout masks and teacher-forcing coins as an
uninterrupted one.

Test-only fault hook: with env `SEQ2SEQ_FAULT_AT_EPOCH=N` and `SEQ2SEQ_FAULT_MARKER=<file>` in
the driver's environment, the last rank raises at the start of epoch N the first time only
(the marker file records that it fired), to exercise recovery from a lost worker.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import torch

from pipeline.config import Config

if TYPE_CHECKING:
    from seq2seq.model import Seq2Seq

FAULT_EPOCH_ENV = "SEQ2SEQ_FAULT_AT_EPOCH"
FAULT_MARKER_ENV = "SEQ2SEQ_FAULT_MARKER"
CHECKPOINT_FILE = "checkpoint.pt"


class InjectedFault(RuntimeError):
    """Raised by the test-only fault hook."""


def loop_config(cfg: Config, prepared: str) -> dict[str, Any]:
    """The `train_loop_config` dict: the config tree, absolute data path, fault hook (driver)."""
    fault = None
    if os.environ.get(FAULT_EPOCH_ENV) and os.environ.get(FAULT_MARKER_ENV):
        fault = (int(os.environ[FAULT_EPOCH_ENV]), os.path.abspath(os.environ[FAULT_MARKER_ENV]))
    return {"cfg": cfg.model_dump(), "prepared": str(Path(prepared).resolve()), "fault": fault}


def _maybe_fault(fault: tuple[int, str] | None, epoch: int, rank: int, world: int) -> None:
    if not fault or fault[0] != epoch or rank != world - 1:
        return
    marker = Path(fault[1])
    try:
        with open(marker, "x") as f:  # exclusive create: fires exactly once
            f.write(f"fault injected at epoch {epoch} on rank {rank}\n")
    except FileExistsError:
        return
    raise InjectedFault(f"injected fault at epoch {epoch} (rank {rank})")


def _global_stats(loss: float, tokens: int, seconds: float) -> tuple[float, float]:
    """(train loss per token over all ranks, tokens/s summed over ranks = all tokens / the
    slowest rank's time); the local values when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sums = torch.tensor([loss * tokens, float(tokens)], dtype=torch.float64)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        slowest = torch.tensor([float(seconds)], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        tokens, seconds = int(sums[1].item()), float(slowest.item())
        loss = float(sums[0].item()) / max(tokens, 1)
    return loss, tokens / max(seconds, 1e-9)


def val_bleu(
    model: torch.nn.Module, valid_frame: pl.DataFrame, tgt_vocab: Any, cfg: Config, device: Any
) -> float:
    """Greedy BLEU on the valid split (unwrapped model, rank 0)."""
    from seq2seq.evaluation import DecodeSpec, bleu_of

    ev = cfg.evaluate
    spec = DecodeSpec(beam_size=1, batch_size=ev.batch_size, max_len_ratio=ev.max_len_ratio)
    src, refs = valid_frame["src_ids"].to_list(), valid_frame["tgt"].to_list()
    bleu, _ = bleu_of(
        model, src, refs, tgt_vocab, spec, lowercase=cfg.data.lowercase, device=device
    )
    return bleu.score


def _restore(model: torch.nn.Module, optimizer: Any) -> int:
    """Load the latest Ray checkpoint if any; returns the first epoch still to run."""
    import ray.train

    from seq2seq.checkpoint import load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 1
    with checkpoint.as_directory() as d:
        ckpt = load_checkpoint(Path(d) / CHECKPOINT_FILE)
    model.load_state_dict(ckpt.model_state)
    optimizer.load_state_dict(ckpt.optimizer_state)
    return int(ckpt.epoch) + 1


def _report(metrics: dict[str, Any], rank: int, save: Any = None) -> None:
    """Every rank reports (a barrier); rank 0 attaches the checkpoint written by `save(dir)`."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@dataclass
class _Worker:
    """One rank's training state, built from the `loop_config` dict."""

    cfg: Config
    prepared: Path
    rank: int
    world: int
    device: torch.device
    src_vocab: Any
    tgt_vocab: Any
    model: Seq2Seq
    optimizer: Any


def _worker(config: Mapping[str, Any]) -> _Worker:
    import ray.train
    import ray.train.torch

    from seq2seq.model import Seq2Seq
    from seq2seq.training import make_optimizer
    from seq2seq.vocab import Vocab

    cfg, prepared = Config.model_validate(config["cfg"]), Path(config["prepared"])
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads_per_worker)
    src_vocab, tgt_vocab = (Vocab.load(prepared / f"vocab.{s}.json") for s in ("src", "tgt"))
    torch.manual_seed(cfg.train.seed)  # identical init on every rank (DDP also broadcasts)
    model = Seq2Seq.from_config(cfg.model, len(src_vocab), len(tgt_vocab)).to(device)
    optimizer = make_optimizer(model, cfg.train)
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    return _Worker(cfg, prepared, rank, world, device, src_vocab, tgt_vocab, model, optimizer)


def _precision(w: _Worker) -> tuple[bool, float | None]:
    """bf16 autocast or fp32 for this run (`seq2seq.precision`, measured at this model and
    per-rank batch), and this rank's measured bf16 speedup (None where nothing was measured);
    under DDP every rank trains in one precision: bf16 only where all chose it."""
    import torch.distributed as dist

    from seq2seq.precision import choose_precision

    batch = max(1, w.cfg.train.batch_size // w.world)
    choice = choose_precision(w.cfg.train.bf16, w.device, w.model, batch)
    bf16 = choice.bf16
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([int(bf16)], device=w.device if w.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        bf16 = bool(flag.item())
    if w.rank == 0:
        print(f"precision: {'bf16 autocast' if bf16 else 'fp32'} ({choice.reason})", flush=True)
    return bf16, choice.speedup


def _train_metrics(r: Any, world: int) -> dict[str, Any]:
    """An epoch report's training metrics over all ranks (an all-reduce: every rank calls it)."""
    loss, tokens_per_s = _global_stats(r.train.loss, r.train.tokens, r.train.seconds)
    return {"epoch": r.epoch, "train_loss": loss, "tokens_per_s": tokens_per_s, "world_size": world}


def _reporter(w: _Worker, bf16: bool, speedup: float | None = None) -> Callable[[Any], None]:
    """`fit`'s on_epoch: global train metrics on every rank; on rank 0 also the validation
    metrics (greedy BLEU added to fit's loss), the precision (bf16 1/0, and the start-up
    probe's measured bf16 speedup where it ran) and the checkpoint."""
    from pipeline.prepared import read_frame, run_preprocessing
    from seq2seq.checkpoint import save_checkpoint

    if w.rank != 0:  # only rank 0 validates and writes checkpoints
        return lambda r: _report(_train_metrics(r, w.world), w.rank)
    reverse = w.cfg.data.reverse_source
    frame = read_frame(w.prepared, "valid", reverse, columns=["src_ids", "tgt"])
    preprocessing = run_preprocessing(w.prepared, reverse)

    def on_epoch(r: Any) -> None:
        metrics = {**_train_metrics(r, w.world), "bf16": float(bf16)}
        if speedup is not None:
            metrics["bf16_speedup"] = speedup
        if r.valid is None:
            return _report(metrics, w.rank)
        t0 = time.perf_counter()
        bleu = val_bleu(w.model, frame, w.tgt_vocab, w.cfg, w.device)
        metrics.update(val_loss=r.valid.loss, val_ppl=r.valid.ppl, val_bleu=bleu)
        metrics["epoch_seconds"] = r.seconds + time.perf_counter() - t0

        def save(path: Path) -> None:
            save_checkpoint(
                path,
                model=w.model,
                optimizer=w.optimizer,
                epoch=r.epoch,
                preprocessing=preprocessing,
                config=w.cfg.model_dump(),
                src_vocab=w.src_vocab,
                tgt_vocab=w.tgt_vocab,
                metrics=dict(metrics),
            )

        _report(metrics, w.rank, save)

    return on_epoch


def train_loop_per_worker(config: Mapping[str, Any]) -> None:
    """Ray Train entry point (config from `loop_config`): `seq2seq.training.fit` on this rank's
    share, resumed from Ray's latest checkpoint; every rank reports each epoch, rank 0 with the
    validation metrics and the checkpoint."""
    import ray.train.torch

    from pipeline.prepared import read_split
    from seq2seq.training import fit

    w = _worker(config)
    bf16, speedup = _precision(w)
    reverse = w.cfg.data.reverse_source  # a sweep trial may flip the prepared order
    valid = read_split(w.prepared, "valid", reverse) if w.rank == 0 else None
    fit(
        w.model,
        w.optimizer,
        read_split(w.prepared, "train", reverse),
        valid,
        w.cfg.train,
        start_epoch=_restore(w.model, w.optimizer),
        rank=w.rank,
        world_size=w.world,
        device=w.device,
        autocast=bf16,
        train_model=ray.train.torch.prepare_model(w.model),  # DDP when world > 1
        on_epoch=_reporter(w, bf16, speedup),
        before_epoch=lambda epoch: _maybe_fault(config.get("fault"), epoch, w.rank, w.world),
    )
