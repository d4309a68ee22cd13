"""seq2seq.corpora.minimal_pairs: the Figure 2 phrase set is what it claims, and every word of it
is in the vocabulary of the default sample corpus."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from seq2seq.corpora import sample
from seq2seq.corpora.minimal_pairs import (
    DEFAULT_GROUPS,
    OBJECT_FIRST,
    SUBJECT_FIRST,
    phrases,
)
from seq2seq.corpora.sample_lexicon import load_nouns
from seq2seq.errors import DataError
from seq2seq.text import prepare_source, token_counts, tokenize_texts, vocab_from_counts
from seq2seq.vocab import UNK

NOMINATIVE = "der"  # the nominative masculine article: the noun after it is the subject
ENGLISH = {n.de[0].lower(): n.en_sg for n in load_nouns()}


def _roles(tokens: list[str]) -> tuple[str, str]:
    """(subject, object) in English, read from the case marking alone, not from the order."""
    words = [t for t in tokens if t != "."]
    nouns = [(words[i - 1], words[i]) for i in (1, 4)]  # (article, noun): two noun phrases
    subject = next(noun for art, noun in nouns if art == NOMINATIVE)
    obj = next(noun for art, noun in nouns if art != NOMINATIVE)
    return ENGLISH[subject], ENGLISH[obj]


def test_each_group_is_four_orders_of_the_same_words_with_two_meanings():
    items = phrases()
    assert len(items) == 4 * len(DEFAULT_GROUPS)
    groups: dict[str, list] = {}
    for p in items:
        groups.setdefault(p.group, []).append(p)
    for members in groups.values():
        tokens = tokenize_texts([p.text for p in members], lowercase=True)
        assert len({tuple(sorted(t)) for t in tokens}) == 1  # the same bag of words ...
        assert len({tuple(t) for t in tokens}) == 4  # ... in four different orders
        meanings = Counter(p.meaning for p in members)
        assert len(meanings) == 2 and set(meanings.values()) == {2}
        for p, toks in zip(members, tokens, strict=True):
            subject, obj = _roles(toks)
            assert p.meaning.split()[0] == subject and p.meaning.split()[-1] == obj
            starts_with_subject = toks[0] == NOMINATIVE
            assert p.order == (SUBJECT_FIRST if starts_with_subject else OBJECT_FIRST)
        by_meaning = {m: {p.order for p in members if p.meaning == m} for m in meanings}
        assert all(orders == {SUBJECT_FIRST, OBJECT_FIRST} for orders in by_meaning.values())


def test_default_phrases_have_no_unknown_words_in_the_default_sample_vocabulary():
    """Vocabulary as the data stages build it from the default corpus (30k pairs, seed 1234,
    small lexicon), with a stricter min_freq (10 instead of 2) so any split would keep them."""
    corpus = sample.generate(30_000, 1234, vocabulary="small")
    counts = token_counts(corpus.lazy(), "de", lowercase=True).collect()
    vocab = vocab_from_counts(counts, min_freq=10, max_size=30_000)
    ids = prepare_source([p.text for p in phrases()], lowercase=True, reverse=True, vocab=vocab)
    assert all(seq and UNK not in seq for seq in ids)
    assert counts.filter(pl.col("token") == "hilft")["count"].item() >= 10


@pytest.mark.parametrize(
    ("group", "needle"),
    [
        (("lesen", "Mann", "Hund"), "cannot be subject and object"),  # one reads texts
        (("verstehen", "Mann", "Vater"), "not a verb"),  # not in the small vocabulary
        (("sehen", "Junge", "Hund"), "object form equals"),  # den Jungen: other words
        (("sehen", "Katze", "Hund"), "masculine"),  # die Katze: nominative = accusative
    ],
)
def test_groups_that_would_not_be_minimal_pairs_are_refused(group, needle):
    with pytest.raises(DataError, match=needle):
        phrases(groups=[group])
