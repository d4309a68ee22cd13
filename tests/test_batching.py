"""Batching: compact corpus, padded tensors, length buckets, deterministic rank split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seq2seq.batching import ParallelCorpus, bucket_batches, iterate_batches
from seq2seq.errors import DataError
from seq2seq.vocab import EOS, PAD, SOS


def _lists(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 50, rng.integers(1, 30)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, 50, rng.integers(0, 30)).tolist() for _ in range(n)]
    return src, tgt


def test_collate_pads_and_adds_specials() -> None:
    corpus = ParallelCorpus.from_lists([[5, 6, 7], [8]], [[9], []])
    b = corpus.collate(np.array([1, 0]))
    assert b.src.tolist() == [[8, PAD, PAD], [5, 6, 7]]
    assert b.src_lens.tolist() == [1, 3]
    assert b.tgt.tolist() == [[SOS, EOS, PAD], [SOS, 9, EOS]]
    assert b.tgt_lens.tolist() == [2, 3]
    assert b.index.tolist() == [1, 0]
    assert b.num_target_tokens == 3 and len(b) == 2


def test_from_parquet_matches_from_lists(tmp_path: Path) -> None:
    src, tgt = _lists(40)
    path = tmp_path / "train.parquet"
    pl.DataFrame(
        {"src_ids": src, "tgt_ids": tgt, "src": ["x"] * 40, "tgt": ["y"] * 40},
        schema={"src_ids": pl.List(pl.UInt32), "tgt_ids": pl.List(pl.UInt32), "src": pl.Utf8,
                "tgt": pl.Utf8},
    ).write_parquet(path)  # fmt: skip
    a, b = ParallelCorpus.from_parquet(path), ParallelCorpus.from_lists(src, tgt)
    assert len(a) == 40
    for name in ("src_flat", "src_off", "tgt_flat", "tgt_off"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    idx = np.arange(40)
    assert a.collate(idx).tgt.tolist() == b.collate(idx).tgt.tolist()


def test_bad_inputs_raise_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty source"):
        ParallelCorpus.from_lists([[4], []], [[5], [6]])
    with pytest.raises(DataError, match="does not exist"):
        ParallelCorpus.from_parquet(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"src": ["a"]}).write_parquet(bad)
    with pytest.raises(DataError, match="src_ids"):
        ParallelCorpus.from_parquet(bad)
    with pytest.raises(DataError, match="cannot be split"):
        bucket_batches(np.ones(9), np.ones(9), 2, shuffle=False, seed=0, epoch=0, world_size=3)
    with pytest.raises(DataError, match="fewer than"):
        bucket_batches(np.ones(2), np.ones(2), 4, shuffle=False, seed=0, epoch=0, world_size=3)


def test_bucket_batches_deterministic_and_complete() -> None:
    src, tgt = _lists(1000)
    corpus = ParallelCorpus.from_lists(src, tgt)
    kw = dict(shuffle=True, seed=7, pool_batches=4)
    a = bucket_batches(corpus.src_lens, corpus.tgt_lens, 32, epoch=1, **kw)
    b = bucket_batches(corpus.src_lens, corpus.tgt_lens, 32, epoch=1, **kw)
    c = bucket_batches(corpus.src_lens, corpus.tgt_lens, 32, epoch=2, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert all(len(x) == 32 for x in a if len(x) != 1000 % 32)

    # bucketing: far less target padding than random batches of the same size
    def pad_fraction(batches: list[np.ndarray]) -> float:
        lens = corpus.tgt_lens
        real = sum(lens[x].sum() for x in batches)
        return 1 - real / sum(lens[x].max() * len(x) for x in batches)

    random = np.array_split(np.random.default_rng(0).permutation(1000), 32)
    assert pad_fraction(a) < 0.5 * pad_fraction(random)


@pytest.mark.parametrize("n, world", [(1000, 2), (1001, 3), (97, 4), (130, 4)])
def test_rank_split_covers_every_pair_once_with_equal_batch_counts(n: int, world: int) -> None:
    src, tgt = _lists(n, seed=n)
    corpus = ParallelCorpus.from_lists(src, tgt)
    shares = [
        bucket_batches(corpus.src_lens, corpus.tgt_lens, 32, shuffle=True, seed=3, epoch=5,
                       rank=r, world_size=world)
        for r in range(world)
    ]  # fmt: skip
    assert len({len(s) for s in shares}) == 1
    assert all(len(b) > 0 for s in shares for b in s)
    everything = np.concatenate([b for s in shares for b in s])
    assert sorted(everything.tolist()) == list(range(n))
    single = bucket_batches(corpus.src_lens, corpus.tgt_lens, 32, shuffle=True, seed=3, epoch=5)
    if n % 32 and n % 32 < world:  # a last global batch too small to share is merged
        assert len(single) == len(shares[0]) + 1
        return
    for k, whole in enumerate(single):  # each global batch is the union of the ranks' shares
        parts = np.concatenate([s[k] for s in shares])
        assert sorted(parts.tolist()) == sorted(whole.tolist())


def test_iterate_batches_sized_and_eval_order_is_stable() -> None:
    src, tgt = _lists(100)
    corpus = ParallelCorpus.from_lists(src, tgt)
    batches = iterate_batches(corpus, 16, shuffle=False, seed=0, epoch=0, device="cpu")
    got = list(batches)
    assert len(batches) == len(got) == 7
    assert sorted(np.concatenate([b.index.numpy() for b in got]).tolist()) == list(range(100))
    for b in got:
        for row, i in enumerate(b.index.tolist()):
            assert b.tgt[row, 1 : b.tgt_lens[row] - 1].tolist() == tgt[i]
            assert b.src[row, : b.src_lens[row]].tolist() == src[i]
