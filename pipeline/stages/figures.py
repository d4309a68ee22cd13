"""`pipeline figures`: the paper's Figure 2, a 2-D PCA of the encoder's final hidden state for a
set of German minimal pairs (`seq2seq.corpora.minimal_pairs`: swapping subject and object
changes the meaning, fronting the object keeps it), each point labelled with its phrase.

The evaluate stage draws it as part of its outputs (`paths.metrics/encoder_pca.png`, logged to
its MLflow run under figures/). This command draws it for any checkpoint (default models/best)
into any file (default `paths.metrics/encoder_pca.png`: for the checkpoint evaluate used, the
same bytes) and logs it to an MLflow run of its own named `figures`, tagged with the checkpoint
(and its trial, when tune wrote models/best/info.json).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline import figures, ui
from pipeline.config import Config
from pipeline.errors import UserError
from seq2seq.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint
from seq2seq.corpora import minimal_pairs
from seq2seq.representations import final_states, pca_2d
from seq2seq.text import prepare_source
from seq2seq.vocab import UNK

PHRASE_LANG = "de"  # the minimal pairs are German


def draw_encoder_pca(ckpt: Checkpoint, model: Any, out: Path) -> Path:
    """Figure 2 for `model` (built from `ckpt`) -> `out` (PNG); for a model that does not read
    German, a placeholder PNG that says so."""
    prep = ckpt.preprocessing
    if prep.source_lang != PHRASE_LANG:
        message = (
            f"Figure 2 needs a German-source model (its phrases are German); "
            f"this one translates from {prep.source_lang}"
        )
        return figures.placeholder(out, message)
    items = minimal_pairs.phrases()
    ids = prepare_source(
        [p.text for p in items],
        lowercase=prep.lowercase,
        reverse=prep.reverse_source,
        vocab=ckpt.src_vocab,
    )
    device = next(model.parameters()).device
    coords, share = pca_2d(final_states(model, ids, device=device))
    unknown = sum(UNK in seq for seq in ids)
    title = "encoder states of minimal pairs (2-D PCA)"
    if unknown:
        title += f": {unknown} of {len(ids)} phrases hold words unknown to the model"
    return figures.encoder_pca(
        coords.tolist(),
        [p.text for p in items],
        [p.meaning for p in items],
        [p.order for p in items],
        out,
        explained=share.tolist(),
        title=title,
    )


def _target(cfg: Config, out: Path | None) -> Path:
    target = Path(out) if out else Path(cfg.paths.metrics) / figures.ENCODER_PCA_FILE
    if target.is_dir():
        raise UserError(f"{target} is a folder", fix="pass --out the path of a .png file")
    return target


def run(cfg: Config, checkpoint: Path | None = None, out: Path | None = None) -> Path:
    """Draw Figure 2 for `checkpoint` (default paths.models/best) into `out` and log it."""
    from pipeline import tracking

    ckpt_dir = Path(checkpoint) if checkpoint else Path(cfg.paths.models) / "best"
    ckpt = load_checkpoint(ckpt_dir)
    source = ckpt.preprocessing.source_lang
    if source != PHRASE_LANG:
        raise UserError(
            f"Figure 2's minimal pairs are German, but {ckpt.path} translates from {source}",
            fix="draw it for a model with data.source_lang de (--checkpoint PATH)",
        )
    target = _target(cfg, out)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = tracking.client_for(cfg)  # a bad tracking store fails before any drawing
    draw_encoder_pca(ckpt, model_from_checkpoint(ckpt), target)
    run_id = _log(cfg, client, target, ckpt_dir)
    ui.info(f"Figure 2 (encoder states of minimal pairs, 2-D PCA): {target.resolve()}")
    ui.info(f"MLflow run {run_id}: {tracking.ui_hint(client)}")
    return target


def _log(cfg: Config, client: Any, figure: Path, ckpt_dir: Path) -> str:
    """A `figures` run in the experiment, with the PNG under figures/; returns its id."""
    from pipeline import tracking

    exp_id = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    tags = {**tracking.base_tags(cfg, "figures"), "checkpoint": str(ckpt_dir)}
    info = ckpt_dir / "info.json"
    if ckpt_dir.is_dir() and info.is_file():
        trial = json.loads(info.read_text()).get("trial_id")
        if trial:
            tags["evaluated_trial"] = str(trial)
    run_id = client.create_run(exp_id, tags=tags, run_name="figures").info.run_id
    client.log_artifact(run_id, str(figure), "figures")
    client.set_terminated(run_id)
    return str(run_id)
