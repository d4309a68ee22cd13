"""The prepared data folder (the reverse stage's output) as runs read it.

`meta.json` is the one truth about how the data was made (`prepared_meta`). A run may ask for
the other source order than the one the reverse stage wrote (a sweep trial with
`data.reverse_source` in its search space, e.g. `pipeline claim reversal`): `read_split` and
`read_frame` then reverse each source back, and `run_preprocessing` is what its checkpoints
store, so that translate and evaluate feed it sources in its own order.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from seq2seq.batching import ParallelCorpus
from seq2seq.text import Preprocessing


def prepared_meta(folder: Path) -> Preprocessing:
    """The prepared data's meta.json as the Preprocessing every checkpoint stores."""
    try:
        raw = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(
            f"{folder / 'meta.json'} is unreadable ({err})",
            fix="rebuild the data (`dvc repro reverse`)",
        ) from None
    return Preprocessing.from_dict(raw, str(folder / "meta.json"))


def run_preprocessing(prepared: Path, reverse_source: bool) -> Preprocessing:
    """The Preprocessing a run's checkpoints store: the prepared data's, with the run's source
    order (a sweep trial may ask for the other one: `data.reverse_source` in the search space)."""
    return dataclasses.replace(prepared_meta(prepared), reverse_source=reverse_source)


def read_split(prepared: Path, split: str, reverse_source: bool) -> ParallelCorpus:
    """A prepared split for training or scoring with sources in the order `reverse_source`
    asks for: as the reverse stage wrote them, or flipped back when it asks for the other."""
    corpus = ParallelCorpus.from_parquet(prepared / f"{split}.parquet")
    flip = prepared_meta(prepared).reverse_source != reverse_source
    return corpus.with_reversed_sources() if flip else corpus


def read_frame(prepared: Path, split: str, reverse_source: bool, columns: list[str]) -> Any:
    """`read_split` for a polars frame (its `src_ids` column in the asked order)."""
    import polars as pl

    frame = pl.read_parquet(prepared / f"{split}.parquet", columns=columns)
    if "src_ids" in columns and prepared_meta(prepared).reverse_source != reverse_source:
        frame = frame.with_columns(pl.col("src_ids").list.reverse())
    return frame
