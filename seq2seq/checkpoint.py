"""Checkpoints: one `checkpoint.pt` of plain data, loaded with `torch.load(weights_only=True)`.

The file holds a dict of tensors and JSON-like values only, never a pickled module or class:
format marker and version, model and optimizer state dicts, epoch, the model's constructor
arguments (`model_args`), the preprocessing its training data went through (`preprocessing`,
from the prepared data's meta.json), both vocabularies as token lists, metrics, and the training
config as a record for people (nothing reads it back). A checkpoint describes itself: readers use
`model_from_checkpoint` and `Checkpoint.preprocessing`, never the config. Loading never runs code
from the file: the safe unpickler refuses anything else. Version 1 files (config only) still load.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seq2seq.errors import CheckpointError, DataError
from seq2seq.io import atomic_file
from seq2seq.model import Seq2Seq
from seq2seq.text import Preprocessing
from seq2seq.vocab import Vocab

FILENAME = "checkpoint.pt"
FORMAT = "seq2seq-checkpoint"
FORMAT_VERSION = 2
REQUIRED = {
    1: ("model", "epoch", "config", "src_vocab", "tgt_vocab"),
    2: ("model", "epoch", "model_args", "preprocessing", "src_vocab", "tgt_vocab"),
}
MODEL_KEYS = ("emb_dim", "hidden_dim", "num_layers", "dropout")


@dataclass
class Checkpoint:
    """A loaded checkpoint; state dicts hold tensors on `map_location`."""

    model_state: dict[str, torch.Tensor]
    epoch: int
    model_args: dict[str, Any]  # Seq2Seq(**model_args)
    preprocessing: Preprocessing
    src_vocab: Vocab
    tgt_vocab: Vocab
    config: dict[str, Any] = field(default_factory=dict)  # the training config: a record only
    optimizer_state: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
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
    preprocessing: Preprocessing,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write the checkpoint atomically to `path` (a file, or folder/checkpoint.pt); returns it.

    `model` is a Seq2Seq (or a DDP / compiled wrapper of one): its constructor arguments are
    stored; they must match the vocabularies. `config` (JSON-able) is kept as a record.
    """
    bare = _unwrap(model)
    args = dict(getattr(bare, "args", None) or {})
    sizes = (args.get("src_vocab_size"), args.get("tgt_vocab_size"))
    if sizes != (len(src_vocab), len(tgt_vocab)):
        vocabs = (len(src_vocab), len(tgt_vocab))
        raise ValueError(
            f"the model's vocabulary sizes {sizes} differ from the vocabularies' {vocabs}"
        )
    json.dumps(config)  # fail here, not at load time, on objects the safe loader refuses
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": bare.state_dict(),
        "model_args": args,
        "preprocessing": preprocessing.to_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "config": config or {},
        "src_vocab": list(src_vocab.itos),
        "tgt_vocab": list(tgt_vocab.itos),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    target = resolve(path)
    with atomic_file(target) as tmp:
        torch.save(payload, tmp)
    return target


def copy_for_inference(src: str | Path, dst: str | Path) -> Path:
    """`src`'s checkpoint (file or folder) without its optimizer state, written atomically to
    `dst` (file or folder/checkpoint.pt): what decoding needs, at about a third of the size."""
    raw = _read(resolve(src), "cpu")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{src} is not a seq2seq checkpoint (no '{FORMAT}' marker)")
    target = resolve(dst)
    with atomic_file(target) as tmp:
        torch.save({**raw, "optimizer": None}, tmp)
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
    missing = [k for k in REQUIRED.get(version, REQUIRED[FORMAT_VERSION]) if k not in raw]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}", "re-create the checkpoint")
    try:
        src_vocab, tgt_vocab = Vocab(tuple(raw["src_vocab"])), Vocab(tuple(raw["tgt_vocab"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} has a bad vocabulary: {err}") from None
    args, prep = _description(raw, version, path, (len(src_vocab), len(tgt_vocab)))
    return Checkpoint(
        model_state=raw["model"],
        epoch=int(raw["epoch"]),
        model_args=args,
        preprocessing=prep,
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        config=raw.get("config") or {},
        optimizer_state=raw.get("optimizer"),
        metrics=dict(raw.get("metrics") or {}),
        format_version=version,
        path=path,
    )


def _description(
    raw: dict, version: int, path: Path, sizes: tuple[int, int]
) -> tuple[dict[str, Any], Preprocessing]:
    """(model_args, preprocessing): stored (version 2) or derived from the config (version 1)."""
    try:
        if version >= 2:
            args, prep = dict(raw["model_args"]), raw["preprocessing"]
        else:
            cfg = raw["config"] if isinstance(raw["config"], dict) else {}
            model, data = dict(cfg.get("model") or {}), dict(cfg.get("data") or {})
            args = {k: model[k] for k in MODEL_KEYS if k in model}
            args.update(src_vocab_size=sizes[0], tgt_vocab_size=sizes[1])
            prep = {**data, "max_source_tokens": data.get("max_len")}
        preprocessing = Preprocessing.from_dict(prep, f"checkpoint {path}")
    except DataError as err:
        raise CheckpointError(err.problem, err.fix) from None
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} has a malformed description: {err}") from None
    stored = (args.get("src_vocab_size"), args.get("tgt_vocab_size"))
    if stored != sizes:
        raise CheckpointError(
            f"checkpoint {path}: its model was built for vocabularies of {stored} tokens, but "
            f"it holds vocabularies of {sizes}: the weights do not match them",
            "the file is inconsistent; re-create it from the training run",
        )
    missing = [k for k in MODEL_KEYS if k not in args]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} does not say how to build its model (missing {', '.join(missing)})",
            "re-create the checkpoint from the training run",
        )
    return args, preprocessing


def model_from_checkpoint(ckpt: Checkpoint) -> Seq2Seq:
    """Rebuild the model from its stored arguments; load the weights strictly."""
    try:
        model = Seq2Seq(**ckpt.model_args)
        model.load_state_dict(ckpt.model_state, strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {ckpt.path}: the weights do not match its model arguments and "
            f"vocabularies ({first[:200]})",
            "the file is inconsistent; re-create it from the training run",
        ) from None
    return model
