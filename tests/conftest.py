"""Shared fixtures. Module-specific fixtures live in their own test files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import polars as pl
import pytest

from seq2seq.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
VENV_BIN = ROOT / ".venv" / "bin"


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads; on a busy machine 2 threads cost 40x per step."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_ambient_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's mirror, Ray cluster or MLflow server."""
    for var in ("SEQ2SEQ_DATA_MIRROR", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def multi30k_dir() -> Path:
    if not MULTI30K.is_dir():
        pytest.skip(f"{MULTI30K} (the shared Multi30k mirror) is absent")
    return MULTI30K


def pipeline_cmd() -> list[str]:
    """The installed console script (falls back to `python -m pipeline`)."""
    exe = VENV_BIN / "pipeline"
    return [str(exe)] if exe.exists() else [os.environ.get("PYTHON", "python"), "-m", "pipeline"]


# ------------------------------------------- prepared data and params for the Ray tests
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
    meta = {"source_lang": "de", "target_lang": "en", "lowercase": True, "reverse_source": True,
            "max_source_tokens": 6}  # fmt: skip
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


def make_best(cfg, best: Path, *, lowercase: bool = True) -> Path:  # noqa: ANN001 - a Config
    """`best` as the tune stage exports models/best, from an untrained model of `cfg` over its
    prepared data: checkpoint.pt, config.json, both vocabularies."""
    import shutil

    import torch

    from seq2seq.checkpoint import save_checkpoint
    from seq2seq.model import Seq2Seq
    from seq2seq.text import Preprocessing

    prepared = Path(cfg.paths.prepared)
    src, tgt = (Vocab.load(prepared / f"vocab.{s}.json") for s in ("src", "tgt"))
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, len(src), len(tgt))
    prep = Preprocessing("de", "en", lowercase, reverse_source=True, max_source_tokens=6)
    save_checkpoint(best, model=model, epoch=2, preprocessing=prep, config=cfg.model_dump(),
                    src_vocab=src, tgt_vocab=tgt)  # fmt: skip
    (best / "config.json").write_text(json.dumps(cfg.model_dump()))
    for side in ("src", "tgt"):
        shutil.copy(prepared / f"vocab.{side}.json", best / f"vocab.{side}.json")
    return best
