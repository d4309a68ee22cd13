"""Multi30k (WMT16 task 1) raw files: train 29,000 / val 1,014 / test_2016_flickr 1,000 pairs.

The gzipped upstream files are fetched (from the dataset's GitHub repository or a mirror
holding the same file names), verified against the sha256 pinned here, kept under `files_dir`
and paired line by line into `{split}.parquet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seq2seq.corpora.common import (
    SPLITS,
    CorpusResult,
    iter_line_chunks,
    open_bytes,
    read_parallel,
    write_chunks,
)
from seq2seq.corpora.fetch import DEFAULT_TIMEOUT, Progress, fetch, join_location
from seq2seq.errors import DataError

UPSTREAM = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
LANGS = ("de", "en", "fr")
SPLIT_STEMS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
PAIRS = {"train": 29_000, "valid": 1_014, "test": 1_000}
SHA256 = {
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}


def file_name(split: str, lang: str) -> str:
    """'valid', 'de' -> 'val.de.gz' (the upstream name)."""
    return f"{SPLIT_STEMS[split]}.{lang}.gz"


def check_langs(source_lang: str, target_lang: str) -> None:
    """DataError unless both languages have pinned Multi30k task 1 raw files."""
    bad = [lang for lang in (source_lang, target_lang) if lang not in LANGS]
    if bad:
        raise DataError(
            f"multi30k: no pinned task 1 raw files for {', '.join(bad)} (supported: "
            f"{', '.join(LANGS)}; any pair of them)",
            "choose source and target languages among de, en, fr, or use the files corpus "
            "for other data",
        )


def download(
    out_dir: Path,
    files_dir: Path,
    source_lang: str,
    target_lang: str,
    *,
    mirror: str | None = None,
    cache: Sequence[Path] = (),
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> CorpusResult:
    """Fetch, verify and pair the six files of one direction into `out_dir/{split}.parquet`.

    `mirror`: a local folder or URL with the upstream file names replacing UPSTREAM.
    `cache`: folders whose files with a matching sha256 are reused instead of downloaded.
    """
    check_langs(source_lang, target_lang)
    base = mirror or UPSTREAM
    result = CorpusResult(info={"upstream": UPSTREAM, "mirror": mirror})
    for split in SPLITS:
        paths = []
        for lang in (source_lang, target_lang):
            name = file_name(split, lang)
            got = fetch(
                join_location(base, name),
                files_dir / name,
                sha256=SHA256[name],
                cache=cache,
                timeout=timeout,
                progress=progress,
            )
            paths.append(got.path)
            entry = {"name": name, "source": got.source, "sha256": got.sha256, "split": split}
            result.files.append({**entry, "lang": lang, "cached": got.cached})
        result.pairs[split] = _pair(paths, out_dir / f"{split}.parquet", result.files[-2:])
    return result


def _pair(paths: list[Path], out: Path, entries: list[dict]) -> int:
    names = entries[0]["name"], entries[1]["name"]
    with open_bytes(paths[0]) as fs, open_bytes(paths[1]) as ft:
        src, tgt = iter_line_chunks(fs, names[0]), iter_line_chunks(ft, names[1])
        rows = write_chunks(out, read_parallel(src, tgt, *names))
    for entry in entries:
        entry["lines"] = rows
    return rows
