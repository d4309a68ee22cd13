"""Detokenisation: rules per language and round trips on Multi30k scored with sacreBLEU."""

from __future__ import annotations

import gzip
import re

import pytest

from seq2seq.detok import detokenize
from seq2seq.metrics import corpus_bleu

TOKEN = re.compile(r"\w+|[^\w\s]")  # the project's tokeniser


def tok(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


@pytest.mark.parametrize(
    "text",
    [
        "a man in a t-shirt doesn't know, he's here.",
        "the dog's ball (a red one) is on the grass!",
        "the dogs' owner waits; the girls' team wins.",
        'she says "hello" to him: "how are you?"',
        "the price is 3.5 dollars at 10:30, or 1,000 in total.",
        "l'homme qu'il voit aujourd'hui est-ce un chien ?".replace(" ?", "?"),
        "s'il te plaît, l'enfant [en rouge] joue.",
        "ein mann mit einem t-shirt sagt: „hallo“ zu einer frau.",
        "ein obst- und gemüsehändler steht am stand.",
        "a woman holds a 50% off sign... and a c/o note.",
        "the boys' shoes are by the girls'",
    ],
)
def test_round_trip_exact(text):
    assert detokenize(tok(text)) == text


def test_known_limit_single_quotes_between_words_read_as_apostrophes():
    # "in ' retro ' outfits" is indistinguishable from "l ' homme": the apostrophe rule wins
    assert detokenize(tok("two men in 'retro' outfits")) == "two men in'retro'outfits"


def test_special_and_edge_tokens():
    assert detokenize([]) == ""
    assert detokenize(["<unk>", "dog", "."]) == "<unk> dog."
    assert detokenize(["-", "yes", "-"]) == "- yes -"  # a dash not between words stays spaced
    assert detokenize(["'"]) == "'"
    assert detokenize(["«", "bonjour", "»"]) == "«bonjour»"


def _first_lines(path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(n)]


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_multi30k_round_trip_bleu(multi30k_dir, lang):
    """Tokenise, detokenise, score against the lower-cased raw sentence (first 1,000 val)."""
    refs = [line.lower() for line in _first_lines(multi30k_dir / f"val.{lang}.gz", 1000)]
    hyps = [detokenize(tok(r)) for r in refs]
    bleu = corpus_bleu(hyps, refs, lowercase=True).score
    # measured: en 99.97, de 99.9+, fr 100.0; space-joined tokens: en 97.0, de 94.7, fr 79.8
    assert bleu >= 99.5
    assert sum(h == r for h, r in zip(hyps, refs, strict=True)) >= 990
    joined = corpus_bleu([" ".join(tok(r)) for r in refs], refs, lowercase=True).score
    assert joined < bleu
