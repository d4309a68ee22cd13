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

    def add_many(self, src: Iterable[str], tgt: Iterable[str]) -> None:
        for s, t in zip(src, tgt, strict=True):
            self.add(s, t)

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


def write_pairs(path: Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Stream pairs into `path` (parquet); returns the number of rows."""
    with PairWriter(path) as writer:
        for src, tgt in pairs:
            writer.add(src, tgt)
    return writer.rows


def open_bytes(path: Path) -> BinaryIO:
    """A binary stream over `path`, transparently gunzipped when it is gzip-compressed."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")  # type: ignore[return-value]


def iter_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Decoded lines of a UTF-8 byte stream without their line ending (\\n or \\r\\n).

    Splits on \\n only (like `wc -l`, unlike str.splitlines); a leading BOM is dropped.
    Invalid UTF-8 or a corrupt gzip stream raises DataError naming `name` and the line number.
    """
    number = 0
    try:
        for number, raw in enumerate(stream, 1):  # noqa: B007 (used in the error message)
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{name} line {number}: invalid UTF-8 (byte {raw[err.start]:#04x} at "
                    f"column {err.start + 1})",
                    "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
                ) from None
            yield line.removeprefix("\ufeff") if number == 1 else line
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{name}: corrupt or truncated compressed data after line {number} ({err})",
            "download the file again",
        ) from None


def read_parallel(
    src: Iterator[str], tgt: Iterator[str], src_name: str, tgt_name: str
) -> Iterator[tuple[str, str]]:
    """Pairs of two line-aligned streams; different lengths raise DataError with both counts."""
    end = object()
    for count, (s, t) in enumerate(itertools.zip_longest(src, tgt, fillvalue=end)):
        if s is end or t is end:
            n_src = count + (s is not end) + sum(1 for _ in src)
            n_tgt = count + (t is not end) + sum(1 for _ in tgt)
            raise DataError(
                f"parallel files differ in length: {src_name} has {n_src} lines, "
                f"{tgt_name} has {n_tgt}",
                "give line-aligned files (line i of one translates line i of the other)",
            )
        yield s, t  # type: ignore[misc]


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
