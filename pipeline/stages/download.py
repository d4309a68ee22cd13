"""Stage `download`: materialise the configured corpus under `paths.raw`.

Writes `{train,valid,test}.parquet` (Utf8 `src`, `tgt`), `manifest.json` (corpus, direction,
per input file its source, sha256 and line count, per split its pairs and the parquet's sha256)
and `files/` (the downloaded originals) in one atomic folder swap: a failure leaves the previous
outputs as they were. The mirror is `data.mirror`, or env SEQ2SEQ_DATA_MIRROR when that is null
(the project's rule: a params value wins, an environment variable fills a null).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from rich.markup import escape

from pipeline import ui
from pipeline.config import Config, check_output_folder, from_env
from pipeline.errors import UserError
from seq2seq.corpora import files, generated, multi30k, tatoeba
from seq2seq.corpora.common import SPLITS, CorpusResult
from seq2seq.corpora.fetch import UnreachableError, sha256_file
from seq2seq.io import atomic_dir, write_json


def run(cfg: Config) -> None:
    """Fetch/generate the corpus of `cfg.data` and replace `cfg.paths.raw` with it."""
    data, raw = cfg.data, Path(cfg.paths.raw)
    mirror = from_env("data.mirror", data.mirror)
    _check_config(cfg)
    check_output_folder(raw, "paths.raw")
    bar = (
        contextlib.nullcontext(None)
        if data.corpus == "sample"
        else ui.progress(f"download {data.corpus}")
    )
    with bar as advance, atomic_dir(raw) as out:
        try:
            result = _materialise(cfg, out, mirror, _per_file(advance) if advance else None)
        except UnreachableError as err:
            raise UserError(err.problem, _unreachable_fix(cfg)) from None
        _check_not_empty(cfg, result)  # before the swap: the previous outputs stay
        cached = sum(bool(entry.pop("cached", False)) for entry in result.files)
        write_json(out / "manifest.json", _manifest(cfg, result, out))
    for warning in result.warnings:
        _say(f"[yellow]warning:[/] {escape(warning)}")
    counts = " / ".join(f"{split} {result.pairs[split]:,}" for split in SPLITS)
    reused = f" ({cached} file(s) reused from the previous download)" if cached else ""
    _say(
        escape(f"{data.corpus} {data.source_lang}->{data.target_lang}: {counts} pairs -> {raw}")
        + reused
    )


def _say(message: str) -> None:
    """One unwrapped line on stderr (log-friendly; rich would wrap at 80 columns in pipes)."""
    ui.console.print(message, highlight=False, soft_wrap=True)


def _materialise(
    cfg: Config, out: Path, mirror: str | None, progress: Callable[..., None] | None
) -> CorpusResult:
    data = cfg.data
    langs = (data.source_lang, data.target_lang)
    files_dir = out / "files"
    if data.corpus == "sample":
        s = data.sample
        return generated.write_sample(
            out,
            *langs,
            num_pairs=s.num_pairs,
            seed=s.seed,
            valid_fraction=s.valid_fraction,
            test_fraction=s.test_fraction,
            vocabulary=s.vocabulary,
            chain=s.chain,
        )
    if data.corpus == "multi30k":
        previous = Path(cfg.paths.raw) / "files"
        return multi30k.download(
            out, files_dir, *langs, mirror=mirror, cache=[previous], progress=progress
        )
    if data.corpus == "tatoeba":
        t = data.tatoeba
        return tatoeba.download(
            out,
            files_dir,
            cast(str, t.path),  # _check_config refused a null path
            *langs,
            seed=t.seed,
            valid_fraction=t.valid_fraction,
            test_fraction=t.test_fraction,
            progress=progress,
        )
    f = data.files
    return files.download(
        out,
        files_dir,
        f.format,
        cast(dict[str, str], {"train": f.train, "valid": f.valid, "test": f.test}),  # checked
        *langs,
        source_column=f.source_column,
        target_column=f.target_column,
        progress=progress,
    )


def _check_config(cfg: Config) -> None:
    """Keys a corpus needs, reported by their config path before any work starts."""
    data = cfg.data
    if data.corpus == "tatoeba" and not data.tatoeba.path:
        raise UserError(
            "data.tatoeba.path is not set",
            "set it to an Anki/Tatoeba file (e.g. deu.txt or deu-eng.zip), local path or URL",
        )
    if data.corpus == "files":
        missing = [f"data.files.{s}" for s in SPLITS if not getattr(data.files, s)]
        if missing:
            raise UserError(
                f"{', '.join(missing)} not set (the files corpus needs train, valid and test)",
                "set each to a path or URL (text format: a pattern with {lang})",
            )


def _check_not_empty(cfg: Config, result: CorpusResult) -> None:
    """Every split holds pairs (a corpus reader that wrote an empty split is refused here)."""
    empty = [split for split in SPLITS if not result.pairs.get(split)]
    if empty:
        raise UserError(
            f"the {cfg.data.corpus} corpus gave no pairs for the {', '.join(empty)} split(s)",
            "check the corpus files and the data.* settings in params.yaml",
        )


def _unreachable_fix(cfg: Config) -> str:
    if cfg.data.corpus == "multi30k":
        return (
            "check the network, or set data.mirror (or env SEQ2SEQ_DATA_MIRROR) to a local "
            "folder or URL holding the Multi30k files"
        )
    key = "data.tatoeba.path" if cfg.data.corpus == "tatoeba" else "data.files.*"
    return f"check the network and the URL in {key}, or download the file and give its path"


def _manifest(cfg: Config, result: CorpusResult, out: Path) -> dict[str, Any]:
    data = cfg.data
    splits = {
        split: {"pairs": result.pairs[split], "sha256": sha256_file(out / f"{split}.parquet")}
        for split in SPLITS
    }
    return {
        "corpus": data.corpus,
        "source_lang": data.source_lang,
        "target_lang": data.target_lang,
        **result.info,
        "files": result.files,
        "splits": splits,
        "dropped": result.dropped,
    }


def _per_file(advance: Callable[..., None]) -> Callable[..., None]:
    """Adapt per-file progress (a new `total` per file) to one bar that keeps growing."""
    done = 0.0

    def report(n: float = 1, total: float | None = None, description: str | None = None) -> None:
        nonlocal done
        if total is not None:
            total = done + total
        done += n
        advance(n, total=total, description=description)

    return report
