"""Ensembles of a sweep's best checkpoints (`evaluate.ensemble`, `pipeline translate --ensemble`).

The tune stage exports the best checkpoint of each of its `tune.export_top` best trials to
`paths.models/top/<rank>/checkpoint.pt` (`sweeps.export_top`, rank 1 = models/best's trial). An
ensemble of K decodes with ranks 1..K as one model (`seq2seq.search.Ensemble`: the average of
their log-probabilities, greedy and beam search as usual); K = 1 is the single checkpoint given
(models/best). Members may differ in architecture, but must share both vocabularies and the
preprocessing of their data; otherwise a one-line UserError. Asking for more members than the
sweep exported is an error, not a silent clamp, so that a metric never claims a larger ensemble
than it measured.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError
from seq2seq.checkpoint import FILENAME, Checkpoint, load_checkpoint, model_from_checkpoint
from seq2seq.search import Ensemble

TOP_DIR, MEMBERS_FILE = "top", "members.json"  # models/top/<rank>/, models/top/members.json


def exported(models: str | Path) -> int:
    """How many ranks (1, 2, ... without gaps) `models`/top holds a checkpoint for."""
    top = Path(models) / TOP_DIR
    rank = 0
    while (top / str(rank + 1) / FILENAME).is_file():
        rank += 1
    return rank


def member_dirs(models: str | Path, k: int, setting: str = "evaluate.ensemble") -> list[Path]:
    """models/top/1..k; a UserError naming `setting` when the sweep exported fewer."""
    have = exported(models)
    top = Path(models) / TOP_DIR
    if k > have:
        raise UserError(
            f"{setting} is {k}, but {top} holds {have} ensemble member(s)",
            fix=f"use at most {have}, or raise tune.export_top (and tune.num_samples) and "
            "rerun the sweep (`dvc repro` or `pipeline tune`)",
        )
    return [top / str(rank) for rank in range(1, k + 1)]


def check_members(ckpts: list[Checkpoint]) -> None:
    """Every member reads and writes the same ids for the same words, from the same data."""
    first = ckpts[0]
    for other in ckpts[1:]:
        for side in ("src", "tgt"):
            if getattr(other, f"{side}_vocab") != getattr(first, f"{side}_vocab"):
                raise UserError(
                    f"ensemble members {first.path} and {other.path} have different {side} "
                    "vocabularies, so the same id would mean different words",
                    fix="ensemble checkpoints trained on the same prepared data "
                    "(one sweep's models/top)",
                )
        if other.preprocessing != first.preprocessing:
            raise UserError(
                f"ensemble members {first.path} and {other.path} were trained on differently "
                f"preprocessed data ({first.preprocessing} vs {other.preprocessing})",
                fix="ensemble checkpoints trained on the same prepared data "
                "(one sweep's models/top)",
            )


def load(paths: list[Path], device: torch.device) -> tuple[Checkpoint, nn.Module]:
    """The members' first checkpoint (vocabularies, preprocessing) and the model to decode
    with: the single model for one path, else an `Ensemble` of all (checked compatible)."""
    ckpts = [load_checkpoint(p) for p in paths]
    check_members(ckpts)
    models = [model_from_checkpoint(c).to(device).eval() for c in ckpts]
    return ckpts[0], models[0] if len(models) == 1 else Ensemble(models).to(device)
