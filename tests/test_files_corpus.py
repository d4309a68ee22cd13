"""seq2seq.corpora.files: parallel text files and TSV/CSV tables, local or remote, streamed."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from corpus_server import serve_dir

from seq2seq.corpora import common, files
from seq2seq.errors import DataError

SPLITS = ("train", "valid", "test")


def write_text_corpus(folder: Path, n: dict[str, int], gz: bool = False) -> None:
    folder.mkdir(exist_ok=True)
    for split, count in n.items():
        for lang in ("de", "en"):
            text = "".join(f"{lang} {split} {i}\n" for i in range(count))
            if gz:
                (folder / f"{split}.{lang}.gz").write_bytes(gzip.compress(text.encode()))
            else:
                (folder / f"{split}.{lang}").write_text(text, encoding="utf-8")


def run(tmp_path: Path, fmt: str, locations: dict[str, str], src="de", tgt="en", **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = files.download(out, out / "files", fmt, locations, src, tgt, **kw)
    frames = {s: pl.read_parquet(out / f"{s}.parquet") for s in SPLITS}
    return result, frames


def text_locations(folder: Path | str, suffix: str = "") -> dict[str, str]:
    return {s: f"{folder}/{s}.{{lang}}{suffix}" for s in SPLITS}


def test_text_files_in_both_directions(tmp_path: Path):
    write_text_corpus(tmp_path / "c", {"train": 20, "valid": 3, "test": 4})
    result, frames = run(tmp_path, "text", text_locations(tmp_path / "c"))
    assert result.pairs == {"train": 20, "valid": 3, "test": 4}
    assert frames["valid"].row(2) == ("de valid 2", "en valid 2")
    assert [f["lines"] for f in result.files] == [20, 20, 3, 3, 4, 4]
    assert not (tmp_path / "out" / "files").exists()  # local inputs are not copied
    _, swapped = run(tmp_path, "text", text_locations(tmp_path / "c"), "en", "de")
    assert swapped["test"].row(0) == ("en test 0", "de test 0")


def test_gzipped_text_over_http_is_downloaded_into_files(tmp_path: Path):
    write_text_corpus(tmp_path / "c", {"train": 5, "valid": 2, "test": 2}, gz=True)
    with serve_dir(tmp_path / "c") as base:
        result, frames = run(tmp_path, "text", text_locations(base, ".gz"))
    assert frames["train"]["tgt"].to_list() == [f"en train {i}" for i in range(5)]
    kept = sorted(p.name for p in (tmp_path / "out" / "files").iterdir())
    assert kept == sorted(f"{s}.{lang}.gz" for s in SPLITS for lang in ("de", "en"))
    assert result.files[0]["source"] == f"{base}/train.de.gz"


def test_parallel_files_with_different_line_counts(tmp_path: Path):
    write_text_corpus(tmp_path / "c", {"train": 5, "valid": 2, "test": 2})
    (tmp_path / "c" / "valid.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        run(tmp_path, "text", text_locations(tmp_path / "c"))
    msg = str(err.value)
    assert "valid.de has 2 lines" in msg and "valid.en has 3" in msg


def test_invalid_utf8_names_the_file_and_line(tmp_path: Path):
    write_text_corpus(tmp_path / "c", {"train": 5, "valid": 2, "test": 2})
    (tmp_path / "c" / "train.en").write_bytes(b"a\nb\nc\nd\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"train\.en line 5: invalid UTF-8"):
        run(tmp_path, "text", text_locations(tmp_path / "c"))


def test_pattern_without_lang_and_missing_splits(tmp_path: Path):
    locations = {**text_locations(tmp_path), "train": str(tmp_path / "train.txt")}
    with pytest.raises(DataError, match="train pattern .* has no \\{lang\\} placeholder"):
        run(tmp_path, "text", locations)
    with pytest.raises(DataError, match="no location for the valid, test split"):
        files.download(tmp_path, tmp_path, "text", {"train": "x.{lang}"}, "de", "en")


def test_a_10_mb_line_is_kept_for_clean_to_drop(tmp_path: Path):
    write_text_corpus(tmp_path / "c", {"train": 3, "valid": 2, "test": 2})
    huge = "wort " * 2_000_000  # 10 MB, one line
    (tmp_path / "c" / "train.de").write_text(f"a\n{huge}\nc\n", encoding="utf-8")
    _, frames = run(tmp_path, "text", text_locations(tmp_path / "c"))
    assert frames["train"]["src"].str.len_bytes().to_list() == [1, 10_000_000, 1]


def test_large_files_stream_in_row_groups(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(common, "CHUNK_ROWS", 1000)
    write_text_corpus(tmp_path / "c", {"train": 10_500, "valid": 2, "test": 2})
    result, frames = run(tmp_path, "text", text_locations(tmp_path / "c"))
    assert result.pairs["train"] == 10_500 == frames["train"].height
    assert pq.ParquetFile(tmp_path / "out" / "train.parquet").metadata.num_row_groups == 11


def write_tables(folder: Path, fmt: str, header: str, body: str) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    for split in SPLITS:
        (folder / f"{split}.{fmt}").write_text(header + body, encoding="utf-8")
    return {s: str(folder / f"{s}.{fmt}") for s in SPLITS}


def test_tsv_columns_default_to_languages_and_short_rows_are_counted(tmp_path: Path):
    body = "1\tHallo.\tHello.\n2\tnur deutsch\n\n3\tJa.\tYes.\n"
    locations = write_tables(tmp_path / "t", "tsv", "id\tde\ten\n", body)
    result, frames = run(tmp_path, "tsv", locations)
    assert frames["train"].rows() == [("Hallo.", "Hello."), ("Ja.", "Yes.")]
    assert result.dropped == {"missing_column": 3}  # one per split
    assert "first at line 3" in result.warnings[0]
    assert result.files[0]["lines"] == 5 and result.files[0]["rows"] == 2


def test_csv_with_named_columns_quotes_and_multiline_fields(tmp_path: Path):
    body = '"Guten Tag, Welt.","Hello, world."\n"Zwei\nZeilen.",Two lines.\n'
    locations = write_tables(tmp_path / "t", "csv", "german,english\n", body)
    _, frames = run(
        tmp_path, "csv", locations, "en", "de", source_column="english", target_column="german"
    )
    assert frames["test"].rows() == [
        ("Hello, world.", "Guten Tag, Welt."),
        ("Two lines.", "Zwei\nZeilen."),
    ]


def test_table_without_the_column_in_its_header(tmp_path: Path):
    locations = write_tables(tmp_path / "t", "tsv", "", "Hallo.\tHello.\n")
    with pytest.raises(DataError, match="no column 'de' in the header row"):
        run(tmp_path, "tsv", locations)
