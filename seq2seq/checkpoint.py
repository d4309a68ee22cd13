"""Checkpoints: one `checkpoint.pt` of plain data, loaded with `torch.load(weights_only=True)`.

The file holds a dict of tensors and JSON-like values only, never a pickled module or class:
format marker and version, model and optimizer state dicts, epoch, the config (a JSON-able dict,
e.g. `cfg.model_dump()`), both vocabularies as token lists, metrics and RNG states (uint8
tensors). Loading never runs code from the file: the safe unpickler refuses anything else.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from seq2seq.errors import CheckpointError
from seq2seq.io import atomic_file
from seq2seq.model import Seq2Seq
from seq2seq.vocab import Vocab

FILENAME = "checkpoint.pt"
FORMAT = "seq2seq-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model", "epoch", "config", "src_vocab", "tgt_vocab")


@dataclass
class Checkpoint:
    """A loaded checkpoint; state dicts hold tensors on `map_location`."""

    model_state: dict[str, torch.Tensor]
    epoch: int
    config: dict[str, Any]
    src_vocab: Vocab
    tgt_vocab: Vocab
    optimizer_state: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    rng_state: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    path: Path | None = None


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a folder holding `checkpoint.pt` (also: a path without suffix)."""
    path = Path(path)
    return path / FILENAME if path.is_dir() or not path.suffix else path


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int,
    config: dict[str, Any],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    metrics: dict[str, float] | None = None,
    rng_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically to `path` (a file, or folder/checkpoint.pt); returns it.

    `config` must be JSON-able (plain dicts, lists, str, numbers, bool, None); `rng_state` maps
    names to tensors (e.g. `torch.get_rng_state()`, a generator's `get_state()`) or plain values.
    """
    json.dumps(config)  # fail here, not at load time, on objects the safe loader refuses
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "config": config,
        "src_vocab": list(src_vocab.itos),
        "tgt_vocab": list(tgt_vocab.itos),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "rng_state": rng_state,
    }
    target = resolve(path)
    with atomic_file(target) as tmp:
        torch.save(payload, tmp)
    return target


def _read(path: Path, map_location: str | torch.device) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist",
            "train a model first (pipeline tune / pipeline train) or pass --checkpoint PATH",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if "Weights only load failed" not in str(err) or not found:
            raise _corrupt(path, err) from None
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects that the safe loader refuses "
            f"(it references {found.group(1)}); "
            "nothing in it was run",
            "use only checkpoints written by save_checkpoint (state dicts, no pickled modules)",
        ) from None
    except Exception as err:  # a damaged file fails anywhere in the unpickler or zip reader
        raise _corrupt(path, err) from None


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    text = str(err).strip()
    # the safe unpickler's reason sits after its long preamble; the first line is boilerplate
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = reason.group(1) if reason else (text.splitlines()[0] if text else type(err).__name__)
    return CheckpointError(
        f"checkpoint {path} is unreadable (truncated, corrupt or not a torch.save file: "
        f"{first.strip()[:160]}); nothing in it was run",
        "re-copy or re-create the checkpoint",
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint file or folder safely; CheckpointError when missing, corrupt, foreign."""
    path = resolve(path)
    raw = _read(path, map_location)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a seq2seq checkpoint (no '{FORMAT}' marker)",
            "pass a checkpoint written by this project's training",
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this code reads up to "
            f"{FORMAT_VERSION}",
            "upgrade the seq2seq package to the version that wrote it",
        )
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}", "re-create the checkpoint")
    try:
        src_vocab, tgt_vocab = Vocab(tuple(raw["src_vocab"])), Vocab(tuple(raw["tgt_vocab"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} has a bad vocabulary: {err}") from None
    return Checkpoint(
        model_state=raw["model"],
        epoch=int(raw["epoch"]),
        config=raw["config"],
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        optimizer_state=raw.get("optimizer"),
        metrics=dict(raw.get("metrics") or {}),
        rng_state=raw.get("rng_state"),
        format_version=version,
        path=path,
    )


def model_from_checkpoint(ckpt: Checkpoint) -> Seq2Seq:
    """Rebuild the model from config["model"] and the vocab sizes; load the weights strictly."""
    spec = ckpt.config.get("model") if isinstance(ckpt.config, dict) else None
    keys = ("emb_dim", "hidden_dim", "num_layers", "dropout")
    if not isinstance(spec, dict) or any(k not in spec for k in keys):
        raise CheckpointError(
            f"checkpoint {ckpt.path} has no usable config['model'] (needs {', '.join(keys)})",
            "re-create the checkpoint with save_checkpoint(config=cfg.model_dump())",
        )
    model = Seq2Seq.from_config(
        SimpleNamespace(**{k: spec[k] for k in keys}), len(ckpt.src_vocab), len(ckpt.tgt_vocab)
    )
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {ckpt.path}: the weights do not match its config and vocabularies "
            f"({first[:200]})",
            "the file is inconsistent; re-create it from the training run",
        ) from None
    return model
