"""`train_loop_per_worker`: the Ray Train adapter around seq2seq.training.

Every rank trains on its share of each global batch (DDP syncs the gradients); rank 0 alone
computes the validation loss, perplexity and greedy BLEU while the others wait at the
`ray.train.report` barrier, and rank 0 alone writes the checkpoint (model unwrapped from DDP,
optimizer, epoch, RNG state, config, vocabularies). A restarted worker group resumes from
`ray.train.get_checkpoint()` at the next epoch. Randomness is reseeded per (seed, rank, epoch),
so a resumed run draws the same batches, dropout masks and teacher-forcing coins as an
uninterrupted one.

Test-only fault hook: with env `SEQ2SEQ_FAULT_AT_EPOCH=N` and `SEQ2SEQ_FAULT_MARKER=<file>` in
the driver's environment, the last rank raises at the start of epoch N the first time only
(the marker file records that it fired), to exercise recovery from a lost worker.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.config import Config

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


def _seed(cfg: Config, rank: int, epoch: int) -> torch.Generator:
    """Per (seed, rank, epoch) randomness: dropout masks (global RNG) and the teacher-forcing
    generator, so an epoch replays identically after a restart."""
    from seq2seq.training import make_generator

    torch.manual_seed(cfg.train.seed * 1_000_003 + epoch * 1009 + rank + 17)
    return make_generator(cfg.train.seed, epoch, rank)


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


def validate(
    model: torch.nn.Module,
    valid: Any,
    valid_src: list[list[int]],
    valid_refs: list[str],
    tgt_vocab: Any,
    cfg: Config,
    device: torch.device,
    autocast: bool,
) -> dict[str, float]:
    """Teacher-forced loss/perplexity and greedy BLEU on the valid split (unwrapped model)."""
    from seq2seq.batching import iterate_batches
    from seq2seq.evaluation import DecodeSpec, bleu_of
    from seq2seq.training import evaluate_loss

    ev = cfg.evaluate
    batches = iterate_batches(valid, ev.batch_size, shuffle=False, seed=0, epoch=0, device=device)
    loss = evaluate_loss(model, batches, autocast=autocast)
    spec = DecodeSpec(beam_size=1, batch_size=ev.batch_size, max_len_ratio=ev.max_len_ratio)
    bleu, _ = bleu_of(
        model, valid_src, valid_refs, tgt_vocab, spec, lowercase=cfg.data.lowercase, device=device
    )
    return {"val_loss": loss.loss, "val_ppl": loss.ppl, "val_bleu": bleu.score}


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


def train_loop_per_worker(config: Mapping[str, Any]) -> None:
    """Ray Train entry point: config from `loop_config`."""
    import ray.train
    import ray.train.torch

    from seq2seq.batching import ParallelCorpus, iterate_batches
    from seq2seq.checkpoint import save_checkpoint
    from seq2seq.model import Seq2Seq
    from seq2seq.training import (
        autocast_enabled,
        lr_for_epoch,
        make_optimizer,
        set_lr,
        train_epoch,
    )  # fmt: skip
    from seq2seq.vocab import Vocab

    cfg = Config.model_validate(config["cfg"])
    prepared = Path(config["prepared"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads_per_worker)
    src_vocab = Vocab.load(prepared / "vocab.src.json")
    tgt_vocab = Vocab.load(prepared / "vocab.tgt.json")
    train = ParallelCorpus.from_parquet(prepared / "train.parquet")
    if rank == 0:  # only rank 0 validates
        valid = ParallelCorpus.from_parquet(prepared / "valid.parquet")
        valid_frame = pl.read_parquet(prepared / "valid.parquet", columns=["src_ids", "tgt"])

    torch.manual_seed(cfg.train.seed)  # identical init on every rank (DDP also broadcasts)
    model = Seq2Seq.from_config(cfg.model, len(src_vocab), len(tgt_vocab)).to(device)
    optimizer = make_optimizer(model, cfg.train)
    start = _restore(model, optimizer)
    ddp_model = ray.train.torch.prepare_model(model)  # moves to device, wraps in DDP if world>1
    autocast = autocast_enabled(cfg.train.bf16, device)
    for epoch in range(start, cfg.train.epochs + 1):
        _maybe_fault(config.get("fault"), epoch, rank, world)
        generator = _seed(cfg, rank, epoch)
        set_lr(optimizer, lr_for_epoch(cfg.train, epoch))
        batches = iterate_batches(
            train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch,
            rank=rank, world_size=world, pool_batches=cfg.train.bucket_pool, device=device,
        )  # fmt: skip
        t0 = time.perf_counter()
        stats = train_epoch(
            ddp_model, optimizer, batches, teacher_forcing=cfg.train.teacher_forcing,
            clip_norm=cfg.train.clip_norm, generator=generator, autocast=autocast,
        )  # fmt: skip
        train_loss, tokens_per_s = _global_stats(stats.loss, stats.tokens, stats.seconds)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "tokens_per_s": tokens_per_s,
            "world_size": world,
        }
        if rank != 0:
            _report(metrics, rank)
            continue
        metrics.update(
            validate(
                model, valid, valid_frame["src_ids"].to_list(), valid_frame["tgt"].to_list(),
                tgt_vocab, cfg, device, autocast,
            )
        )  # fmt: skip
        metrics["epoch_seconds"] = time.perf_counter() - t0

        def save(path: Path, epoch=epoch, metrics=metrics, generator=generator) -> None:
            save_checkpoint(
                path, model=model, optimizer=optimizer, epoch=epoch, config=cfg.model_dump(),
                src_vocab=src_vocab, tgt_vocab=tgt_vocab, metrics=dict(metrics),
                rng_state={"torch": torch.get_rng_state(), "generator": generator.get_state()},
            )  # fmt: skip

        _report(metrics, rank, save)
