"""pipeline.trainloop: the Ray Train adapter's pieces (fault hook, seeding, throughput, config),
plus `make_prepared`, a tiny training-ready folder used by the Ray tests too."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from pipeline import trainloop
from pipeline.config import Config
from seq2seq.vocab import Vocab

WORDS = [f"w{i}" for i in range(12)]


def make_prepared(folder: Path, n_train: int = 192, n_valid: int = 24, seed: int = 0) -> Path:
    """A word-for-word 'translation' task (src `wI` -> tgt `vI`) in the reverse stage's format:
    {train,valid,test}.parquet (src, tgt, src_ids reversed, tgt_ids), vocabularies, meta.json."""
    folder.mkdir(parents=True, exist_ok=True)
    src_vocab = Vocab.from_tokens(WORDS)
    tgt_vocab = Vocab.from_tokens(w.replace("w", "v") for w in WORDS)
    rng = random.Random(seed)
    sizes = {"train": n_train, "valid": n_valid, "test": n_valid}
    for split, n in sizes.items():
        rows = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
            tgt = [w.replace("w", "v") for w in words]
            rows.append(
                {
                    "src": " ".join(words),
                    "tgt": " ".join(tgt),
                    "src_ids": src_vocab.encode(words)[::-1],
                    "tgt_ids": tgt_vocab.encode(tgt),
                }
            )
        frame = pl.DataFrame(
            rows,
            schema={
                "src": pl.Utf8,
                "tgt": pl.Utf8,
                "src_ids": pl.List(pl.UInt32),
                "tgt_ids": pl.List(pl.UInt32),
            },
        )
        frame.write_parquet(folder / f"{split}.parquet")
    src_vocab.save(folder / "vocab.src.json")
    tgt_vocab.save(folder / "vocab.tgt.json")
    meta = {"source_lang": "de", "target_lang": "en", "lowercase": True, "reverse_source": True}
    (folder / "meta.json").write_text(json.dumps({**meta, "rows": sizes}))
    return folder


def tiny_params(prepared: Path, **overrides: object) -> dict:
    """A params.yaml tree for fast Ray tests (emb/hidden 16, 2 epochs, 2 CPUs)."""
    raw = {
        "model": {"emb_dim": 16, "hidden_dim": 16, "num_layers": 1, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 32, "num_workers": 2, "lr": 0.01, "max_failures": 2},
        "tune": {"num_samples": 3, "grace_period": 1},
        "evaluate": {"batch_size": 64},
        "ray": {"num_cpus": 2, "health_check_interval_s": 0.2},
        "paths": {"prepared": str(prepared), "models": "models"},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


def test_make_prepared_round_trips(tmp_path: Path) -> None:
    from seq2seq.batching import ParallelCorpus

    folder = make_prepared(tmp_path / "prep")
    corpus = ParallelCorpus.from_parquet(folder / "train.parquet")
    assert len(corpus) == 192


def test_loop_config_has_absolute_path_and_no_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(trainloop.FAULT_EPOCH_ENV, raising=False)
    cfg = Config()
    out = trainloop.loop_config(cfg, "data/prepared")
    assert Path(out["prepared"]).is_absolute()
    assert out["fault"] is None
    assert Config.model_validate(out["cfg"]) == cfg  # the tree survives the round trip


def test_fault_hook_fires_once_on_last_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(trainloop.FAULT_EPOCH_ENV, "2")
    monkeypatch.setenv(trainloop.FAULT_MARKER_ENV, str(marker))
    fault = trainloop.loop_config(Config(), str(tmp_path))["fault"]
    assert fault == (2, str(marker))
    trainloop._maybe_fault(fault, epoch=1, rank=1, world=2)  # wrong epoch
    trainloop._maybe_fault(fault, epoch=2, rank=0, world=2)  # not the last rank
    assert not marker.exists()
    with pytest.raises(trainloop.InjectedFault):
        trainloop._maybe_fault(fault, epoch=2, rank=1, world=2)
    assert marker.exists()
    trainloop._maybe_fault(fault, epoch=2, rank=1, world=2)  # already fired: no raise


def test_global_stats_single_process() -> None:
    assert trainloop._global_stats(2.5, 1000, 2.0) == pytest.approx((2.5, 500.0))
