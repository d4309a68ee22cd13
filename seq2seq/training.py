"""The training step and epoch: optimiser, lr schedule, teacher forcing, bf16 autocast (chosen
by seq2seq.precision).

Bookkeeping never synchronises with the device inside an epoch: the loss is accumulated on the
device and read once at the end, token counts come from host-side lengths, and the teacher
forcing coins are drawn up front on the CPU from a seeded generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from seq2seq import precision
from seq2seq.batching import Batch, ParallelCorpus, iterate_batches
from seq2seq.defaults import LOSS_BATCH_PAIRS
from seq2seq.metrics import perplexity

Progress = Callable[..., None]  # progress(n=1, total=None, description=None)


class OptimSpec(Protocol):
    """What the optimiser needs from a config section (pipeline's `cfg.train` satisfies it)."""

    @property
    def optimizer(self) -> str: ...  # 'adam' | 'sgd'
    @property
    def lr(self) -> float: ...
    @property
    def lr_halving_start(self) -> int | None: ...


class FitSpec(OptimSpec, Protocol):
    """What `fit` needs from a config section (pipeline's `cfg.train` satisfies it)."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...  # sentence pairs per global batch (split across ranks)
    @property
    def bucket_pool(self) -> int: ...
    @property
    def clip_norm(self) -> float: ...
    @property
    def teacher_forcing(self) -> float: ...
    @property
    def label_smoothing(self) -> float: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class LossStats:
    loss: float  # mean cross-entropy per target token (nats)
    ppl: float  # exp(loss)
    tokens: int  # target tokens scored (incl. <eos>, excl. padding)


@dataclass(frozen=True)
class EpochStats(LossStats):
    seconds: float
    tokens_per_s: float
    batches: int


@dataclass(frozen=True)
class EpochReport:
    """What `fit` hands `on_epoch` after each epoch."""

    epoch: int
    train: EpochStats  # this rank's share
    valid: LossStats | None  # teacher-forced loss on the valid split (None: not validated here)
    seconds: float  # training + validation


def make_optimizer(model: nn.Module, spec: OptimSpec) -> torch.optim.Optimizer:
    """Adam or plain SGD (the paper's) over the model's parameters at spec.lr."""
    if spec.optimizer == "adam":
        return adam(model.parameters(), spec.lr)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr)
    raise ValueError(f"unknown optimizer {spec.optimizer!r} (adam or sgd)")


def adam(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel (one pass over each parameter per step: 4.5x faster than the
    default for-loop on the seeds' model on a 2-core CPU, benchmarks/README.md) where a probe
    step of it runs on the parameters' devices and dtypes; the default implementation elsewhere
    (torch checks the fused kernel's support only at the first step)."""
    params = list(parameters)
    if _fused_adam_runs(params):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def _fused_adam_runs(params: list[nn.Parameter]) -> bool:
    for device, dtype in {(p.device, p.dtype) for p in params}:
        probe = nn.Parameter(torch.zeros(2, device=device, dtype=dtype))
        probe.grad = torch.ones_like(probe)
        try:
            torch.optim.Adam([probe], fused=True).step()
        except (RuntimeError, NotImplementedError):
            return False
    return True


def lr_for_epoch(spec: OptimSpec, epoch: int) -> float:
    """The lr of 1-based `epoch`: spec.lr, halved once per epoch from spec.lr_halving_start on
    (start 5: epochs 1-4 at lr, 5 at lr/2, 6 at lr/4, ...); constant when the start is None."""
    if spec.lr_halving_start is None or epoch < spec.lr_halving_start:
        return spec.lr
    return spec.lr * 0.5 ** (epoch - spec.lr_halving_start + 1)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_generator(seed: int, epoch: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for the teacher-forcing coins of one (seed, epoch, rank): resumable."""
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch, rank))


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The one seeding rule of an epoch: the global RNG (dropout masks) and the returned
    teacher-forcing generator both derive from (seed, epoch, rank), so an epoch replays
    identically after a restart from the previous epoch's checkpoint."""
    torch.manual_seed(_epoch_seed(seed, epoch, rank) + 17)
    return make_generator(seed, epoch, rank)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return seed * 1_000_003 + epoch * 1009 + rank


def draw_teacher_forcing(ratio: float, steps: int, generator: torch.Generator) -> Tensor:
    """(steps,) bool on the CPU: True = feed the reference token at that decoder step.

    One coin per step shared by the batch (as in the reference recipe). Step 0 is always True:
    its input is <sos> either way.
    """
    mask = torch.rand(steps, generator=generator) < ratio
    if steps:
        mask[0] = True
    return mask


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _forward(
    model: nn.Module, batch: Batch, tf: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, int]:
    # Lengths and coins go in as host objects (numpy, list): DDP moves tensor arguments to the
    # device, and reading them back there would synchronise every step.
    lens = batch.src_lens.numpy(), batch.tgt_lens.numpy()
    if label_smoothing:
        return model(batch.src, lens[0], batch.tgt, lens[1], tf.tolist(), label_smoothing)
    return model(batch.src, lens[0], batch.tgt, lens[1], tf.tolist())


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    teacher_forcing: float,
    clip_norm: float,
    generator: torch.Generator,
    autocast: bool,
    progress: Progress | None = None,
    label_smoothing: float = 0.0,
) -> EpochStats:
    """One pass over `batches` (model may be DDP-wrapped): per batch, mean token loss, backward,
    gradient-norm clipping, step. Returns token-weighted loss of the epoch (the training
    objective: label-smoothed when `label_smoothing` > 0), ppl and throughput."""
    device = _device_of(model)
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens, n_batches, start = 0, 0, time.perf_counter()
    size = len(batches) if isinstance(batches, Sized) else None
    for batch in batches:
        batch = batch.to(device)
        tf = draw_teacher_forcing(teacher_forcing, batch.tgt.shape[1] - 1, generator)
        with precision.autocast(device, autocast):
            loss_sum, n = _forward(model, batch, tf, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / n).backward()
        # foreach: torch's default on CUDA; on the CPU it computes the norms and scales the
        # grads in 4.9 ms instead of 6.8 on the seeds' model (benchmarks/README.md)
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm, foreach=True)
        optimizer.step()
        total += loss_sum.detach()
        tokens, n_batches = tokens + n, n_batches + 1
        if progress is not None:
            progress(n=1, total=size)
    loss = total.item() / max(tokens, 1)  # the epoch's only host sync
    seconds = time.perf_counter() - start
    return EpochStats(
        loss, perplexity(loss), tokens, seconds, tokens / max(seconds, 1e-9), n_batches
    )


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable[Batch], *, autocast: bool) -> LossStats:
    """Teacher-forced loss per target token over `batches` (eval mode, dropout off); the model's
    train/eval mode is restored afterwards. Pass the unwrapped model, not the DDP wrapper."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    try:
        for batch in batches:
            batch = batch.to(device)
            tf = torch.ones(batch.tgt.shape[1] - 1, dtype=torch.bool)
            with precision.autocast(device, autocast):
                loss_sum, n = _forward(model, batch, tf)
            total += loss_sum
            tokens += n
    finally:
        model.train(was_training)
    loss = total.item() / max(tokens, 1)
    return LossStats(loss, perplexity(loss), tokens)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: ParallelCorpus,
    valid: ParallelCorpus | None,
    spec: FitSpec,
    *,
    start_epoch: int = 1,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
    autocast: bool = False,
    train_model: nn.Module | None = None,
    eval_batch_size: int = LOSS_BATCH_PAIRS,
    before_epoch: Callable[[int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    progress: Progress | None = None,
) -> list[EpochReport]:
    """The epoch loop: epochs `start_epoch`..`spec.epochs` of this rank's share of `train`.

    Per epoch: the seeding rule (`seed_epoch`), the lr of the epoch (`lr_for_epoch`), bucketed
    batches sharded by (rank, world_size), one `train_epoch` of `train_model` (e.g. the DDP
    wrapper; default `model`), then the teacher-forced loss of `model` on `valid` when given,
    and `on_epoch(report)`. `before_epoch(epoch)` runs first (e.g. a fault-injection hook).
    Restarting at `start_epoch` = k + 1 with the model and optimizer of epoch k reproduces an
    uninterrupted run. Returns the reports.
    """
    reports = []
    for epoch in range(start_epoch, spec.epochs + 1):
        if before_epoch is not None:
            before_epoch(epoch)
        start = time.perf_counter()
        args = (train, spec, epoch, rank, world_size, device, autocast, progress)
        stats = _train_one_epoch(train_model or model, optimizer, *args)
        val = None
        if valid is not None:
            val_batches = iterate_batches(
                valid, eval_batch_size, shuffle=False, seed=0, epoch=0, device=device
            )
            val = evaluate_loss(model, val_batches, autocast=autocast)
        reports.append(EpochReport(epoch, stats, val, time.perf_counter() - start))
        if on_epoch is not None:
            on_epoch(reports[-1])
    return reports


def _train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: ParallelCorpus,
    spec: FitSpec,
    epoch: int,
    rank: int,
    world_size: int,
    device: torch.device | str | None,
    autocast: bool,
    progress: Progress | None,
) -> EpochStats:
    """fit's epoch: the seeding rule, the epoch's lr, this rank's bucketed batches, a pass."""
    generator = seed_epoch(spec.seed, epoch, rank)
    set_lr(optimizer, lr_for_epoch(spec, epoch))
    batches = iterate_batches(
        train,
        spec.batch_size,
        shuffle=True,
        seed=spec.seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        pool_batches=spec.bucket_pool,
        device=device,
    )
    return train_epoch(
        model,
        optimizer,
        batches,
        teacher_forcing=spec.teacher_forcing,
        clip_norm=spec.clip_norm,
        generator=generator,
        autocast=autocast,
        progress=progress,
        label_smoothing=spec.label_smoothing,
    )
