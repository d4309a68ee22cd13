"""Ensembles of a sweep's top checkpoints: what the tune stage exports to models/top
(sweeps.export_top), how evaluate/translate pick and check the members (pipeline.ensembles),
and the config keys."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
import torch

from pipeline import ensembles, sweeps
from pipeline.config import Config, load_config
from pipeline.errors import UserError
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.model import Seq2Seq
from seq2seq.search import Ensemble
from seq2seq.text import Preprocessing
from seq2seq.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
SRC, TGT = Vocab.from_tokens(["a", "b", "c"]), Vocab.from_tokens(["x", "y"])
PREP = Preprocessing("de", "en", lowercase=True, reverse_source=True, max_source_tokens=5)


def _checkpoint(
    path: Path,
    *,
    epoch: int = 1,
    layers: int = 1,
    src: Vocab = SRC,
    tgt: Vocab = TGT,
    prep: Preprocessing = PREP,
) -> Path:
    """A tiny checkpoint, with optimizer state, of a model for `src` -> `tgt`."""
    model = Seq2Seq(len(src), len(tgt), emb_dim=4, hidden_dim=6, num_layers=layers, dropout=0.1)
    opt = torch.optim.Adam(model.parameters())
    model(torch.tensor([[4]]), [1], torch.tensor([[2, 4, 3]]), [3], [True, True])[0].backward()
    opt.step()  # Adam now holds state: export_top must drop it
    return save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        epoch=epoch,
        preprocessing=prep,
        src_vocab=src,
        tgt_vocab=tgt,
    )


def _trial(tmp: Path, name: str, bleu: list[float] | None, **extra: object) -> sweeps.TrialOutcome:
    """A finished trial as the sweep's exports see it; bleu None: it left no checkpoint."""
    curve = pl.DataFrame(
        {"epoch": list(range(1, len(bleu or []) + 1)), "val_bleu": bleu or []},
        schema={"epoch": pl.Int64, "val_bleu": pl.Float64},
    )
    metrics = {"checkpoint_path": str(tmp / "runs" / name / "ckpt")} if bleu else {}
    return sweeps.TrialOutcome(
        path=str(tmp / name),
        config={"model.num_layers": 1, **extra},
        error=None,
        curve=curve,
        metrics=metrics,
        run_id="",
    )


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """Four trials: t_b (best BLEU 50), t_d (40, but its checkpoint folder is gone), t_a (30),
    t_c (no checkpoint); each trial's best checkpoint is saved with the trial's epoch count."""
    trials = [
        _trial(tmp_path, "t_a", [10.0, 30.0, 20.0], lr=1),
        _trial(tmp_path, "t_b", [50.0], lr=2),
        _trial(tmp_path, "t_c", None),
        _trial(tmp_path, "t_d", [40.0, 35.0]),
    ]
    saved = {"t_a": 2, "t_b": 1}  # the best epoch of each trial with a checkpoint

    class Ckpt:
        def __init__(self, name: str) -> None:
            self.folder = _checkpoint(tmp_path / "ray" / name, epoch=saved[name]).parent

        @contextmanager
        def as_directory(self):
            yield str(self.folder)

    def best_checkpoint(result, metric: str, mode: str):
        assert (metric, mode) == ("val_bleu", "max")
        name = Path(result.path).name
        return Ckpt(name) if name in saved else None

    monkeypatch.setattr(sweeps, "_trial_checkpoint", best_checkpoint)
    monkeypatch.chdir(tmp_path)
    return trials


def test_export_top_ranks_trials_and_skips_those_without_a_checkpoint(sweep):
    ranked = [Path(r.path).name for _, r in sweeps.ranked_trials(sweep, "val_bleu", "max")]
    assert ranked == ["t_b", "t_d", "t_a"]  # t_c reported no checkpoint
    members = sweeps.export_top(Config().with_overrides({"tune.export_top": 5}), sweep)
    assert [(m["rank"], m["trial"], m["val_bleu"], m["epoch"]) for m in members] == [
        (1, "t_b", 50.0, 1),
        (2, "t_a", 30.0, 2),
    ]  # t_d's checkpoint is gone: the next trial takes rank 2
    top = Path("models") / ensembles.TOP_DIR
    assert json.loads((top / ensembles.MEMBERS_FILE).read_text()) == members
    assert members[1]["params"] == {"model.num_layers": 1, "lr": 1}
    for rank, epoch in ((1, 1), (2, 2)):
        ckpt = load_checkpoint(top / str(rank))
        assert ckpt.epoch == epoch and ckpt.optimizer_state is None  # for decoding only
    assert ensembles.exported("models") == 2
    assert ensembles.member_dirs("models", 2) == [top / "1", top / "2"]
    with pytest.raises(UserError, match=r"evaluate.ensemble is 3, but models/top holds 2"):
        ensembles.member_dirs("models", 3)


def test_export_top_keeps_only_tune_export_top_members(sweep):
    members = sweeps.export_top(Config().with_overrides({"tune.export_top": 1}), sweep)
    assert [m["trial"] for m in members] == ["t_b"]
    assert sorted(p.name for p in Path("models/top").iterdir()) == ["1", "members.json"]


def test_members_may_differ_in_depth_but_not_in_vocabulary_or_preprocessing(tmp_path):
    device = torch.device("cpu")
    one = _checkpoint(tmp_path / "one")
    deep = _checkpoint(tmp_path / "deep", layers=2)
    ckpt, model = ensembles.load([one], device)
    assert isinstance(model, Seq2Seq) and ckpt.path == one
    ckpt, model = ensembles.load([one, deep], device)
    assert isinstance(model, Ensemble) and len(model.members) == 2 and not model.training
    other_tgt = _checkpoint(tmp_path / "tgt", tgt=Vocab.from_tokens(["x", "z"]))
    with pytest.raises(UserError, match="different tgt vocabularies") as err:
        ensembles.load([one, other_tgt], device)
    assert "one sweep's models/top" in err.value.fix
    natural = Preprocessing("de", "en", lowercase=True, reverse_source=False, max_source_tokens=5)
    with pytest.raises(UserError, match="differently preprocessed"):
        ensembles.load([one, _checkpoint(tmp_path / "natural", prep=natural)], device)


@pytest.mark.parametrize("override", ["evaluate.ensemble=0", "tune.export_top=0"])
def test_ensemble_keys_are_validated(override):
    with pytest.raises(UserError, match=override.split("=")[0]):
        load_config(ROOT / "params.yaml", [override])
    cfg = load_config(ROOT / "params.yaml", [override.replace("=0", "=3")])
    assert (cfg.evaluate.ensemble, cfg.tune.export_top)[override.startswith("tune")] == 3
    assert (Config().evaluate.ensemble, Config().tune.export_top) == (1, 5)  # the defaults
