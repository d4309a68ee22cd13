"""sacreBLEU wrappers: scores, signatures, buckets, perplexity."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from seq2seq.metrics import (
    bleu_by_length,
    bleu_by_rank,
    corpus_bleu,
    corpus_chrf,
    mean_frequency_ranks,
    perplexity,
)

REFS = ["The cat sat on the mat.", "A man is riding a red bicycle down the street."]


def test_bleu_matches_sacrebleu_and_states_lowercase_in_signature():
    hyps = ["the cat sat on a mat .", "a man rides a red bicycle down the street."]
    res = corpus_bleu(hyps, REFS, lowercase=True)
    expected = sacrebleu.corpus_bleu(hyps, [REFS], lowercase=True, tokenize="13a").score
    assert res.score == pytest.approx(expected)
    assert "case:lc" in res.signature and "tok:13a" in res.signature
    assert "case:mixed" in corpus_bleu(hyps, REFS, lowercase=False).signature
    assert corpus_bleu(hyps, REFS, lowercase=False).score < res.score  # "the" vs "The"
    assert len(res.precisions) == 4 and res.sys_len > 0 and "BLEU" in str(res)


def test_identical_text_scores_100():
    assert corpus_bleu(REFS, REFS, lowercase=False).score == pytest.approx(100.0)
    score, sig = corpus_chrf(REFS, REFS)
    assert score == pytest.approx(100.0) and sig.startswith("nrefs:1")


def test_chrf_lowercase_option():
    lower = [r.lower() for r in REFS]
    assert corpus_chrf(lower, REFS, lowercase=True)[0] == pytest.approx(100.0)
    assert corpus_chrf(lower, REFS)[0] < 100.0


def test_empty_or_mismatched_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_bleu([], [], lowercase=True)
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_chrf([], [])
    with pytest.raises(ValueError, match="pair up"):
        corpus_bleu(["a"], ["a", "b"], lowercase=True)


def test_empty_hypothesis_strings_score_zero():
    assert corpus_bleu(["", ""], REFS, lowercase=True).score == 0.0


def test_bleu_by_length_buckets():
    hyps = ["a b c d e", "x y", "one two three four five six seven", "p q r s"]
    refs = ["a b c d e", "u v", "one two three four five six seven", "p q r s"]
    lens = [3, 10, 11, 45]
    rows = bleu_by_length(hyps, refs, lens, [10, 20, 30, 40])
    assert [r["bucket"] for r in rows] == ["1-10", "11-20", "21-30", "31-40", "41+"]
    assert [r["n"] for r in rows] == [2, 1, 0, 0, 1]
    assert rows[0]["lo"] == 1 and rows[0]["hi"] == 10 and rows[-1]["hi"] is None
    assert 0 < rows[0]["bleu"] < 100  # one perfect, one wrong sentence
    assert rows[1]["bleu"] == pytest.approx(100.0)
    assert rows[2]["bleu"] is None
    with pytest.raises(ValueError, match="ascending"):
        bleu_by_length(hyps, refs, lens, [20, 10])


def test_mean_frequency_rank_counts_words_only_and_unknowns_last():
    # vocabulary of 10: 4 specials, then ranks 1..6 (ids 4..9); <unk> (1) ranks 7
    ranks = mean_frequency_ranks([[4, 5], [9, 1, 2, 3], [0, 0], [1]], vocab_size=10)
    assert ranks == [1.5, 6.5, 0.0, 7.0]  # <sos>, <eos> and padding are not words


def test_bleu_by_rank_sorts_by_rank_into_equal_groups():
    hyps = ["a b c d", "w x", "one two three four", "p q r s", "k l m n"]
    refs = ["a b c d", "u v", "one two three four", "p q r s", "z z z z"]
    ranks = [30.0, 2.0, 1.0, 30.0, 500.0]
    rows = bleu_by_rank(hyps, refs, ranks, 2)
    # sorted: 2 (1.0), 1 (2.0), 0 (30), 3 (30, later in the test), 4 (500): groups of 2 and 3
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(1.0, 2.0, 2), (30.0, 500.0, 3)]
    assert [r["bucket"] for r in rows] == ["1-2", "30-500"]
    assert 0 < rows[0]["bleu"] < 100 and 0 < rows[1]["bleu"] < 100
    assert (
        bleu_by_rank(hyps, refs, ranks, 1)[0]["bleu"]
        == corpus_bleu(hyps, refs, lowercase=True).score
    )
    assert len(bleu_by_rank(hyps, refs, ranks, 9)) == 5  # never an empty group
    with pytest.raises(ValueError, match="average ranks"):
        bleu_by_rank(hyps, refs, ranks[:2], 2)


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(42.0)) == pytest.approx(42.0)
    assert perplexity(1e6) == math.inf
    assert math.isnan(perplexity(math.nan))
