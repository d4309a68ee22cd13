"""pipeline.figures: PNG figures from the tune and evaluate stage outputs, byte-identical when
drawn twice from the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline import figures

PNG = b"\x89PNG\r\n\x1a\n"


def _curves(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, epochs in enumerate((3, 1, 2)):
        pl.DataFrame(
            {
                "epoch": list(range(1, epochs + 1)),
                "train_loss": [4.0 / e for e in range(1, epochs + 1)],
                "val_loss": [3.5 / e + i for e in range(1, epochs + 1)],
                "val_ppl": [30.0 / e for e in range(1, epochs + 1)],
                "val_bleu": [2.0 * e + i for e in range(1, epochs + 1)],
            }
        ).write_csv(folder / f"t{i}.csv")
    pl.DataFrame(
        {c: [] for c in ("epoch", "val_loss", "val_bleu")},
        schema=dict.fromkeys(("epoch", "val_loss", "val_bleu"), pl.Float64),
    ).write_csv(folder / "empty.csv")  # a trial that never reported: left out
    return folder


def _size(png: Path) -> tuple[int, int]:
    head = png.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_learning_curves_png_is_deterministic(tmp_path: Path) -> None:
    curves = figures.read_curves(_curves(tmp_path / "curves"))
    assert list(curves) == ["t0", "t1", "t2"]
    a = figures.learning_curves(curves, tmp_path / "a" / "learning_curves.png", best="t0")
    b = figures.learning_curves(curves, tmp_path / "b.png", best="t0")
    assert a.read_bytes().startswith(PNG)
    assert a.read_bytes() == b.read_bytes()  # same inputs, same bytes (no timestamps)
    assert _size(a) == (1200, 420)  # two panels side by side
    other = figures.learning_curves(curves, tmp_path / "c.png", best="t1")
    assert other.read_bytes() != a.read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp*"))  # written atomically


def test_learning_curves_without_data(tmp_path: Path) -> None:
    out = figures.learning_curves({}, tmp_path / "none.png")
    assert out.read_bytes().startswith(PNG)


@pytest.mark.parametrize("empty_last", [False, True])
def test_bleu_by_length_png(tmp_path: Path, empty_last: bool) -> None:
    buckets = [
        {"bucket": "1-10", "lo": 1, "hi": 10, "n": 40, "bleu": 31.5},
        {"bucket": "11-20", "lo": 11, "hi": 20, "n": 12, "bleu": 22.0},
        {"bucket": "21+", "lo": 21, "hi": None, "n": 0 if empty_last else 3,
         "bleu": None if empty_last else 9.5},
    ]  # fmt: skip
    src = tmp_path / "bleu_by_length.json"
    src.write_text(json.dumps(buckets))
    a = figures.bleu_by_length_file(src, tmp_path / "a.png", title="test")
    b = figures.bleu_by_length_file(src, tmp_path / "b.png", title="test")
    assert a.read_bytes().startswith(PNG) and a.read_bytes() == b.read_bytes()
    assert _size(a)[0] == 700
