"""Batches of sentence pairs: a compact corpus, length bucketing, rank sharding, padded tensors.

A split is held as two flat id arrays plus offsets (`ParallelCorpus`), so that 29k or 4M pairs
cost a few numpy arrays rather than millions of Python lists. `bucket_batches` groups pairs of
similar length (little padding, hence little wasted compute) and splits every global batch across
DDP ranks; `iterate_batches` turns the index arrays into padded `Batch` tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from seq2seq.errors import DataError
from seq2seq.vocab import EOS, PAD, SOS

POOL_BATCHES = 50  # batches per length-sorting pool (see bucket_batches)


@dataclass
class Batch:
    """A padded batch of pairs (batch-first).

    src (B, S) long, PAD-padded source ids as stored (reversed, no specials);
    src_lens (B,) long >= 1; tgt (B, T) long, `<sos> y1..yn <eos>` PAD-padded;
    tgt_lens (B,) long = n + 2; index (B,) long, each pair's row in its split.
    The lengths stay on the CPU when the batch moves (`to`): packing and the decoder's step plan
    are host logic, and lengths on an accelerator would cost a device sync per step.
    """

    src: Tensor
    src_lens: Tensor
    tgt: Tensor
    tgt_lens: Tensor
    index: Tensor

    def to(self, device: torch.device | str | None) -> Batch:
        if device is None:
            return self
        return Batch(
            self.src.to(device, non_blocking=True),
            self.src_lens,
            self.tgt.to(device, non_blocking=True),
            self.tgt_lens,
            self.index,
        )

    def __len__(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_target_tokens(self) -> int:
        """Predicted tokens (y1..yn and <eos>), padding excluded."""
        return int((self.tgt_lens - 1).sum())


class ParallelCorpus:
    """A split's id sequences as flat uint32 arrays plus int64 offsets (row i is [o[i], o[i+1]))."""

    def __init__(self, src_flat: np.ndarray, src_off: np.ndarray, tgt_flat, tgt_off) -> None:
        self.src_flat, self.src_off = np.asarray(src_flat), np.asarray(src_off, dtype=np.int64)
        self.tgt_flat, self.tgt_off = np.asarray(tgt_flat), np.asarray(tgt_off, dtype=np.int64)
        if len(self.src_off) != len(self.tgt_off):
            raise ValueError("source and target must have the same number of rows")
        self.src_lens = np.diff(self.src_off)
        self.tgt_lens = np.diff(self.tgt_off)

    def __len__(self) -> int:
        return len(self.src_lens)

    @classmethod
    def from_lists(
        cls, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]
    ) -> ParallelCorpus:
        """From Python id lists (tests, translate); empty sources are rejected."""
        if len(src) != len(tgt):
            raise DataError(
                f"{len(src)} source but {len(tgt)} target sentences", "give one target per source"
            )
        src_flat, src_off = _flatten(src)
        tgt_flat, tgt_off = _flatten(tgt)
        corpus = cls(src_flat, src_off, tgt_flat, tgt_off)
        corpus._check("the given sentences")
        return corpus

    @classmethod
    def from_parquet(cls, path: str | Path) -> ParallelCorpus:
        """Read columns `src_ids`, `tgt_ids` (List[UInt32]) of a training-ready split."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"split file {path} does not exist", "run `dvc repro reverse` first")
        try:
            table = pq.read_table(path, columns=["src_ids", "tgt_ids"])
        except (pa.ArrowInvalid, KeyError) as e:
            raise DataError(
                f"{path} is not a split with columns src_ids, tgt_ids ({e})",
                "re-run the tokenize and reverse stages",
            ) from e
        arrays = []
        for name in ("src_ids", "tgt_ids"):
            col = table.column(name).combine_chunks()
            if col.null_count:
                raise DataError(f"{path}: {col.null_count} null rows in {name}", "re-run tokenize")
            lens = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
            off = np.concatenate([[0], np.cumsum(lens)])
            arrays += [col.flatten().to_numpy(zero_copy_only=False).astype(np.uint32), off]
        corpus = cls(*arrays)
        corpus._check(str(path))
        return corpus

    def with_reversed_sources(self) -> ParallelCorpus:
        """The same pairs with every source sentence's token order reversed (vectorised)."""
        rows = np.repeat(np.arange(len(self)), self.src_lens)
        pos = np.arange(len(self.src_flat)) - self.src_off[rows]
        flipped = self.src_flat[self.src_off[rows] + self.src_lens[rows] - 1 - pos]
        return ParallelCorpus(flipped, self.src_off, self.tgt_flat, self.tgt_off)

    def _check(self, where: str) -> None:
        empty = np.flatnonzero(self.src_lens == 0)
        if len(empty):
            raise DataError(
                f"{where}: {len(empty)} pairs have an empty source (first row {empty[0]})",
                "rebuild the data with the data stages (`dvc repro reverse`): the clean "
                "stage drops empty pairs",
            )

    def collate(self, idx: np.ndarray) -> Batch:
        """Pairs `idx` (B,) -> a padded CPU `Batch` (vectorised, no per-pair Python loop)."""
        idx = np.asarray(idx, dtype=np.int64)
        src, src_lens = _pad(self.src_flat, self.src_off[idx], self.src_lens[idx], lead=0)
        tgt, tgt_lens = _pad(self.tgt_flat, self.tgt_off[idx], self.tgt_lens[idx], lead=1)
        rows = np.arange(len(idx))
        tgt[:, 0] = SOS
        tgt[rows, tgt_lens - 1] = EOS
        return Batch(
            torch.from_numpy(src),
            torch.from_numpy(src_lens),
            torch.from_numpy(tgt),
            torch.from_numpy(tgt_lens),
            torch.from_numpy(idx),
        )


def _flatten(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.uint32, count=int(lens.sum()))
    return flat, np.concatenate([[0], np.cumsum(lens)])


def _pad(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray, lead: int):
    """Row i = flat[starts[i] : starts[i] + lens[i]] placed after `lead` free columns (for <sos>)
    in a PAD matrix with `lead` free columns after the longest row (for <eos>).

    Returns (matrix (B, max(lens) + 2 * lead) int64, lens + 2 * lead)."""
    out_lens = lens + 2 * lead
    out = np.full((len(lens), int(out_lens.max())), PAD, dtype=np.int64)
    rows = np.repeat(np.arange(len(lens)), lens)
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    out[rows, within + lead] = flat[np.repeat(starts, lens) + within]
    return out, out_lens


def bucket_batches(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pool_batches: int = POOL_BATCHES,
) -> list[np.ndarray]:
    """Split positions into length-bucketed batches; return this rank's share of each.

    Without shuffle: all pairs sorted by (target, source) length, chunked. With shuffle: a
    permutation drawn from (seed, epoch), cut into pools of `pool_batches` batches, each pool
    sorted by length (ties keep the random order) and chunked, then the batch order shuffled.
    The pool trades speed for learning per epoch, and the best value depends on the setup: large
    pools give batches of near-equal lengths (little padding, fast); 1 gives random batches.
    (benchmarks/README.md has the measured trade-off.)
    `batch_size` is the global batch: rank r takes positions r, r + world_size, ... of every
    global batch (its members are length-sorted, so shares have similar lengths). Every rank gets
    the same number of batches: a last global batch with fewer than `world_size` pairs is merged
    into the one before it, so every pair is used exactly once per epoch across ranks.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if batch_size < world_size:
        raise DataError(
            f"a global batch of {batch_size} pairs cannot be split over {world_size} workers",
            "set train.batch_size to at least train.num_workers",
        )
    n = len(src_lens)
    if n < world_size:
        raise DataError(
            f"the split has {n} pairs, fewer than the {world_size} workers",
            "use fewer workers (train.num_workers) or a larger split",
        )
    src_lens, tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    pool = batch_size * pool_batches if shuffle else n
    batches: list[np.ndarray] = []
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.lexsort((src_lens[chunk], tgt_lens[chunk]))]  # stable: by tgt, then src
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < world_size:
        batches[-2:] = [np.concatenate(batches[-2:])]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [b[rank::world_size] for b in batches]


class BatchIterable:
    """The batches of one epoch for one rank: iterable (padded `Batch`es) and sized."""

    def __init__(self, corpus: ParallelCorpus, indices: list[np.ndarray], device) -> None:
        self.corpus, self.indices, self.device = corpus, indices, device

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.indices:
            yield self.corpus.collate(idx).to(self.device)


def iterate_batches(
    corpus: ParallelCorpus,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pool_batches: int = POOL_BATCHES,
    device: torch.device | str | None = None,
) -> BatchIterable:
    """This rank's padded batches for one epoch (see `bucket_batches`), moved to `device`."""
    indices = bucket_batches(
        corpus.src_lens,
        corpus.tgt_lens,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        pool_batches=pool_batches,
    )
    return BatchIterable(corpus, indices, device)
