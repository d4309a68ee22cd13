"""The clean, tokenize and reverse stages: streaming polars queries, parquet to parquet.

Each stage checks its inputs, then builds its whole output folder in a temporary sibling that
replaces the old folder only on success (`seq2seq.io.atomic_dir`), so a failure leaves the
previous outputs intact. The text processing itself lives in `seq2seq.text`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

import polars as pl

from pipeline.config import Config, check_output_folder
from pipeline.ui import info, progress
from seq2seq import text
from seq2seq.errors import DataError
from seq2seq.io import atomic_dir, write_json
from seq2seq.vocab import SPECIALS, Vocab

SPLITS = ("train", "valid", "test")
SIDES = ("src", "tgt")
Dtype = pl.DataType | type[pl.DataType]
TEXT_SCHEMA: dict[str, Dtype] = {"src": pl.String, "tgt": pl.String}
IDS_SCHEMA: dict[str, Dtype] = {
    **TEXT_SCHEMA,
    "src_ids": pl.List(pl.UInt32),
    "tgt_ids": pl.List(pl.UInt32),
}
STREAMING: Final = "streaming"
# lz4: about 30% less CPU than zstd for these files, about 1.5x their size.
COMPRESSION: Final = "lz4"


def _inputs(folder: str | Path, schema: dict[str, Dtype], make: str) -> dict[str, Path]:
    """The three split files of `folder`, checked for presence and columns; else DataError."""
    folder = Path(folder)
    fix = f"run `{make}` first (or `dvc repro`)"
    if not folder.is_dir():
        raise DataError(f"input folder {folder} does not exist", fix=fix)
    paths = {split: folder / f"{split}.parquet" for split in SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"input file {path} is missing", fix=fix)
        try:
            found = pl.scan_parquet(path).collect_schema()
        except (pl.exceptions.PolarsError, OSError) as err:
            raise DataError(f"{path} is not a readable parquet file ({err})", fix=fix) from None
        wrong = [f"{c}: {t}" for c, t in schema.items() if found.get(c) != t]
        if wrong:
            have = ", ".join(f"{c}: {t}" for c, t in found.items())
            raise DataError(
                f"{path} lacks the column(s) {', '.join(wrong)} (it has {have or 'none'})",
                fix=f"re-create it with `{make}`",
            )
    return paths


def _clean_split(src: Path, dst: Path, cfg: Config, dedup: bool) -> dict:
    """One split raw -> clean in a single streaming pass; returns its report entry."""
    d = cfg.data
    rows = text.clean_frame(
        pl.scan_parquet(src),
        max_len=d.max_len,
        max_ratio=d.max_ratio,
        lowercase=d.lowercase,
        dedup=dedup,
    )
    kept = rows.filter(pl.col("reason").is_null()).drop("reason")
    sink = kept.sink_parquet(dst, compression=COMPRESSION, lazy=True)
    _, counts = pl.collect_all([sink, rows.group_by("reason").len()], engine=STREAMING)
    by_reason = dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))
    dropped = {reason: by_reason.get(reason, 0) for reason in text.DROP_REASONS}
    return {
        "rows_in": sum(by_reason.values()),
        "kept": by_reason.get(None, 0),
        "dropped": dropped,
    }


def _emptied(split: str, r: dict, cfg: Config) -> DataError:
    """No pair of `split` survived cleaning (or there was none to start with)."""
    if r["rows_in"] == 0:
        return DataError(
            f"split '{split}' of {cfg.paths.raw} has no pairs",
            fix="check the corpus and run `pipeline download` again",
        )
    return DataError(
        f"no pairs of split '{split}' are left after cleaning (rows in {r['rows_in']}, dropped "
        f"per reason {r['dropped']})",
        fix=f"loosen data.max_len / data.max_ratio, or check the corpus in {cfg.paths.raw}",
    )


def clean(cfg: Config) -> dict:
    """paths.raw -> paths.clean: normalised pairs without empty, over-long, ratio-outlier and
    (train) duplicate pairs, plus report.json. Returns the report."""
    check_output_folder(cfg.paths.clean, "paths.clean")
    inputs = _inputs(cfg.paths.raw, TEXT_SCHEMA, "pipeline download")
    report: dict[str, dict] = {}
    with atomic_dir(cfg.paths.clean) as tmp, progress("clean", total=len(SPLITS)) as advance:
        for split, path in inputs.items():
            report[split] = _clean_split(path, tmp / f"{split}.parquet", cfg, split == "train")
            advance(description=f"clean {split}")
            if report[split]["kept"] == 0:  # raised before the swap: paths.clean stays
                raise _emptied(split, report[split], cfg)
        write_json(tmp / "report.json", report)
    summary = ", ".join(f"{s} {r['kept']}/{r['rows_in']} kept" for s, r in report.items())
    drops = {k: sum(r["dropped"][k] for r in report.values()) for k in text.DROP_REASONS}
    info(f"clean: {summary}; dropped {drops} -> {cfg.paths.clean}")
    return report


def _vocabs(train: Path, cfg: Config) -> dict[str, Vocab]:
    """Source and target vocabularies from the train split's token counts."""
    d = cfg.data
    lf = pl.scan_parquet(train)
    queries = [text.token_counts(lf, side, lowercase=d.lowercase) for side in SIDES]
    counts = pl.collect_all(queries, engine=STREAMING)
    vocabs = {
        side: text.vocab_from_counts(c, min_freq=d.min_freq, max_size=d.max_size)
        for side, c in zip(SIDES, counts, strict=True)
    }
    for side, vocab in vocabs.items():
        if len(vocab) == len(SPECIALS):
            raise DataError(
                f"the {side} vocabulary is empty: no train token occurs data.min_freq="
                f"{d.min_freq} times",
                fix="lower data.min_freq or use a bigger corpus",
            )
    return vocabs


def tokenize(cfg: Config) -> dict[str, Vocab]:
    """paths.clean -> paths.tokens: token ids per split and train-built vocabularies."""
    check_output_folder(cfg.paths.tokens, "paths.tokens")
    inputs = _inputs(cfg.paths.clean, TEXT_SCHEMA, "pipeline clean")
    lowercase = cfg.data.lowercase
    with atomic_dir(cfg.paths.tokens) as tmp, progress("tokenize", total=1 + len(SPLITS)) as adv:
        vocabs = _vocabs(inputs["train"], cfg)
        adv(description="tokenize: vocabularies")
        for split, path in inputs.items():
            ids = [
                text.token_ids(text.tokens(pl.col(s), lowercase=lowercase), vocabs[s]).alias(
                    f"{s}_ids"
                )
                for s in SIDES
            ]
            pl.scan_parquet(path).select(*SIDES, *ids).sink_parquet(
                tmp / f"{split}.parquet", compression=COMPRESSION, engine=STREAMING
            )
            adv(description=f"tokenize {split}")
        for side, vocab in vocabs.items():
            vocab.save(tmp / f"vocab.{side}.json")
    info(
        f"tokenize: vocabularies src {len(vocabs['src'])}, tgt {len(vocabs['tgt'])} "
        f"(min_freq {cfg.data.min_freq}, max_size {cfg.data.max_size}) -> {cfg.paths.tokens}"
    )
    return vocabs


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _max_source_tokens(path: Path) -> int:
    longest = pl.scan_parquet(path).select(pl.col("src_ids").list.len().max()).collect().item()
    return int(longest or 0)


def reverse(cfg: Config) -> dict:
    """paths.tokens -> paths.prepared: source ids reversed (data.reverse_source), vocabularies
    and meta.json: everything training needs. Returns the meta."""
    check_output_folder(cfg.paths.prepared, "paths.prepared")
    inputs = _inputs(cfg.paths.tokens, IDS_SCHEMA, "pipeline tokenize")
    tokens_dir = Path(cfg.paths.tokens)
    vocab_files = [tokens_dir / f"vocab.{side}.json" for side in SIDES]
    for path in vocab_files:
        if not path.is_file():
            raise DataError(f"input file {path} is missing", fix="run `pipeline tokenize` first")
    d = cfg.data
    with atomic_dir(cfg.paths.prepared) as tmp, progress("reverse", total=len(SPLITS)) as adv:
        for split, path in inputs.items():
            lf = pl.scan_parquet(path).select(*IDS_SCHEMA)
            if d.reverse_source:
                lf = lf.with_columns(text.reverse_ids(pl.col("src_ids")))
            lf.sink_parquet(tmp / f"{split}.parquet", compression=COMPRESSION, engine=STREAMING)
            adv(description=f"reverse {split}")
        for path in vocab_files:
            shutil.copyfile(path, tmp / path.name)
        meta = {
            "source_lang": d.source_lang,
            "target_lang": d.target_lang,
            "lowercase": d.lowercase,
            "reverse_source": d.reverse_source,
            "max_source_tokens": _max_source_tokens(tmp / "train.parquet"),
            "rows": {split: _rows(tmp / f"{split}.parquet") for split in SPLITS},
            "vocab_size": {s: len(Vocab.load(p)) for s, p in zip(SIDES, vocab_files, strict=True)},
        }
        write_json(tmp / "meta.json", meta)
    flipped = "reversed" if d.reverse_source else "kept in order"
    info(f"reverse: source {flipped}; rows {meta['rows']} -> {cfg.paths.prepared}")
    return meta
