"""Figures for DVC and MLflow: the sweep's learning curves, BLEU by source length and by average
word-frequency rank (PNG).

Matplotlib with the Agg backend and no timestamp or version in the file, so the same inputs give
the same bytes (DVC sees no change when nothing changed). Each function reads the stage output it
draws (`models/curves/*.csv`, `metrics/bleu_by_length.json`, ...) and writes one PNG atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, same output everywhere

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from seq2seq.io import atomic_file  # noqa: E402

LEARNING_CURVES_FILE = "learning_curves.png"
BLEU_BY_LENGTH_FILE = "bleu_by_length.png"
BLEU_BY_RANK_FILE = "bleu_by_rank.png"
FIGURE3_FILE = "figure3.png"  # a claim's arms by length and by rank, side by side
CURVE_METRICS = (("val_bleu", "validation BLEU"), ("val_loss", "validation loss"))
DPI = 100


def _save(fig: plt.Figure, out: Path) -> Path:
    out = Path(out)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return out


def read_curves(folder: str | Path) -> dict[str, pl.DataFrame]:
    """Trial id -> its per-epoch frame, for each `<trial>.csv` in `folder` (sorted by name)."""
    curves = {}
    for path in sorted(Path(folder).glob("*.csv")):
        frame = pl.read_csv(path)
        if "epoch" in frame.columns and frame.height:
            curves[path.stem] = frame.sort("epoch")
    return curves


def learning_curves(
    curves: dict[str, pl.DataFrame],
    out: str | Path,
    *,
    best: str | None = None,
    metrics: Sequence[tuple[str, str]] = CURVE_METRICS,
) -> Path:
    """One PNG: a panel per metric (default val_bleu, val_loss), a line per trial over epochs;
    the `best` trial drawn bold. Trials without a metric are left out of its panel."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        drawn = 0
        for trial, frame in curves.items():
            if key not in frame.columns:
                continue
            points = frame.select("epoch", key).drop_nulls()
            if not points.height:
                continue
            bold = trial == best
            ax.plot(
                points["epoch"].to_list(),
                points[key].to_list(),
                marker="o",
                markersize=3,
                linewidth=2.5 if bold else 1.2,
                alpha=1.0 if bold else 0.75,
                label=f"{trial} (best)" if bold else trial,
                zorder=3 if bold else 2,
            )
            drawn += 1
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if drawn == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif drawn <= 12:
            ax.legend(fontsize="small")
    fig.suptitle(f"learning curves: {len(curves)} trial(s)")
    fig.tight_layout()
    return _save(fig, Path(out))


LENGTH_AXIS = "source length (tokens)"
RANK_AXIS = "average word-frequency rank of the source (commonest first)"


def bleu_bars(
    buckets: Sequence[dict], out: str | Path, *, title: str = "", axis: str = LENGTH_AXIS
) -> Path:
    """Horizontal bars: BLEU per source-length bucket (`metrics.bleu_by_length` entries, or
    `metrics.bleu_by_rank` ones with `axis=RANK_AXIS`), the sentence count beside each bar;
    empty buckets say so."""
    labels = [str(b["bucket"]) for b in buckets]
    scores = [float(b["bleu"]) if b.get("bleu") is not None else 0.0 for b in buckets]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * max(len(buckets), 1)))
    ax.barh(labels, scores, color="#4c72b0")
    top = max(scores, default=0.0) or 1.0
    for i, b in enumerate(buckets):
        note = f"n={b.get('n', 0)}" if b.get("bleu") is not None else "no sentences"
        ax.text(scores[i] + top * 0.01, i, note, va="center", fontsize="small")
    ax.set_xlim(0, top * 1.2)
    ax.invert_yaxis()  # shortest sources (commonest words) on top, as in the table
    ax.set_xlabel("BLEU")
    ax.set_ylabel(axis)
    ax.set_title(title or f"BLEU by {axis}")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(out))


def bleu_by_length_series(
    series: dict[str, Sequence[dict]], out: str | Path, *, title: str = ""
) -> Path:
    """One line per model (label -> `metrics.bleu_by_length` entries, the same buckets each):
    BLEU against source-length bucket, as in the paper's Figure 3; empty buckets are gaps."""
    fig, ax = plt.subplots(figsize=(7, 4))
    _series(ax, series, LENGTH_AXIS)
    ax.set_title(title or "BLEU by source length")
    fig.tight_layout()
    return _save(fig, Path(out))


def figure3(
    by_length: dict[str, Sequence[dict]],
    by_rank: dict[str, Sequence[dict]],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """The paper's Figure 3 in one image: BLEU by source length (left) and by average
    word-frequency rank (right, `metrics.bleu_by_rank`), one line per model in each."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    _series(left, by_length, LENGTH_AXIS)
    left.set_title("by source length")
    _series(right, by_rank, RANK_AXIS)
    right.set_title("by average word-frequency rank")
    fig.suptitle(title or "test BLEU (the paper's Figure 3)")
    fig.tight_layout()
    return _save(fig, Path(out))


def _series(ax: Any, series: dict[str, Sequence[dict]], axis: str) -> None:
    """One line per model on `ax`, the buckets' labels and sentence counts on the x axis."""
    labels: list[str] = []
    for (name, buckets), marker in zip(series.items(), ORDER_MARKERS * 4, strict=False):
        labels = [f"{b['bucket']}\nn={b.get('n', 0)}" for b in buckets]  # sentences per bucket
        scores = [float(b["bleu"]) if b.get("bleu") is not None else None for b in buckets]
        ax.plot(
            range(len(labels)),
            [float("nan") if v is None else v for v in scores],
            marker=marker,
            label=name,
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(axis)
    ax.set_ylabel("BLEU")
    ax.grid(True, alpha=0.3)
    ax.legend()


def bleu_bars_file(
    json_path: str | Path, out: str | Path, *, title: str = "", axis: str = LENGTH_AXIS
) -> Path:
    """`bleu_bars` from the evaluate stage's `bleu_by_length.json` (or, with
    `axis=RANK_AXIS`, its `bleu_by_rank.json`)."""
    buckets = json.loads(Path(json_path).read_text())
    return bleu_bars(buckets, out, title=title, axis=axis)


ENCODER_PCA_FILE = "encoder_pca.png"
ORDER_MARKERS = ("o", "s", "^", "D", "v")  # one marker per word order (or other variant)


def encoder_pca(
    points: Sequence[Sequence[float]],
    labels: Sequence[str],
    meanings: Sequence[str],
    orders: Sequence[str],
    out: str | Path,
    *,
    explained: Sequence[float] = (),
    title: str = "",
) -> Path:
    """The paper's Figure 2: 2-D PCA points of encoder states, each labelled with its phrase;
    one colour per meaning, one marker per word order (legends for both). `explained`: the
    variance share of PC1 and PC2, shown on the axes."""
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(dict.fromkeys(meanings))}
    markers = {
        o: ORDER_MARKERS[i % len(ORDER_MARKERS)] for i, o in enumerate(dict.fromkeys(orders))
    }
    fig, ax = plt.subplots(figsize=(9, 7))
    for (x, y), label, meaning, order in zip(points, labels, meanings, orders, strict=True):
        ax.scatter([x], [y], color=colours[meaning], marker=markers[order], s=60, zorder=3)
        ax.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize="small")
    for meaning, colour in colours.items():
        ax.scatter([], [], color=colour, marker="o", label=meaning)
    for order, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=order)
    ax.legend(fontsize="small", loc="best")
    share = [f" ({100 * v:.0f}% of variance)" for v in explained] + ["", ""]
    ax.set_xlabel(f"PC1{share[0]}")
    ax.set_ylabel(f"PC2{share[1]}")
    ax.set_title(title or "encoder states of minimal pairs (2-D PCA)")
    ax.grid(True, alpha=0.3)
    ax.margins(0.25)  # room for the labels
    fig.tight_layout()
    return _save(fig, Path(out))


def placeholder(out: str | Path, message: str) -> Path:
    """A small PNG that says why a figure could not be drawn (stage outputs stay complete)."""
    fig, ax = plt.subplots(figsize=(7, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return _save(fig, Path(out))
