"""The `evaluate` stage: the best checkpoint on the test split.

Greedy and beam search over the whole split, sacreBLEU corpus BLEU (with its signature) and chrF
against the cleaned raw references, teacher-forced perplexity, BLEU by source-length bucket and
sample translations. Writes `paths.metrics/` atomically (eval.json for `dvc metrics`,
bleu_by_length.json for `dvc plots` and its figure bleu_by_length.png, the same by average
word-frequency rank (bleu_by_rank.json/.png: the paper's Figure 3, right), samples.json, and the
paper's Figure 2 for the best model, encoder_pca.png) and logs the same to an MLflow run, with
the test split as its dataset input and, when tune wrote models/best/info.json, the registered
model it evaluated as its model input.

`evaluate.ensemble` K > 1 decodes and scores with an ensemble of the sweep's top-K checkpoints
(models/top/1..K, see pipeline/ensembles.py) instead of models/best: BLEU, chrF and perplexity
are the ensemble's; eval.json says `ensemble: K`, the MLflow run has the param `ensemble` and
the tag `ensemble_trials`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline import ensembles, figures, ui
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.prepared import read_frame, read_split
from pipeline.stages.figures import draw_encoder_pca
from seq2seq.batching import iterate_batches
from seq2seq.checkpoint import Checkpoint
from seq2seq.defaults import LOSS_BATCH_PAIRS
from seq2seq.evaluation import DecodeSpec, translate_texts
from seq2seq.io import atomic_dir, write_json
from seq2seq.metrics import (
    bleu_by_length,
    bleu_by_rank,
    corpus_bleu,
    corpus_chrf,
    mean_frequency_ranks,
    perplexity,
)
from seq2seq.search import Ensemble
from seq2seq.training import evaluate_loss
from seq2seq.vocab import Vocab

EVAL_FILE, BUCKETS_FILE, SAMPLES_FILE = "eval.json", "bleu_by_length.json", "samples.json"
BUCKETS_FIGURE = "bleu_by_length.png"
RANKS_FILE, RANKS_FIGURE = "bleu_by_rank.json", figures.BLEU_BY_RANK_FILE


def _load_test(cfg: Config, ckpt: Checkpoint) -> pl.DataFrame:
    prepared = Path(cfg.paths.prepared)
    test_path = prepared / "test.parquet"
    if not test_path.exists():
        raise UserError(f"{test_path} is missing", fix="run the data stages first (`dvc repro`)")
    for side, vocab in (("src", ckpt.src_vocab), ("tgt", ckpt.tgt_vocab)):
        if Vocab.load(prepared / f"vocab.{side}.json") != vocab:
            raise UserError(
                f"the checkpoint's {side} vocabulary differs from {prepared}/vocab.{side}.json, "
                "so the test ids would mean other words",
                fix="evaluate on the data the checkpoint was trained on (`dvc repro` reruns both)",
            )
    # the checkpoint's source order (a sweep trial may have trained on the other one)
    reverse = ckpt.preprocessing.reverse_source
    frame = read_frame(prepared, "test", reverse, columns=["src", "tgt", "src_ids"])
    if frame.height == 0:
        raise UserError(f"{test_path} has no sentences", fix="check the corpus and clean report")
    return frame


def _member_paths(cfg: Config, checkpoint: Path | None, ckpt_dir: Path) -> list[Path]:
    """The checkpoint to evaluate, or the `evaluate.ensemble` members the sweep exported."""
    k = cfg.evaluate.ensemble
    if k == 1:
        return [ckpt_dir]
    if checkpoint is not None:
        raise UserError(
            f"--checkpoint names one model, but evaluate.ensemble is {k}",
            fix="drop --checkpoint (members come from models/top) or --set evaluate.ensemble=1",
        )
    return ensembles.member_dirs(cfg.paths.models, k)


def _evaluated_run(ckpt_dir: Path) -> dict[str, Any]:
    """What models/best says about its origin (trial id, MLflow run), when tune wrote it."""
    info = ckpt_dir / "info.json"
    return json.loads(info.read_text()) if ckpt_dir.is_dir() and info.exists() else {}


def _score(cfg: Config, ckpt: Checkpoint, model, frame: pl.DataFrame, device) -> dict[str, Any]:
    """Translate the test split greedily and with beam search, and score both."""
    ev, lowercase = cfg.evaluate, ckpt.preprocessing.lowercase
    src_ids, refs = frame["src_ids"].to_list(), frame["tgt"].to_list()
    hyps: dict[str, list[str]] = {}
    for name, beam in (("greedy", 1), ("beam", ev.beam_size)):
        spec = DecodeSpec(beam, ev.batch_size, ev.max_len_ratio, ev.length_penalty)
        with ui.progress(f"{name} search (beam {beam})", total=len(src_ids)) as advance:
            hyps[name] = translate_texts(
                model, src_ids, ckpt.tgt_vocab, spec, device=device, progress=advance
            )
    bleu = {k: corpus_bleu(h, refs, lowercase=lowercase) for k, h in hyps.items()}
    chrf, chrf_sig = corpus_chrf(hyps["beam"], refs, lowercase=lowercase)
    ranks = mean_frequency_ranks(src_ids, len(ckpt.src_vocab))
    return {
        "hyps": hyps,
        "refs": refs,
        "bleu": bleu,
        "chrf": (chrf, chrf_sig),
        "by_length": bleu_by_length(
            hyps["beam"], refs, [len(s) for s in src_ids], ev.length_buckets, lowercase=lowercase
        ),
        "by_rank": bleu_by_rank(hyps["beam"], refs, ranks, ev.rank_bins, lowercase=lowercase),
    }


def score_test(
    cfg: Config, ckpt: Checkpoint, model, device, frame: pl.DataFrame | None = None
) -> dict[str, Any]:
    """The test split (sources in the checkpoint's order; `frame` when already loaded by
    `_load_test`) decoded greedily and with beam search and scored: `hyps`, `refs`, `bleu`
    (sacreBLEU results by search), `chrf`, `by_length` and `by_rank` (beam), plus the test
    `frame` and the teacher-forced `loss`."""
    frame = _load_test(cfg, ckpt) if frame is None else frame
    scores = _score(cfg, ckpt, model, frame, device)
    return {**scores, "frame": frame, "loss": _test_loss(cfg, ckpt, model, device)}


def _test_loss(cfg: Config, ckpt: Checkpoint, model, device) -> float:
    """Teacher-forced loss on the test split (sources in the checkpoint's order)."""
    corpus = read_split(Path(cfg.paths.prepared), "test", ckpt.preprocessing.reverse_source)
    batches = iterate_batches(
        corpus, LOSS_BATCH_PAIRS, shuffle=False, seed=0, epoch=0, device=device
    )
    return evaluate_loss(model, batches, autocast=False).loss


def run(cfg: Config, checkpoint: Path | None = None, verbose: bool = False) -> dict[str, Any]:
    """Evaluate `checkpoint` (default: paths.models/best) on the test split; returns eval.json."""
    from pipeline import tracking
    from pipeline.config import check_output_folder

    check_output_folder(cfg.paths.metrics, "paths.metrics")
    ckpt_dir = Path(checkpoint) if checkpoint else Path(cfg.paths.models) / "best"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt, model = ensembles.load(_member_paths(cfg, checkpoint, ckpt_dir), device)
    frame = _load_test(cfg, ckpt)  # missing or mismatched test data fails before MLflow
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    tracking.client_for(cfg)  # a bad tracking store fails now, not after scoring
    t0 = time.perf_counter()
    scores = score_test(cfg, ckpt, model, device, frame)
    loss = scores["loss"]
    origin = _evaluated_run(ckpt_dir)
    bleu, (chrf, chrf_sig) = scores["bleu"], scores["chrf"]
    metrics = {
        # the columns users compare first (`dvc exp show` keeps this order)
        "test_bleu": round(bleu["beam"].score, 4),
        "test_chrf": round(chrf, 4),
        "test_ppl": round(perplexity(loss), 4),
        "test_bleu_greedy": round(bleu["greedy"].score, 4),
        "test_loss": round(loss, 6),
        "sentences": frame.height,
        "beam_size": cfg.evaluate.beam_size,
        "ensemble": cfg.evaluate.ensemble,
        "bleu_signature": bleu["beam"].signature,
        "chrf_signature": chrf_sig,
        "checkpoint_epoch": ckpt.epoch,
        "trial_id": origin.get("trial_id"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with atomic_dir(cfg.paths.metrics) as out:
        write_json(out / EVAL_FILE, metrics)
        write_json(out / BUCKETS_FILE, scores["by_length"])
        write_json(out / SAMPLES_FILE, _samples(cfg, frame, scores))
        title = f"test BLEU by source length (beam {cfg.evaluate.beam_size})"
        figures.bleu_bars_file(out / BUCKETS_FILE, out / BUCKETS_FIGURE, title=title)
        write_json(out / RANKS_FILE, scores["by_rank"])
        title = f"test BLEU by average word-frequency rank (beam {cfg.evaluate.beam_size})"
        axis = figures.RANK_AXIS
        figures.bleu_bars_file(out / RANKS_FILE, out / RANKS_FIGURE, title=title, axis=axis)
        best = model.members[0] if isinstance(model, Ensemble) else model  # rank 1: the best
        draw_encoder_pca(ckpt, best, out / figures.ENCODER_PCA_FILE)
    _log_to_mlflow(cfg, metrics, origin, Path(cfg.paths.metrics))
    _summary(metrics, bleu)
    return metrics


def _samples(cfg: Config, frame: pl.DataFrame, scores: dict[str, Any]) -> list[dict[str, str]]:
    """The first `evaluate.num_examples` test sentences with reference and both translations."""
    return [
        {"source": s, "reference": r, "greedy": g, "beam": b}
        for s, r, g, b in zip(
            frame["src"].to_list()[: cfg.evaluate.num_examples],
            scores["refs"],
            scores["hyps"]["greedy"],
            scores["hyps"]["beam"],
            strict=False,
        )
    ]


def _log_to_mlflow(cfg: Config, metrics: dict, origin: dict, metrics_dir: Path) -> None:
    from pipeline import tracking

    client = tracking.client_for(cfg)
    exp_id = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    tags = tracking.base_tags(cfg, "evaluate")
    if origin.get("trial_id"):
        tags["evaluated_trial"] = str(origin["trial_id"])
    if origin.get("mlflow_run_id"):
        tags["evaluated_run_id"] = str(origin["mlflow_run_id"])
    if origin.get("registered_model"):
        tags["evaluated_model"] = f"{origin['registered_model']}/{origin.get('model_version')}"
    run_id = client.create_run(exp_id, tags=tags, run_name="evaluate").info.run_id
    test_input = tracking.dataset_inputs(cfg, ["test"])
    tracking.log_inputs(client, run_id, test_input, _model_input(origin))
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and v is not None and not isinstance(v, bool):
            client.log_metric(run_id, k, float(v))
    for k in ("bleu_signature", "chrf_signature"):
        client.set_tag(run_id, k, metrics[k])
    for name in (EVAL_FILE, BUCKETS_FILE, RANKS_FILE, SAMPLES_FILE):
        client.log_artifact(run_id, str(metrics_dir / name))
    client.log_param(run_id, "ensemble", cfg.evaluate.ensemble)
    if cfg.evaluate.ensemble > 1:
        client.set_tag(run_id, "ensemble_trials", ",".join(_member_trials(cfg)))
    for figure in (BUCKETS_FIGURE, RANKS_FIGURE, figures.ENCODER_PCA_FILE):
        client.log_artifact(run_id, str(metrics_dir / figure), "figures")
    client.set_terminated(run_id)


def _member_trials(cfg: Config) -> list[str]:
    """The trial ids of the ensemble's members (models/top/members.json), best first."""
    members = Path(cfg.paths.models) / ensembles.TOP_DIR / ensembles.MEMBERS_FILE
    listed = json.loads(members.read_text()) if members.is_file() else []
    return [str(m.get("trial", "?")) for m in listed[: cfg.evaluate.ensemble]]


def _model_input(origin: dict) -> list:
    """The logged model tune registered for models/best (info.json), as a run input."""
    from mlflow.entities import LoggedModelInput

    return [LoggedModelInput(str(origin["model_id"]))] if origin.get("model_id") else []


def _summary(metrics: dict, bleu: dict) -> None:
    members = metrics.get("ensemble", 1)
    ensemble = f", ensemble of {members}" if members > 1 else ""
    ui.info(
        f"[bold]test[/] BLEU {metrics['test_bleu']:.2f} (beam {metrics['beam_size']}{ensemble}), "
        f"{metrics['test_bleu_greedy']:.2f} (greedy), chrF {metrics['test_chrf']:.2f}, "
        f"perplexity {metrics['test_ppl']:.2f} on {metrics['sentences']} sentences"
    )
    ui.info(f"  {bleu['beam'].signature}")
