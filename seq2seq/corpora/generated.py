"""The generated `sample` corpus (seq2seq.corpora.sample) split into train/valid/test.

The split groups pairs by their German sentence (a seeded hash, see HashSplitter), so a
sentence the generator produced twice never sits in both train and test, and both directions
(de->en, en->de) share the same test set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from seq2seq.corpora.common import SPLITS, CorpusResult, HashSplitter, PairWriter
from seq2seq.errors import DataError

LANGS = ("de", "en")
Generator = Callable[[int, int], pl.DataFrame]


def check_langs(source_lang: str, target_lang: str) -> None:
    """DataError unless the direction is de->en or en->de."""
    if {source_lang, target_lang} != set(LANGS):
        raise DataError(
            f"sample: the generated corpus is German-English only, got "
            f"{source_lang}->{target_lang} (supported: de->en, en->de)",
            "set the languages to de and en, or choose the multi30k, tatoeba or files corpus",
        )


def split_frame(
    df: pl.DataFrame, key: str, seed: int, valid_fraction: float, test_fraction: float
) -> dict[str, pl.DataFrame]:
    """Rows of `df` per split, grouped by column `key` (equal keys share a split), order kept."""
    keys = df[key].to_list()
    splitter = HashSplitter.fit(keys, seed, valid_fraction, test_fraction)
    labels = pl.Series("split", [splitter(k) for k in keys])
    return {split: df.filter(labels == split) for split in SPLITS}


def write_sample(
    out_dir: Path,
    source_lang: str,
    target_lang: str,
    *,
    num_pairs: int,
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    vocabulary: str = "small",
    chain: float | None = None,
    generate: Generator | None = None,
) -> CorpusResult:
    """Generate `num_pairs` pairs with `seed` and write `out_dir/{split}.parquet`.

    `generate(num_pairs, seed) -> DataFrame[de, en]` defaults to seq2seq.corpora.sample.generate
    with `vocabulary` and `chain` (None: its default).
    """
    check_langs(source_lang, target_lang)
    if generate is None:
        from seq2seq.corpora.sample import CHAIN
        from seq2seq.corpora.sample import generate as generate_sample

        knobs: dict[str, str | float] = {"vocabulary": vocabulary}
        knobs["chain"] = CHAIN if chain is None else chain
        df = generate_sample(num_pairs, seed, vocabulary=vocabulary, chain=float(knobs["chain"]))
    else:
        knobs = {}
        df = generate(num_pairs, seed)
    info = {"source": "generated", "seed": seed, "num_pairs": num_pairs, **knobs}
    result = CorpusResult(info=info)
    for split, part in split_frame(df, "de", seed, valid_fraction, test_fraction).items():
        with PairWriter(out_dir / f"{split}.parquet") as writer:
            writer.add_many(part[source_lang].to_list(), part[target_lang].to_list())
        result.pairs[split] = writer.rows
    return result
