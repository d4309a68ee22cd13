"""seq2seq.corpora.generated: the sample corpus split (tested with a stand-in generator)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from seq2seq.corpora.generated import split_frame, write_sample
from seq2seq.errors import DataError


def stand_in(num_pairs: int, seed: int) -> pl.DataFrame:
    """Like sample.generate: `de`, `en` columns; 1 in 4 sentences repeats an earlier one."""
    ids = [i if i % 4 else i // 4 for i in range(num_pairs)]
    return pl.DataFrame(
        {"de": [f"Satz {seed}-{i}." for i in ids], "en": [f"Sentence {seed}-{i}." for i in ids]}
    )


def test_split_is_deterministic_exact_and_keeps_duplicates_together():
    df = stand_in(400, 1)
    parts = split_frame(df, "de", seed=1, valid_fraction=0.1, test_fraction=0.05)
    distinct = df["de"].n_unique()
    assert parts["valid"]["de"].n_unique() == round(distinct * 0.1)
    assert parts["test"]["de"].n_unique() == round(distinct * 0.05)
    assert sum(p.height for p in parts.values()) == 400
    seen = [set(p["de"]) for p in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    again = split_frame(df, "de", seed=1, valid_fraction=0.1, test_fraction=0.05)
    assert all(parts[s].equals(again[s]) for s in parts)
    other = split_frame(df, "de", seed=2, valid_fraction=0.1, test_fraction=0.05)
    assert not parts["test"].equals(other["test"])


@pytest.mark.parametrize(("src", "tgt"), [("de", "en"), ("en", "de")])
def test_write_sample_follows_the_direction(tmp_path: Path, src: str, tgt: str):
    result = write_sample(
        tmp_path,
        src,
        tgt,
        num_pairs=200,
        seed=5,
        valid_fraction=0.1,
        test_fraction=0.1,
        generate=stand_in,
    )
    train = pl.read_parquet(tmp_path / "train.parquet")
    assert train.columns == ["src", "tgt"]
    assert train["src"][0].startswith("Satz" if src == "de" else "Sentence")
    assert sum(result.pairs.values()) == 200
    assert result.info == {"source": "generated", "seed": 5, "num_pairs": 200}


@pytest.mark.parametrize(("src", "tgt"), [("fr", "en"), ("de", "fr"), ("cs", "de")])
def test_sample_is_german_english_only(tmp_path: Path, src: str, tgt: str):
    with pytest.raises(DataError, match="supported: de->en, en->de"):
        write_sample(
            tmp_path,
            src,
            tgt,
            num_pairs=50,
            seed=1,
            valid_fraction=0.1,
            test_fraction=0.1,
            generate=stand_in,
        )
    assert list(tmp_path.iterdir()) == []
