"""seq2seq.corpora.tatoeba: Anki/Tatoeba files, plain or zipped, grouped deterministic split."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest
from corpus_server import serve_dir

from seq2seq.corpora import tatoeba
from seq2seq.errors import DataError

ATTR = "CC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)"


def anki_text(n: int = 60) -> str:
    """n English sentences, every third with two German translations, and two bad lines."""
    lines = []
    for i in range(n):
        lines.append(f"Sentence {i}.\tSatz {i}.\t{ATTR}")
        if i % 3 == 0:
            lines.append(f"Sentence {i}.\tDer Satz {i}.\t{ATTR}")
        if i == 10:
            lines.append("no tab on this line")
            lines.append("")
    return "\n".join(lines) + "\n"


def run(tmp_path: Path, location: str | Path, src: str = "en", tgt: str = "de", **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    args = {"seed": 3, "valid_fraction": 0.1, "test_fraction": 0.1, **kw}
    result = tatoeba.download(out, out / "files", str(location), src, tgt, **args)
    frames = {s: pl.read_parquet(out / f"{s}.parquet") for s in ("train", "valid", "test")}
    return result, frames


def test_plain_file_split_is_grouped_exact_and_drops_are_counted(tmp_path: Path):
    path = tmp_path / "deu.txt"
    path.write_text(anki_text(), encoding="utf-8")
    result, frames = run(tmp_path, path)
    english = {s: set(f["src"]) for s, f in frames.items()}
    assert [len(english[s]) for s in ("train", "valid", "test")] == [48, 6, 6]
    assert not (english["train"] & english["test"]) and not (english["valid"] & english["test"])
    assert result.pairs == {s: f.height for s, f in frames.items()}
    assert sum(result.pairs.values()) == 80  # 60 sentences + 20 second translations
    assert result.dropped == {"missing_column": 1, "blank": 1}
    assert "line 16" in result.warnings[0] and "dropped 1 line" in result.warnings[0]
    assert result.files[0]["lines"] == 82 and result.files[0]["source"] == str(path.resolve())
    row = frames["train"].row(0, named=True)
    assert row["src"].startswith("Sentence") and row["tgt"].endswith(".")


def test_direction_swaps_columns_and_split_does_not_depend_on_it(tmp_path: Path):
    path = tmp_path / "deu.txt"
    path.write_text(anki_text(), encoding="utf-8")
    _, en_de = run(tmp_path, path, "en", "de")
    _, de_en = run(tmp_path, path, "de", "en")
    for split in en_de:
        assert en_de[split]["src"].to_list() == de_en[split]["tgt"].to_list()
        assert en_de[split]["tgt"].to_list() == de_en[split]["src"].to_list()


def test_zip_member_is_read_without_extracting(tmp_path: Path):
    archive = tmp_path / "deu-eng.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("_about.txt", "about tatoeba")
        zf.writestr("deu.txt", anki_text())
    result, frames = run(tmp_path, archive)
    assert sum(f.height for f in frames.values()) == 80
    assert result.files[0]["member"] == "deu.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deu-eng.zip", "out"]


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_zip_entries_escaping_the_folder_are_rejected(tmp_path: Path, evil: str):
    archive = tmp_path / "deu-eng.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("deu.txt", anki_text())
        zf.writestr(evil, "pwned")
    with pytest.raises(DataError, match="unsafe zip entry"):
        run(tmp_path, archive)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_without_a_pairs_file_is_rejected(tmp_path: Path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("_about.txt", "about")
    with pytest.raises(DataError, match="expected one sentence-pairs .txt member"):
        run(tmp_path, archive)


def test_file_with_no_valid_line_is_an_error(tmp_path: Path):
    path = tmp_path / "deu.txt"
    path.write_text("just text\nmore text\n", encoding="utf-8")
    with pytest.raises(DataError, match="no line has the form english<TAB>translation"):
        run(tmp_path, path)


def test_one_side_must_be_english(tmp_path: Path):
    with pytest.raises(DataError, match="English with one other language, got de->fr"):
        run(tmp_path, tmp_path / "unused.txt", "de", "fr")


def test_invalid_utf8_names_file_and_line(tmp_path: Path):
    path = tmp_path / "fra.txt"
    path.write_bytes(b"Hi.\tSalut.\tx\nGo.\tVa \xe0 pied.\tx\n")
    with pytest.raises(DataError, match="fra.txt line 2: invalid UTF-8"):
        run(tmp_path, path, "fr", "en")


def test_url_is_downloaded_into_files(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "deu.txt").write_text(anki_text(), encoding="utf-8")
    with serve_dir(served) as base:
        result, frames = run(tmp_path, f"{base}/deu.txt")
    assert (tmp_path / "out" / "files" / "deu.txt").read_text(encoding="utf-8") == anki_text()
    assert result.files[0]["source"] == f"{base}/deu.txt"
    assert sum(f.height for f in frames.values()) == 80
