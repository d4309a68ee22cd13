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
    iter_line_chunks,
    iter_lines,
    key_hash,
    open_bytes,
    read_parallel,
    write_chunks,
    write_pairs,
)
from seq2seq.errors import DataError


def lines_of(data: bytes, size: int | None = None) -> list[str]:
    chunks = list(iter_line_chunks(io.BytesIO(data), "x.txt", size))
    assert all(len(c) == (size or common.CHUNK_ROWS) for c in chunks[:-1])
    return [line for chunk in chunks for line in chunk]


@pytest.mark.parametrize("size", [None, 1, 2, 3])
def test_lines_split_on_newline_only_and_drop_endings_and_bom(size: int | None):
    data = "\ufeffa\r\nb\u2028c\n\nlast".encode()
    assert lines_of(data, size) == ["a", "b\u2028c", "", "last"]
    assert lines_of(b"", size) == []
    assert lines_of(b"x\r\r\ny\n", size) == ["x\r", "y"]  # one \r belongs to the line end
    assert list(iter_lines(io.BytesIO(b"a\nb\n"), "x")) == ["a", "b"]


@pytest.mark.parametrize("size", [None, 2])
def test_invalid_utf8_names_file_and_line_number(size: int | None):
    with pytest.raises(DataError, match=r"x\.txt line 3: invalid UTF-8 \(byte 0xe4 at column 2"):
        lines_of(b"ok\nauch ok\n" + "Bär\n".encode("latin-1"), size)


def test_gzip_is_detected_and_truncation_is_reported(tmp_path: Path):
    gz = tmp_path / "t.de"  # no .gz suffix: detected by magic bytes
    gz.write_bytes(gzip.compress("".join(f"Zeile {i}\n" for i in range(5000)).encode()))
    with open_bytes(gz) as f:
        assert list(iter_lines(f, "t.de"))[:2] == ["Zeile 0", "Zeile 1"]
    gz.write_bytes(gz.read_bytes()[:-200])
    with open_bytes(gz) as f, pytest.raises(DataError, match="t.de: corrupt or truncated"):
        list(iter_lines(f, "t.de"))


@pytest.mark.parametrize(("n_src", "n_tgt"), [(5, 3), (3, 5), (4, 6), (0, 2), (7, 8)])
def test_parallel_length_mismatch_gives_both_counts_and_names(n_src: int, n_tgt: int):
    def chunks(n: int, name: str):
        return iter_line_chunks(io.BytesIO(b"line\n" * n), name, size=2)

    with pytest.raises(DataError) as err:
        list(read_parallel(chunks(n_src, "train.de"), chunks(n_tgt, "train.en"), "de", "en"))
    assert f"de has {n_src} lines, en has {n_tgt}" in str(err.value)


def test_parallel_chunks_pair_up():
    src = iter_line_chunks(io.BytesIO(b"a\nb\nc\n"), "s", size=2)
    tgt = iter_line_chunks(io.BytesIO(b"A\nB\nC"), "t", size=2)
    assert list(read_parallel(src, tgt, "s", "t")) == [(["a", "b"], ["A", "B"]), (["c"], ["C"])]


def test_pair_writer_streams_row_groups_in_order(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(common, "CHUNK_ROWS", 7)
    path = tmp_path / "train.parquet"
    rows = write_pairs(path, ((f"s{i}", f"t{i}") for i in range(30)))
    assert rows == 30
    assert pq.ParquetFile(path).metadata.num_row_groups == 5  # written incrementally
    df = pl.read_parquet(path)
    assert df.schema == pl.Schema({"src": pl.String, "tgt": pl.String})
    assert df["src"].to_list() == [f"s{i}" for i in range(30)]
    chunks = [([f"s{i}", f"s{i + 1}"], [f"t{i}", f"t{i + 1}"]) for i in range(0, 30, 2)]
    assert write_chunks(tmp_path / "c.parquet", chunks) == 30
    assert pl.read_parquet(tmp_path / "c.parquet").equals(df)


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
