"""Anki/Tatoeba sentence pairs: `english<TAB>other<TAB>attribution` lines (deu.txt, fra.txt),
plain or inside a zip (deu-eng.zip holds deu.txt and _about.txt).

The split is deterministic and grouped: every translation of one English sentence lands in the
same split (a seeded hash of the English sentence), so no English test sentence is trained on.
Zip members are read in place, never extracted; entries whose names would escape a folder
(`../x`, absolute paths) make the whole archive rejected.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from seq2seq.corpora.common import (
    SPLITS,
    CorpusResult,
    HashSplitter,
    PairWriter,
    iter_lines,
    open_bytes,
)
from seq2seq.corpora.fetch import DEFAULT_TIMEOUT, Progress, obtain
from seq2seq.errors import DataError

# Tatoeba/Anki file names use ISO 639-3 codes.
ISO3 = {"de": "deu", "en": "eng", "fr": "fra", "cs": "ces"}
Opener = Callable[[], AbstractContextManager[BinaryIO]]


def other_language(source_lang: str, target_lang: str) -> str:
    """The non-English side of the pair; DataError unless exactly one side is English."""
    if "en" not in (source_lang, target_lang):
        raise DataError(
            f"tatoeba: the files pair English with one other language, got "
            f"{source_lang}->{target_lang}",
            "set source_lang or target_lang to en",
        )
    return target_lang if source_lang == "en" else source_lang


def download(
    out_dir: Path,
    files_dir: Path,
    location: str,
    source_lang: str,
    target_lang: str,
    *,
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> CorpusResult:
    """Read a Tatoeba file (path or URL, .txt or .zip) into `out_dir/{split}.parquet`.

    Lines without an English and a translated column are dropped and counted (result.dropped);
    a file with no valid line raises DataError.
    """
    other = other_language(source_lang, target_lang)
    got = obtain(location, files_dir, timeout=timeout, progress=progress)
    opener, member = _opener(got.path, other)
    name = f"{got.path.name}:{member}" if member else got.path.name
    splitter = HashSplitter.fit(
        (en for en, _ in _pairs(opener, name, {})), seed, valid_fraction, test_fraction
    )
    dropped: dict[str, int] = {}
    writers = {split: PairWriter(out_dir / f"{split}.parquet") for split in SPLITS}
    try:
        for en, xx in _pairs(opener, name, dropped):
            src, tgt = (en, xx) if source_lang == "en" else (xx, en)
            writers[splitter(en)].add(src, tgt)
    finally:
        for writer in writers.values():
            writer.close()
    first_bad = dropped.pop("first_bad_line", None)
    pairs = {split: writers[split].rows for split in SPLITS}
    lines = sum(pairs.values()) + sum(dropped.get(k, 0) for k in ("missing_column", "blank"))
    entry = {"name": got.path.name, "source": got.source, "sha256": got.sha256, "lines": lines}
    result = CorpusResult(files=[{**entry, "member": member}], pairs=pairs, dropped=dropped)
    result.info = {"seed": seed, "language": other}
    if dropped.get("missing_column"):
        result.warnings.append(
            f"{name}: dropped {dropped['missing_column']} line(s) without both an English and "
            f"a {other} column (first at line {first_bad})"
        )
    return result


def _pairs(opener: Opener, name: str, dropped: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(english, other) per valid line; counts blank and malformed lines into `dropped`."""
    valid = 0
    with opener() as stream:
        for number, line in enumerate(iter_lines(stream, name), 1):
            cols = line.split("\t")
            if len(cols) >= 2 and cols[0].strip() and cols[1].strip():
                valid += 1
                yield cols[0], cols[1]
            elif not line.strip():
                dropped["blank"] = dropped.get("blank", 0) + 1
            else:
                dropped.setdefault("first_bad_line", number)
                dropped["missing_column"] = dropped.get("missing_column", 0) + 1
    if not valid:
        raise DataError(
            f"{name}: no line has the form english<TAB>translation",
            "give an Anki/Tatoeba file such as deu.txt or deu-eng.zip (tab-separated)",
        )


def _opener(path: Path, lang: str) -> tuple[Opener, str | None]:
    """How to open the pairs text: the file itself, or the language's member of a zip."""
    if not zipfile.is_zipfile(path):
        return (lambda: open_bytes(path)), None
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    for member in names:
        if not _safe_member(member):
            raise DataError(
                f"{path.name}: unsafe zip entry {member!r} would extract outside its folder",
                "use an archive without absolute paths or '..' in its entry names",
            )
    texts = [n for n in names if n.endswith(".txt") and not PurePosixPath(n).name.startswith("_")]
    preferred = [n for n in texts if PurePosixPath(n).name == f"{ISO3.get(lang, lang)}.txt"]
    chosen = preferred or texts
    if len(chosen) != 1:
        raise DataError(
            f"{path.name}: expected one sentence-pairs .txt member, found {texts or names}",
            f"give a zip holding {ISO3.get(lang, lang)}.txt (as from manythings.org/anki)",
        )
    member = chosen[0]

    @contextmanager
    def open_member() -> Iterator[BinaryIO]:
        with zipfile.ZipFile(path) as zf, zf.open(member) as stream:
            yield stream  # type: ignore[misc]

    return open_member, member


def _safe_member(name: str) -> bool:
    """False for names that would land outside the extraction folder."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return False
    return ".." not in PurePosixPath(name.replace("\\", "/")).parts
