"""seq2seq.corpora.common: line reading, parallel pairing, parquet writing, seeded splits."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from seq2seq.corpora import common
from seq2seq.corpora.common import (
    HashSplitter,
    PairWriter,
    iter_lines,
    key_hash,
    open_bytes,
    read_parallel,
    write_pairs,
)
from seq2seq.errors import DataError


def lines_of(data: bytes) -> list[str]:
    return list(iter_lines(io.BytesIO(data), "x.txt"))


def test_lines_split_on_newline_only_and_drop_endings_and_bom():
    data = "\ufeffa\r\nb\u2028c\n\nlast".encode()
    assert lines_of(data) == ["a", "b\u2028c", "", "last"]
    assert lines_of(b"") == []
    assert lines_of(b"x\r\r\n") == ["x\r"]  # only one \r belongs to the line ending


def test_invalid_utf8_names_file_and_line_number():
    with pytest.raises(DataError, match=r"x\.txt line 3: invalid UTF-8 \(byte 0xe4"):
        lines_of(b"ok\nauch ok\n" + "Bär\n".encode("latin-1"))


def test_gzip_is_detected_and_truncation_is_reported(tmp_path: Path):
    gz = tmp_path / "t.de"  # no .gz suffix: detected by magic bytes
    gz.write_bytes(gzip.compress("".join(f"Zeile {i}\n" for i in range(5000)).encode()))
    with open_bytes(gz) as f:
        assert list(iter_lines(f, "t.de"))[:2] == ["Zeile 0", "Zeile 1"]
    gz.write_bytes(gz.read_bytes()[:-200])
    with open_bytes(gz) as f, pytest.raises(DataError, match="t.de: corrupt or truncated"):
        list(iter_lines(f, "t.de"))


@pytest.mark.parametrize(("n_src", "n_tgt"), [(5, 3), (3, 5), (0, 2)])
def test_parallel_length_mismatch_gives_both_counts_and_names(n_src: int, n_tgt: int):
    src, tgt = iter([f"s{i}" for i in range(n_src)]), iter([f"t{i}" for i in range(n_tgt)])
    with pytest.raises(DataError) as err:
        list(read_parallel(src, tgt, "train.de", "train.en"))
    assert f"train.de has {n_src} lines" in str(err.value)
    assert f"train.en has {n_tgt}" in str(err.value)


def test_pair_writer_streams_row_groups_in_order(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(common, "CHUNK_ROWS", 7)
    path = tmp_path / "train.parquet"
    rows = write_pairs(path, ((f"s{i}", f"t{i}") for i in range(30)))
    assert rows == 30
    assert pq.ParquetFile(path).metadata.num_row_groups == 5  # written incrementally
    df = pl.read_parquet(path)
    assert df.schema == pl.Schema({"src": pl.String, "tgt": pl.String})
    assert df["src"].to_list() == [f"s{i}" for i in range(30)]


def test_empty_split_is_a_valid_empty_table(tmp_path: Path):
    with PairWriter(tmp_path / "e.parquet") as w:
        pass
    assert w.rows == 0
    assert pl.read_parquet(tmp_path / "e.parquet").columns == ["src", "tgt"]


def test_key_hash_is_stable_across_processes():
    # Golden values: a changed hash would silently reshuffle every corpus split.
    assert key_hash("Hello.", 1234) == 0x5523D30962BA1D34
    assert key_hash("Hello.", 1235) != key_hash("Hello.", 1234)


def test_hash_splitter_is_exact_grouped_and_seeded():
    keys = [f"sentence {i}" for i in range(1000)] * 3  # each key three times
    split = HashSplitter.fit(keys, seed=7, valid_fraction=0.1, test_fraction=0.05)
    counts = Counter(split(k) for k in set(keys))
    assert counts == {"train": 850, "valid": 100, "test": 50}
    assert all(split(k) == split(k) for k in keys[:50])
    other = HashSplitter.fit(keys, seed=8, valid_fraction=0.1, test_fraction=0.05)
    assert [split(k) for k in keys[:200]] != [other(k) for k in keys[:200]]


def test_hash_splitter_needs_a_sentence_per_split():
    assert Counter(map(HashSplitter.fit(["a", "b", "c"], 1, 0.01, 0.01), "abc")) == {
        "train": 1,
        "valid": 1,
        "test": 1,
    }
    with pytest.raises(DataError, match="only 2 distinct sentences"):
        HashSplitter.fit(["a", "b", "a"], 1, 0.1, 0.1)
