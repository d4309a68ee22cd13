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
    a = figures.bleu_bars_file(src, tmp_path / "a.png", title="test")
    b = figures.bleu_bars_file(src, tmp_path / "b.png", title="test")
    assert a.read_bytes().startswith(PNG) and a.read_bytes() == b.read_bytes()
    assert _size(a)[0] == 700


def test_bleu_by_length_series_one_line_per_model(tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}
    real = figures._save

    def spy(fig, out):  # noqa: ANN001, ANN202 - matplotlib figure
        ax = fig.axes[0]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["lines"] = [list(line.get_ydata()) for line in ax.get_lines()]
        return real(fig, out)

    monkeypatch.setattr(figures, "_save", spy)
    reversed_ = [{"bucket": "1-10", "n": 40, "bleu": 30.0}, {"bucket": "11+", "n": 0, "bleu": None}]
    natural = [{"bucket": "1-10", "n": 40, "bleu": 25.0}, {"bucket": "11+", "n": 0, "bleu": None}]
    out = figures.bleu_by_length_series(
        {"reversed": reversed_, "natural": natural}, tmp_path / "f.png", title="t"
    )
    assert out.read_bytes().startswith(PNG)
    assert seen["legend"] == ["reversed", "natural"]
    assert seen["ticks"] == ["1-10\nn=40", "11+\nn=0"]  # each bucket's sentence count
    assert seen["lines"][0][0] == 30.0 and seen["lines"][1][0] == 25.0
    assert all(line[1] != line[1] for line in seen["lines"])  # an empty bucket is a gap (NaN)


def test_figure3_draws_length_and_rank_side_by_side(tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}
    real = figures._save

    def spy(fig, out):  # noqa: ANN001, ANN202 - matplotlib figure
        seen["xlabels"] = [ax.get_xlabel() for ax in fig.axes]
        seen["ticks"] = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]
        seen["lines"] = [[list(line.get_ydata()) for line in ax.get_lines()] for ax in fig.axes]
        return real(fig, out)

    monkeypatch.setattr(figures, "_save", spy)
    length = {"reversed": [{"bucket": "1-10", "n": 4, "bleu": 30.0}],
              "natural": [{"bucket": "1-10", "n": 4, "bleu": 25.0}]}  # fmt: skip
    rank = {"reversed": [{"bucket": "1-9", "n": 2, "bleu": 40.0},
                         {"bucket": "10-80", "n": 2, "bleu": 12.0}],
            "natural": [{"bucket": "1-9", "n": 2, "bleu": 35.0},
                        {"bucket": "10-80", "n": 2, "bleu": 11.0}]}  # fmt: skip
    out = figures.figure3(length, rank, tmp_path / "f3.png", title="reversal")
    assert out.read_bytes().startswith(PNG)
    assert seen["xlabels"] == [figures.LENGTH_AXIS, figures.RANK_AXIS]
    assert seen["ticks"][1] == ["1-9\nn=2", "10-80\nn=2"]
    assert seen["lines"] == [[[30.0], [25.0]], [[40.0, 12.0], [35.0, 11.0]]]


# ------------------------------------------------------------------------ Figure 2 (encoder PCA)
def _spy_on_save(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Record the texts and legend entries of the next figure saved."""
    seen: dict = {}
    real = figures._save

    def spy(fig, out):  # noqa: ANN001, ANN202 - matplotlib figure
        ax = fig.axes[0]
        seen["texts"] = [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        seen["legend"] = [t.get_text() for t in legend.get_texts()] if legend else []
        seen["xlabel"] = ax.get_xlabel()
        return real(fig, out)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def test_encoder_pca_labels_every_point_and_is_deterministic(tmp_path, monkeypatch):
    seen = _spy_on_save(monkeypatch)
    points = [[0.0, 0.0], [1.0, 0.5], [-1.0, 2.0], [0.3, -1.0]]
    labels = ["Der Mann sieht den Hund.", "Den Hund sieht der Mann.", "c", "d"]
    meanings = ["man sees dog", "man sees dog", "dog sees man", "dog sees man"]
    orders = ["subject first", "object first"] * 2
    a = figures.encoder_pca(
        points, labels, meanings, orders, tmp_path / "a.png", explained=[0.7, 0.2]
    )
    assert seen["texts"] == labels  # one label per point, in order
    assert seen["legend"] == ["man sees dog", "dog sees man", "subject first", "object first"]
    assert seen["xlabel"] == "PC1 (70% of variance)"
    b = figures.encoder_pca(
        points, labels, meanings, orders, tmp_path / "b.png", explained=[0.7, 0.2]
    )
    assert a.read_bytes().startswith(PNG) and a.read_bytes() == b.read_bytes()
    note = figures.placeholder(tmp_path / "none.png", "no German model")
    assert note.read_bytes().startswith(PNG) and seen["texts"] == ["no German model"]


def _german_checkpoint(folder: Path, source_lang: str = "de") -> Path:
    """A tiny model trained for a few steps to copy the minimal-pair phrases (ids reversed)."""
    import torch
    import torch.nn.functional as F

    from seq2seq.checkpoint import save_checkpoint
    from seq2seq.corpora.minimal_pairs import phrases
    from seq2seq.model import Seq2Seq
    from seq2seq.text import Preprocessing, prepare_source, tokenize_texts
    from seq2seq.vocab import EOS, PAD, SOS, Vocab

    texts = [p.text for p in phrases()]
    vocab = Vocab.from_tokens(
        dict.fromkeys(t for s in tokenize_texts(texts, lowercase=True) for t in s)
    )
    src = prepare_source(texts, lowercase=True, reverse=True, vocab=vocab)
    torch.manual_seed(0)
    model = Seq2Seq(len(vocab), len(vocab), emb_dim=8, hidden_dim=16, num_layers=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    s = torch.tensor(src)  # all phrases have 6 tokens: no padding
    t = torch.tensor([[SOS, *seq[::-1], EOS] for seq in src])
    for _ in range(30):
        out, _ = model.decoder(
            model.tgt_emb(t[:, :-1]), model.encode(s, torch.tensor([6] * len(src)))
        )
        loss = F.cross_entropy(model.out(out).transpose(1, 2), t[:, 1:], ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prep = Preprocessing(
        source_lang, "en", lowercase=True, reverse_source=True, max_source_tokens=6
    )
    return save_checkpoint(
        folder, model=model, epoch=1, preprocessing=prep, src_vocab=vocab, tgt_vocab=vocab
    ).parent


def test_figures_command_writes_figure_2_and_logs_it(tmp_path, monkeypatch):
    """`pipeline figures` end to end (subprocess): the PNG from a tiny trained checkpoint, with
    every phrase drawn, and an MLflow run `figures` holding it."""
    import shutil
    import subprocess

    from conftest import ROOT, pipeline_cmd
    from mlflow.tracking import MlflowClient

    ckpt = _german_checkpoint(tmp_path / "models" / "best")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    res = subprocess.run(
        [*pipeline_cmd(), "figures", "--checkpoint", str(ckpt), "--out", "figs/fig2.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    png = tmp_path / "figs" / "fig2.png"
    assert png.read_bytes().startswith(PNG) and "fig2.png" in res.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "figures" and run.data.tags["checkpoint"] == str(ckpt)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/fig2.png"
    ]


def test_figure_2_draws_every_phrase_and_refuses_other_source_languages(tmp_path, monkeypatch):
    from pipeline.config import Config
    from pipeline.errors import UserError
    from pipeline.stages import figures as stage
    from seq2seq.corpora.minimal_pairs import phrases

    monkeypatch.chdir(tmp_path)
    drawn: dict = {}
    real = figures.encoder_pca

    def spy(points, labels, meanings, orders, out, **kw):  # noqa: ANN001, ANN202
        drawn.update(points=points, labels=labels, meanings=meanings, title=kw["title"])
        return real(points, labels, meanings, orders, out, **kw)

    monkeypatch.setattr(figures, "encoder_pca", spy)
    out = stage.run(Config(), checkpoint=_german_checkpoint(tmp_path / "de"))
    assert out == Path("metrics") / "encoder_pca.png" and out.read_bytes().startswith(PNG)
    assert drawn["labels"] == [p.text for p in phrases()]
    assert len({tuple(p) for p in drawn["points"]}) == len(drawn["labels"])  # distinct states
    assert "unknown" not in drawn["title"]
    with pytest.raises(UserError, match="are German, but .* translates from en"):
        stage.run(Config(), checkpoint=_german_checkpoint(tmp_path / "en", source_lang="en"))
    with pytest.raises(UserError, match="is a folder"):
        stage.run(Config(), checkpoint=tmp_path / "de", out=tmp_path)
