"""Shared corpus plumbing: streaming line readers, parquet split writers, seeded splits.

Every corpus ends as `{train,valid,test}.parquet` with Utf8 columns `src`, `tgt`, written in
chunks so that a corpus larger than memory streams through.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seq2seq.errors import DataError

SPLITS = ("train", "valid", "test")
SCHEMA = pa.schema([("src", pa.large_string()), ("tgt", pa.large_string())])
CHUNK_ROWS = 50_000
CHUNK_CHARS = 32 << 20  # flush early when a chunk holds very long lines
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class CorpusResult:
    """What a corpus writer produced, for the manifest.

    `files`: one dict per input file (name, source, sha256, lines, and split/lang when known);
    `pairs`: rows written per split; `dropped`: lines skipped per reason; `info`: extra fields.
    """

    files: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class PairWriter:
    """Appends (src, tgt) pairs to one parquet file in row groups; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer = pq.ParquetWriter(path, SCHEMA)
        self._src: list[str] = []
        self._tgt: list[str] = []
        self._chars = 0

    def add(self, src: str, tgt: str) -> None:
        self._src.append(src)
        self._tgt.append(tgt)
        self._chars += len(src) + len(tgt)
        if len(self._src) >= CHUNK_ROWS or self._chars >= CHUNK_CHARS:
            self.flush()

    def add_many(self, src: list[str], tgt: list[str]) -> None:
        """Append equally long lists of sources and targets."""
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        self._src.extend(src)
        self._tgt.extend(tgt)
        if len(self._src) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._src:
            table = pa.table({"src": self._src, "tgt": self._tgt}, schema=SCHEMA)
            self._writer.write_table(table)
            self.rows += len(self._src)
        self._src, self._tgt, self._chars = [], [], 0

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> PairWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_chunks(path: Path, chunks: Iterable[tuple[list[str], list[str]]]) -> int:
    """Stream (sources, targets) chunks into `path` (parquet); returns the number of rows."""
    with PairWriter(path) as writer:
        for src, tgt in chunks:
            writer.add_many(src, tgt)
    return writer.rows


def write_pairs(path: Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Stream single (src, tgt) pairs into `path` (parquet); returns the number of rows."""
    with PairWriter(path) as writer:
        for src, tgt in pairs:
            writer.add(src, tgt)
    return writer.rows


def open_bytes(path: Path) -> BinaryIO:
    """A binary stream over `path`, transparently gunzipped when it is gzip-compressed."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")  # type: ignore[return-value]


def iter_line_chunks(stream: BinaryIO, name: str, size: int | None = None) -> Iterator[list[str]]:
    """Lists of `size` decoded lines (the last may be shorter), without line endings.

    Splits on \n only (like `wc -l`, unlike str.splitlines) and drops one \r before it and a
    leading BOM. Invalid UTF-8 or a corrupt gzip stream raises DataError naming `name` and the
    line number. Decoding a chunk at once keeps Python's per-line work small.
    """
    size = size or CHUNK_ROWS
    done = 0
    try:
        while raw := list(itertools.islice(stream, size)):
            try:
                text = b"".join(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise _utf8_error(raw, done, name) from None
            lines = text.split("\n")
            if len(lines) > len(raw):  # the chunk ended with a line ending
                lines.pop()
            if "\r" in text:
                lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
            if done == 0 and lines[0].startswith("\ufeff"):
                lines[0] = lines[0][1:]
            done += len(raw)
            yield lines
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{name}: corrupt or truncated compressed data after line {done} ({err})",
            "download the file again",
        ) from None


def _utf8_error(raw: list[bytes], before: int, name: str) -> DataError:
    for number, line in enumerate(raw, before + 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return DataError(
                f"{name} line {number}: invalid UTF-8 (byte {line[err.start]:#04x} at "
                f"column {err.start + 1})",
                "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
            )
    raise AssertionError("a chunk failed to decode but none of its lines did")


def iter_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Decoded lines one by one (see iter_line_chunks)."""
    for chunk in iter_line_chunks(stream, name):
        yield from chunk


def read_parallel(
    src: Iterator[list[str]], tgt: Iterator[list[str]], src_name: str, tgt_name: str
) -> Iterator[tuple[list[str], list[str]]]:
    """Zip two line-aligned chunk streams of equal chunk size into (sources, targets) chunks.

    Different lengths raise DataError with both line counts and both names.
    """
    count = 0
    empty: list[str] = []
    for s, t in itertools.zip_longest(src, tgt, fillvalue=empty):
        if len(s) != len(t):
            n_src = count + len(s) + sum(len(c) for c in src)
            n_tgt = count + len(t) + sum(len(c) for c in tgt)
            raise DataError(
                f"parallel files differ in length: {src_name} has {n_src} lines, "
                f"{tgt_name} has {n_tgt}",
                "give line-aligned files (line i of one translates line i of the other)",
            )
        count += len(s)
        yield s, t


def key_hash(key: str, seed: int) -> int:
    """A stable 64-bit hash of `key` under `seed` (never Python's salted hash())."""
    data = f"{seed}\x00{key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class HashSplitter:
    """Assigns keys (e.g. sentences) to train/valid/test by a seeded hash.

    The distinct keys with the smallest hashes go to test, the next ones to valid, the rest to
    train: exact shares of distinct keys, and equal keys (all translations of one sentence)
    always land in the same split. Call `fit` on all keys first (one streaming pass).
    """

    seed: int
    test_cut: int
    valid_cut: int

    @classmethod
    def fit(
        cls, keys: Iterable[str], seed: int, valid_fraction: float, test_fraction: float
    ) -> HashSplitter:
        hashes = np.unique(np.fromiter((key_hash(k, seed) for k in keys), dtype=np.uint64))
        n = len(hashes)
        n_test = max(1, round(n * test_fraction))
        n_valid = max(1, round(n * valid_fraction))
        if n < n_test + n_valid + 1:
            raise DataError(
                f"only {n} distinct sentences: too few for train, valid and test splits",
                "use a larger corpus",
            )
        return cls(seed, int(hashes[n_test - 1]), int(hashes[n_test + n_valid - 1]))

    def __call__(self, key: str) -> str:
        h = key_hash(key, self.seed)
        return "test" if h <= self.test_cut else "valid" if h <= self.valid_cut else "train"
