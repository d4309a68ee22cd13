"""The evaluate stage on a tiny real pipeline: sample corpus -> data stages -> short training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.prepared import prepared_meta, read_split, run_preprocessing
from pipeline.stages import download, evaluate, preprocess
from seq2seq.batching import iterate_batches
from seq2seq.checkpoint import save_checkpoint
from seq2seq.defaults import LOSS_BATCH_PAIRS
from seq2seq.errors import CheckpointError
from seq2seq.model import Seq2Seq
from seq2seq.training import evaluate_loss, fit, make_optimizer
from seq2seq.vocab import Vocab


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Config]:
    """Data stages on 400 generated pairs and a briefly trained tiny model in models/best."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return root, _build()


@pytest.fixture
def tiny_project(built, tmp_path, monkeypatch) -> Config:
    """A private copy of the built project, as the cwd."""
    root, cfg = built
    shutil.copytree(root, tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    return cfg


def _build() -> Config:
    cfg = Config().with_overrides(
        {
            "data.sample.num_pairs": 400,
            "data.sample.valid_fraction": 0.1,
            "data.sample.test_fraction": 0.1,
            "data.max_len": 20,
            "data.min_freq": 1,
            "model.emb_dim": 16,
            "model.hidden_dim": 32,
            "model.num_layers": 1,
            "train.lr": 0.01,
            "evaluate.beam_size": 3,
            "evaluate.num_examples": 5,
        }
    )
    download.run(cfg)
    preprocess.clean(cfg)
    preprocess.tokenize(cfg)
    preprocess.reverse(cfg)
    best = Path(cfg.paths.models) / "best"
    _train_checkpoint(cfg, best, reverse_source=True)
    (best / "info.json").write_text(json.dumps({"trial_id": "abc_00001", "mlflow_run_id": "r1"}))
    return cfg


def _train_checkpoint(cfg: Config, out: Path, reverse_source: bool) -> Seq2Seq:
    """A tiny model trained 4 epochs on the prepared train split with sources in the order
    `reverse_source` asks for, saved to `out` as a run's checkpoint of that order."""
    prepared = Path(cfg.paths.prepared)
    src_vocab, tgt_vocab = (Vocab.load(prepared / f"vocab.{s}.json") for s in ("src", "tgt"))
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg.model, len(src_vocab), len(tgt_vocab))
    opt = make_optimizer(model, cfg.train)
    spec = cfg.with_overrides({"train.epochs": 4, "train.batch_size": 32}).train
    fit(model, opt, read_split(prepared, "train", reverse_source), None, spec)
    save_checkpoint(
        out, model=model, optimizer=opt, epoch=4, config=cfg.model_dump(),
        preprocessing=run_preprocessing(prepared, reverse_source),
        src_vocab=src_vocab, tgt_vocab=tgt_vocab, metrics={"val_bleu": 0.0},
    )  # fmt: skip
    return model


def test_evaluate_writes_metrics_plots_samples_and_logs_to_mlflow(tiny_project):
    cfg = tiny_project
    metrics = evaluate.run(cfg)
    out = Path(cfg.paths.metrics)
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk == metrics
    test_rows = json.loads(Path(cfg.paths.prepared, "meta.json").read_text())["rows"]["test"]
    assert metrics["sentences"] == test_rows > 0
    for key in ("test_bleu", "test_bleu_greedy", "test_chrf"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["test_ppl"] > 1.0 and metrics["test_ppl"] < len(
        Vocab.load(Path(cfg.paths.prepared) / "vocab.tgt.json")
    )  # better than uniform after training
    assert "case:lc" in metrics["bleu_signature"] and "tok:13a" in metrics["bleu_signature"]
    assert metrics["trial_id"] == "abc_00001"
    buckets = json.loads((out / "bleu_by_length.json").read_text())
    assert [b["bucket"] for b in buckets] == ["1-10", "11-20", "21-30", "31-40", "41+"]
    assert sum(b["n"] for b in buckets) == test_rows
    ranks = json.loads((out / "bleu_by_rank.json").read_text())
    assert len(ranks) == 5 and sum(b["n"] for b in ranks) == test_rows  # evaluate.rank_bins
    assert all(a["hi"] <= b["lo"] for a, b in zip(ranks, ranks[1:], strict=False))
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == 5 and set(samples[0]) == {"source", "reference", "greedy", "beam"}

    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["test_bleu"] == pytest.approx(metrics["test_bleu"])
    assert run.data.tags["evaluated_trial"] == "abc_00001"
    assert run.data.tags["bleu_signature"] == metrics["bleu_signature"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval.json", "bleu_by_length.json", "bleu_by_rank.json", "samples.json"} <= artifacts
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    pngs = ["bleu_by_length.png", "bleu_by_rank.png", "encoder_pca.png"]
    assert figures == [f"figures/{png}" for png in pngs]
    for png in pngs:  # the DVC image plots
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert metrics["ensemble"] == 1 and run.data.params["ensemble"] == "1"
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.tags[0].value) for i in inputs] == [("sample-de-en-test", "testing")]


def test_a_natural_order_checkpoint_is_scored_on_natural_order_sources(tiny_project):
    """A checkpoint trained on unreversed sources (a sweep trial of `pipeline claim reversal`)
    on data the reverse stage wrote reversed: evaluate reads the test split in the checkpoint's
    order, so its perplexity is the one on natural-order sources, not on reversed ones."""
    cfg = tiny_project
    prepared = Path(cfg.paths.prepared)
    assert prepared_meta(prepared).reverse_source  # the stage wrote reversed sources
    natural = Path("natural")
    model = _train_checkpoint(cfg, natural, reverse_source=False)

    def loss(reverse: bool) -> float:
        batches = iterate_batches(
            read_split(prepared, "test", reverse), LOSS_BATCH_PAIRS, shuffle=False, seed=0, epoch=0
        )
        return evaluate_loss(model, batches, autocast=False).loss

    metrics = evaluate.run(cfg, checkpoint=natural)
    assert metrics["test_loss"] == pytest.approx(loss(False), abs=2e-6)  # eval.json: 6 decimals
    assert abs(loss(True) - loss(False)) > 2e-5  # the order matters to this model


def test_evaluate_refuses_a_checkpoint_from_other_data(tiny_project):
    cfg = tiny_project
    prepared = Path(cfg.paths.prepared)
    vocab = Vocab.load(prepared / "vocab.tgt.json")
    Vocab((*vocab.itos, "neuwort")).save(prepared / "vocab.tgt.json")
    with pytest.raises(UserError, match="tgt vocabulary differs"):
        evaluate.run(cfg)
    assert not Path(cfg.paths.metrics).exists()  # nothing half-written


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError):
        evaluate.run(Config(), checkpoint=tmp_path / "nope")


# ----------------------------------------------------------------------------------- ensembles
def _top(cfg: Config, *members: Path) -> Path:
    """models/top/1..n as the tune stage exports them, from the given checkpoints."""
    from pipeline.ensembles import MEMBERS_FILE, TOP_DIR
    from seq2seq.checkpoint import copy_for_inference

    top = Path(cfg.paths.models) / TOP_DIR
    for rank, path in enumerate(members, start=1):
        copy_for_inference(path, top / str(rank))
    listed = [{"rank": r, "trial": f"t_{r}"} for r in range(1, len(members) + 1)]
    (top / MEMBERS_FILE).write_text(json.dumps(listed))
    return top


def test_the_decoding_batch_size_changes_no_figure(tiny_project, monkeypatch):
    """evaluate.batch_size sets the decoder rows per batch only: one sentence at a time and the
    whole test split in a batch give the same translations and scores, and the test loss is
    computed on its own batches (LOSS_BATCH_PAIRS sentence pairs), whatever the decoding rows."""
    cfg = tiny_project
    samples = Path(cfg.paths.metrics, "samples.json")
    loss_batches: list[int] = []

    def spy(corpus, batch_size, **kwargs):
        loss_batches.append(batch_size)
        return iterate_batches(corpus, batch_size, **kwargs)

    monkeypatch.setattr(evaluate, "iterate_batches", spy)
    runs = []
    for rows in (5, 4096):  # beam 5: one sentence a batch; all of them in one
        runs.append(evaluate.run(cfg.with_overrides({"evaluate.batch_size": rows})))
        runs[-1]["samples"] = json.loads(samples.read_text())
    one, many = runs
    assert loss_batches == [LOSS_BATCH_PAIRS, LOSS_BATCH_PAIRS]
    for key in ("test_bleu", "test_bleu_greedy", "test_chrf", "test_loss", "samples"):
        assert one[key] == many[key], key


def test_ensemble_of_two_copies_scores_like_the_single_model(tiny_project):
    cfg = tiny_project
    samples = Path(cfg.paths.metrics, "samples.json")
    single = evaluate.run(cfg)
    single_samples = json.loads(samples.read_text())
    best = Path(cfg.paths.models) / "best"
    _top(cfg, best, best)
    both = evaluate.run(cfg.with_overrides({"evaluate.ensemble": 2}))
    assert both["ensemble"] == 2
    for key in ("test_bleu", "test_bleu_greedy", "test_chrf"):
        assert both[key] == single[key], key
    assert both["test_ppl"] == pytest.approx(single["test_ppl"], rel=1e-4)
    assert json.loads(samples.read_text()) == single_samples  # the same translations
    client = MlflowClient(tracking_uri=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en")
    newest = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert newest.data.params["ensemble"] == "2"
    assert newest.data.tags["ensemble_trials"] == "t_1,t_2"


def test_ensemble_members_must_share_vocabularies(tiny_project):
    from seq2seq.checkpoint import load_checkpoint, model_from_checkpoint

    cfg = tiny_project
    best = Path(cfg.paths.models) / "best"
    ckpt = load_checkpoint(best)
    renamed = Vocab((*ckpt.tgt_vocab.itos[:-1], "neuwort"))  # same size, another word
    model, prep = model_from_checkpoint(ckpt), ckpt.preprocessing
    vocabs = {"src_vocab": ckpt.src_vocab, "tgt_vocab": renamed}
    other = save_checkpoint("other", model=model, epoch=1, preprocessing=prep, **vocabs)
    _top(cfg, best, other)
    with pytest.raises(UserError, match="different tgt vocabularies") as err:
        evaluate.run(cfg.with_overrides({"evaluate.ensemble": 2}))
    assert "same prepared data" in err.value.fix
    assert not Path(cfg.paths.metrics).exists()


def test_ensemble_larger_than_the_sweep_exported_is_a_clear_error(tiny_project):
    cfg = tiny_project
    with pytest.raises(UserError, match=r"evaluate.ensemble is 3, but .*top holds 0"):
        evaluate.run(cfg.with_overrides({"evaluate.ensemble": 3}))
    best = Path(cfg.paths.models) / "best"
    _top(cfg, best, best)
    with pytest.raises(UserError, match="holds 2 ensemble member") as err:
        evaluate.run(cfg.with_overrides({"evaluate.ensemble": 3}))
    assert "at most 2" in err.value.fix and "tune.export_top" in err.value.fix
    with pytest.raises(UserError, match="--checkpoint names one model"):
        evaluate.run(cfg.with_overrides({"evaluate.ensemble": 2}), checkpoint=best)
    assert not Path(cfg.paths.metrics).exists()
