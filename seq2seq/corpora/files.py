"""Any parallel corpus: line-aligned text files (one per split and language) or TSV/CSV tables
(one per split, a header row naming the columns). Local paths or URLs; gzip is detected.

Everything streams: lines are read one at a time and parquet is written in row groups, so a
corpus larger than memory goes through. URLs are downloaded into `files_dir`; local files are
read in place and only checksummed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from seq2seq.corpora.common import (
    SPLITS,
    CorpusResult,
    iter_line_chunks,
    iter_lines,
    open_bytes,
    read_parallel,
    write_chunks,
    write_pairs,
)
from seq2seq.corpora.fetch import DEFAULT_TIMEOUT, FetchedFile, Progress, obtain
from seq2seq.errors import DataError

FORMATS = ("text", "tsv", "csv")


def download(
    out_dir: Path,
    files_dir: Path,
    fmt: str,
    locations: Mapping[str, str],
    source_lang: str,
    target_lang: str,
    *,
    source_column: str | None = None,
    target_column: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> CorpusResult:
    """Read train, valid and test (all three required) into `out_dir/{split}.parquet`.

    text: `locations[split]` is a pattern with `{lang}` (e.g. corpus/train.{lang}).
    tsv/csv: `locations[split]` is a table; columns default to the language codes.
    """
    if fmt not in FORMATS:
        raise DataError(f"files: unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    missing = [split for split in SPLITS if not locations.get(split)]
    if missing:
        raise DataError(
            f"files: no location for the {', '.join(missing)} split(s)",
            "give train, valid and test (path or URL each)",
        )
    result = CorpusResult(info={"format": fmt})
    for split in SPLITS:
        out = out_dir / f"{split}.parquet"
        if fmt == "text":
            langs = (source_lang, target_lang)
            result.pairs[split] = _text_split(
                out, files_dir, split, locations[split], langs, result, timeout, progress
            )
        else:
            cols = (source_column or source_lang, target_column or target_lang)
            result.pairs[split] = _table_split(
                out, files_dir, split, locations[split], fmt, cols, result, timeout, progress
            )
    return result


def _entry(got: FetchedFile, split: str) -> dict:
    return {"name": got.path.name, "source": got.source, "sha256": got.sha256, "split": split}


def _text_split(
    out: Path,
    files_dir: Path,
    split: str,
    pattern: str,
    langs: tuple[str, str],
    result: CorpusResult,
    timeout: float,
    progress: Progress | None,
) -> int:
    if "{lang}" not in pattern:
        raise DataError(
            f"files: the {split} pattern {pattern!r} has no {{lang}} placeholder",
            "write it as e.g. corpus/train.{lang}, which becomes corpus/train.de and .en",
        )
    entries = []
    for lang in langs:
        location = pattern.replace("{lang}", lang)
        suffix = ".gz" if location.endswith(".gz") else ""
        got = obtain(
            location, files_dir, f"{split}.{lang}{suffix}", timeout=timeout, progress=progress
        )
        entries.append({**_entry(got, split), "lang": lang, "path": got.path})
    names = [str(e["source"]) for e in entries]
    with open_bytes(entries[0]["path"]) as fs, open_bytes(entries[1]["path"]) as ft:
        src, tgt = iter_line_chunks(fs, names[0]), iter_line_chunks(ft, names[1])
        rows = write_chunks(out, read_parallel(src, tgt, *names))
    if not rows:
        raise DataError(
            f"files: the {split} split is empty ({names[0]} and {names[1]} have no lines)",
            f"give the {split} split at least one line pair (line i of one file translates "
            "line i of the other)",
        )
    for e in entries:
        del e["path"]
        result.files.append({**e, "lines": rows})
    return rows


def _table_split(
    out: Path,
    files_dir: Path,
    split: str,
    location: str,
    fmt: str,
    columns: tuple[str, str],
    result: CorpusResult,
    timeout: float,
    progress: Progress | None,
) -> int:
    suffix = ".gz" if location.endswith(".gz") else ""
    got = obtain(location, files_dir, f"{split}.{fmt}{suffix}", timeout=timeout, progress=progress)
    counts = {"lines": 0, "missing_column": 0}
    with open_bytes(got.path) as stream:
        rows = write_pairs(out, _table_rows(stream, got.source, fmt, columns, counts))
    result.files.append({**_entry(got, split), "lines": counts["lines"], "rows": rows})
    if counts["missing_column"]:
        result.dropped["missing_column"] = (
            result.dropped.get("missing_column", 0) + counts["missing_column"]
        )
        result.warnings.append(
            f"{got.source}: dropped {counts['missing_column']} row(s) without both the "
            f"{columns[0]!r} and {columns[1]!r} columns (first at line {counts['first_bad']})"
        )
    if not rows:
        raise DataError(f"{got.source}: no data rows", "give a table with a header and rows")
    return rows


def _table_rows(
    stream, name: str, fmt: str, columns: tuple[str, str], counts: dict[str, int]
) -> Iterator[tuple[str, str]]:
    """(source, target) per row of a TSV/CSV with a header; short rows are counted, skipped."""
    lines = (line + "\n" for line in iter_lines(stream, name))  # csv needs the line ends
    csv.field_size_limit(2**31 - 1)  # very long fields are the clean stage's business
    if fmt == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name} is empty", "give a table whose first row names the columns")
        index = []
        for col in columns:
            if col not in header:
                raise DataError(
                    f"{name}: no column {col!r} in the header row {header}",
                    "add a header row naming the columns, or set source_column/target_column",
                )
            index.append(header.index(col))
        need = max(index) + 1
        for row in reader:
            if len(row) < need:
                if any(cell.strip() for cell in row):
                    counts.setdefault("first_bad", reader.line_num)
                    counts["missing_column"] += 1
                continue
            yield row[index[0]], row[index[1]]
    except csv.Error as err:
        raise DataError(f"{name} line {reader.line_num}: {err}", f"fix the {fmt} syntax") from None
    finally:
        counts["lines"] = reader.line_num
