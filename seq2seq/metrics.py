"""Corpus metrics: sacreBLEU BLEU (with its signature), chrF, BLEU by source length, perplexity.

Hypotheses must be detokenised text (seq2seq.detok) and references the raw sentences: sacreBLEU
tokenises both the same way (13a). A lower-cased model is scored with `lowercase=True`, which the
signature records as `case:lc`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

from seq2seq.vocab import SPECIALS, UNK

MAX_LOG_PPL = 700.0  # exp(709) is the largest finite float64; report inf beyond this


@dataclass(frozen=True)
class BleuResult:
    """A corpus BLEU score (0-100) with sacreBLEU's signature and the numbers behind it."""

    score: float
    signature: str
    precisions: tuple[float, ...]
    brevity_penalty: float
    sys_len: int
    ref_len: int
    text: str  # sacreBLEU's one-line summary, e.g. "BLEU = 35.1 66.2/42.0/... (BP = ...)"

    def __str__(self) -> str:
        return f"{self.text} {self.signature}"


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references: they must pair up")
    if not hyps:
        raise ValueError("no hypotheses to score: BLEU/chrF of an empty corpus is undefined")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], *, lowercase: bool) -> BleuResult:
    """sacreBLEU corpus BLEU, tokenize="13a", one reference per hypothesis."""
    _check(hyps, refs)
    bleu = BLEU(lowercase=lowercase, tokenize="13a")
    res = bleu.corpus_score(list(hyps), [list(refs)])
    return BleuResult(
        score=float(res.score),
        signature=str(bleu.get_signature()),
        precisions=tuple(float(p) for p in res.precisions),
        brevity_penalty=float(res.bp),
        sys_len=int(res.sys_len),
        ref_len=int(res.ref_len),
        text=str(res),
    )


def corpus_chrf(
    hyps: Sequence[str], refs: Sequence[str], *, lowercase: bool = False
) -> tuple[float, str]:
    """sacreBLEU corpus chrF (character 6-grams, beta 2) -> (score 0-100, signature)."""
    _check(hyps, refs)
    chrf = CHRF(lowercase=lowercase)
    res = chrf.corpus_score(list(hyps), [list(refs)])
    return float(res.score), str(chrf.get_signature())


def bleu_by_length(
    hyps: Sequence[str],
    refs: Sequence[str],
    src_lengths: Sequence[int],
    buckets: Sequence[int],
    *,
    lowercase: bool = True,
) -> list[dict]:
    """BLEU per source-length bucket (the paper's Figure 3).

    `buckets` are ascending inclusive upper bounds, e.g. [10, 20, 30, 40] gives 1-10, 11-20,
    21-30, 31-40 and an open last bucket 41+. Each entry: {"bucket", "lo", "hi" (None for the
    open one), "n", "bleu" (None when the bucket is empty)}.
    """
    if len(src_lengths) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(src_lengths)} source lengths")
    _check(hyps, refs)
    bounds = list(buckets)
    if any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"length buckets must be strictly ascending, got {bounds}")
    edges = [(lo, hi) for lo, hi in zip([0, *bounds], [*bounds, None], strict=True)]
    out = []
    for lo, hi in edges:
        idx = [i for i, n in enumerate(src_lengths) if n > lo and (hi is None or n <= hi)]
        label = f"{lo + 1}-{hi}" if hi is not None else f"{lo + 1}+"
        bleu = (
            corpus_bleu([hyps[i] for i in idx], [refs[i] for i in idx], lowercase=lowercase).score
            if idx
            else None
        )
        out.append({"bucket": label, "lo": lo + 1, "hi": hi, "n": len(idx), "bleu": bleu})
    return out


def mean_frequency_ranks(src_ids: Sequence[Sequence[int]], vocab_size: int) -> list[float]:
    """Each source's average word-frequency rank (the paper's Figure 3, right): a vocabulary
    lists its words by training count, most frequent first, after the 4 specials, so id 4 is
    rank 1; an unknown word ranks after every known one (vocab_size - 3); padding, start and
    end markers are not words. A source with no word gets 0."""
    rare = vocab_size - len(SPECIALS) + 1
    out = []
    for ids in src_ids:
        ranks = [
            rare if i == UNK else i - len(SPECIALS) + 1
            for i in ids
            if i >= len(SPECIALS) or i == UNK
        ]
        out.append(sum(ranks) / len(ranks) if ranks else 0.0)
    return out


def bleu_by_rank(
    hyps: Sequence[str],
    refs: Sequence[str],
    mean_ranks: Sequence[float],
    bins: int,
    *,
    lowercase: bool = True,
) -> list[dict]:
    """BLEU of the test sentences sorted by average word-frequency rank (`mean_frequency_ranks`),
    in `bins` groups of (nearly) equal size, commonest words first: the paper's Figure 3, right.
    Ties keep the test order, so two models scored on the same sources get the same groups. Each
    entry: {"bucket" (its ranks, e.g. "12-35"), "lo", "hi" (its lowest and highest average
    rank), "n", "bleu"}; fewer groups than `bins` when there are fewer sentences."""
    if len(mean_ranks) != len(hyps):
        raise ValueError(f"{len(hyps)} hypotheses but {len(mean_ranks)} average ranks")
    if bins < 1:
        raise ValueError(f"rank bins must be at least 1, got {bins}")
    _check(hyps, refs)
    order = sorted(range(len(hyps)), key=lambda i: (mean_ranks[i], i))
    groups = [g for g in (order[k * len(order) // bins : (k + 1) * len(order) // bins]
                          for k in range(bins)) if g]  # fmt: skip
    out = []
    for idx in groups:
        lo, hi = mean_ranks[idx[0]], mean_ranks[idx[-1]]
        bleu = corpus_bleu([hyps[i] for i in idx], [refs[i] for i in idx], lowercase=lowercase)
        label = f"{lo:.0f}-{hi:.0f}"
        entry = {"bucket": label, "lo": round(lo, 2), "hi": round(hi, 2), "n": len(idx)}
        out.append({**entry, "bleu": bleu.score})
    return out


def perplexity(loss_per_token: float) -> float:
    """exp(mean cross-entropy per token, in nats); inf when that would overflow, nan stays nan."""
    if math.isnan(loss_per_token):
        return math.nan
    return math.exp(loss_per_token) if loss_per_token < MAX_LOG_PPL else math.inf
