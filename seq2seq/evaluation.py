"""From a model and source ids to scored text: decode, map ids to tokens, detokenise, score.

Shared by the validation BLEU of every training epoch and by the evaluate stage, so that both
score translations the same way (detokenised hypotheses against cleaned raw references).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seq2seq.defaults import DEFAULT_BATCH_ROWS, DEFAULT_LENGTH_PENALTY, DEFAULT_MAX_LEN_RATIO
from seq2seq.detok import detokenize
from seq2seq.metrics import BleuResult, corpus_bleu
from seq2seq.search import translate_ids
from seq2seq.vocab import Vocab


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode: beam_size 1 is greedy."""

    beam_size: int = 1
    batch_size: int = DEFAULT_BATCH_ROWS  # decoder rows per batch: sentences x beam_size
    max_len_ratio: float = DEFAULT_MAX_LEN_RATIO
    length_penalty: float = DEFAULT_LENGTH_PENALTY


def translate_texts(
    model: nn.Module,
    src_ids: Sequence[Sequence[int]],
    tgt_vocab: Vocab,
    spec: DecodeSpec,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[..., None] | None = None,
) -> list[str]:
    """Source id lists (as stored: reversed, no specials) -> detokenised translations, in order."""
    ids = translate_ids(
        model,
        src_ids,
        beam_size=spec.beam_size,
        batch_size=spec.batch_size,
        max_len_ratio=spec.max_len_ratio,
        length_penalty=spec.length_penalty,
        device=device,
        progress=progress,
    )
    return [detokenize(tgt_vocab.decode(h)) for h in ids]


def bleu_of(
    model: nn.Module,
    src_ids: Sequence[Sequence[int]],
    refs: Sequence[str],
    tgt_vocab: Vocab,
    spec: DecodeSpec,
    *,
    lowercase: bool,
    device: torch.device | str = "cpu",
) -> tuple[BleuResult, list[str]]:
    """Corpus BLEU of the model's translations against raw references, and the translations."""
    hyps = translate_texts(model, src_ids, tgt_vocab, spec, device=device)
    return corpus_bleu(hyps, refs, lowercase=lowercase), hyps
