"""The generated German-English sample corpus: shape, determinism, size, lengths and grammar."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict

import polars as pl
import pytest

from seq2seq.corpora import sample
from seq2seq.corpora import sample_lexicon as lx
from seq2seq.corpora.sample import MODALS, generate
from seq2seq.errors import DataError

WORD = re.compile(r"[\w']+")
TIME_STARTS = tuple(de[0].upper() + de[1:] + " " for de, _ in lx.TIME_PAIRS)
VERBS = lx.load_verbs()
# Every German finite verb: plain forms (V2), prefix + form (verb-final), modals.
FINITE_V2 = {f for v in VERBS for f in v.forms} | {f for de, _ in MODALS for f in de}
FINITE_FINAL = FINITE_V2 | {v.prefix + f for v in VERBS if v.prefix for f in v.forms}
EN_BASE = {v.en.split()[0] for v in VERBS} | {"do", "are", "want"}
EN_3SG = {v.en3.split()[0] for v in VERBS} | {"does", "is"}
REL_PRONOUNS = {"der", "die", "das", "den"}


def _noun_index() -> dict[str, set[tuple[int, bool]]]:
    """German noun form -> {(gender, plural)} (Mädchen is both singular and plural)."""
    index: dict[str, set[tuple[int, bool]]] = defaultdict(set)
    for noun in lx.load_nouns():
        for i, form in enumerate(noun.de):
            index[form].add((noun.gender, i >= 4))
    return index


NOUN_FORMS = _noun_index()
# English noun -> plural?, leaving out sheep and fish (the same in both numbers)
EN_NOUNS = {n.en_sg.split()[-1]: False for n in lx.load_nouns() if n.en_pl != n.en_sg}
EN_NOUNS |= {n.en_pl.split()[-1]: True for n in lx.load_nouns() if n.en_pl != n.en_sg}


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return generate(20_000, 1234)


def test_shape_and_types() -> None:
    df = generate(50, 1)
    assert df.columns == ["de", "en"]
    assert df.schema == {"de": pl.Utf8, "en": pl.Utf8}
    assert df.height == 50
    assert generate(0, 1).shape == (0, 2)
    with pytest.raises(DataError, match="num_pairs"):
        generate(-1, 1)


def test_deterministic_per_seed() -> None:
    assert generate(300, 7).equals(generate(300, 7))
    assert not generate(300, 7).equals(generate(300, 8))
    assert not generate(300, -7).equals(generate(300, 7))
    assert generate(300, 7).head(100).equals(generate(100, 7))


def test_worker_processes_give_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample, "CHUNK", 120)  # 3 chunks, each its own seeded stream
    serial = generate(300, 5)
    assert serial.equals(generate(300, 5, workers=2))
    assert serial.n_unique() > 290
    with pytest.raises(DataError, match="workers"):
        generate(10, 5, workers=0)


def test_vocabulary_size(corpus: pl.DataFrame) -> None:
    """The default (small) vocabulary: every content word seen often; full: the whole lexicon."""
    full = generate(20_000, 1234, vocabulary="full")
    for lang in ("de", "en"):
        small_words = {w for s in corpus[lang] for w in WORD.findall(s.lower())}
        full_words = {w for s in full[lang] for w in WORD.findall(s.lower())}
        assert 200 <= len(small_words) <= 700, (lang, len(small_words))
        assert len(full_words) >= 2 * len(small_words), (lang, len(full_words))
        counts = Counter(w for s in corpus[lang] for w in WORD.findall(s.lower()))
        assert sorted(counts.values())[len(counts) // 10] >= 10  # 90% of words seen 10+ times


def test_sample_knobs_are_checked_and_change_the_corpus() -> None:
    with pytest.raises(DataError, match="vocabulary"):
        generate(10, 1, vocabulary="huge")
    with pytest.raises(DataError, match="chain"):
        generate(10, 1, chain=1.0)
    short, long = generate(2000, 3, chain=0.05), generate(2000, 3, chain=0.5)
    lengths = [df["de"].str.split(" ").list.len().mean() for df in (short, long)]
    assert lengths[0] < lengths[1]


def test_length_distribution(corpus: pl.DataFrame) -> None:
    for lang in ("de", "en"):
        lengths = corpus[lang].str.split(" ").list.len()
        assert lengths.min() <= 4
        assert lengths.max() >= 40
        assert 0.01 <= (lengths > 30).mean() <= 0.15
        assert 5 <= lengths.median() <= 20
        assert lengths.is_between(5, 20).mean() >= 0.6


def test_few_duplicates_and_one_translation_per_sentence(corpus: pl.DataFrame) -> None:
    assert corpus.unique().height / corpus.height > 0.95  # the clean stage drops duplicates
    translations = corpus.group_by("de").agg(pl.col("en").n_unique())
    assert translations["en"].max() == 1


def test_text_form(corpus: pl.DataFrame) -> None:
    for de, en in corpus.head(3000).iter_rows():
        for s in (de, en):
            assert unicodedata.normalize("NFC", s) == s
            assert s[0].isupper() and s[-1] in ".?" and not re.search(r",[,.?]| ,|  ", s)
    german = "".join(corpus["de"].head(3000))
    assert all(ch in german for ch in "äöüß")


def _clause_after(sentence: str, start: int) -> tuple[str, str]:
    """The words up to the next comma or final mark, and what follows that comma."""
    end = min(i for i in (sentence.find(",", start), len(sentence) - 1) if i >= 0)
    return sentence[start:end], sentence[end + 1 :].lstrip()


@pytest.mark.parametrize("conj", ["weil", "dass", "obwohl", "wenn"])
def test_subordinate_clauses_are_verb_final(corpus: pl.DataFrame, conj: str) -> None:
    checked = 0
    for de in corpus["de"]:
        for m in re.finditer(rf", {conj} ", de):
            clause, after = _clause_after(de, m.end())
            last = clause.split()[-1]
            if last not in FINITE_FINAL:  # only a relative clause may interrupt
                assert after.split()[0] in REL_PRONOUNS, (de, clause)
            else:
                checked += 1
    assert checked > 200


def test_verb_second_after_fronted_time(corpus: pl.DataFrame) -> None:
    fronted = 0
    for de in corpus["de"]:
        start = next((t for t in TIME_STARTS if de.startswith(t)), None)
        if start:
            fronted += 1
            assert de[len(start) :].split()[0] in FINITE_V2, de
    assert fronted > 300


def test_fronted_subordinate_clause_inverts(corpus: pl.DataFrame) -> None:
    """Wenn die Katze schläft, spielt der Hund: the main clause starts with its verb."""
    seen = 0
    for de in corpus["de"]:
        if de.startswith(("Weil ", "Wenn ", "Obwohl ", "Bevor ")):
            clause, after = _clause_after(de, 0)
            if after.split()[0] in REL_PRONOUNS | {"dass", "ob"}:
                continue  # an extraposed relative or complement clause comes first
            if clause.split()[-1] in FINITE_FINAL:
                seen += 1
                assert after.split()[0] in FINITE_V2, de
    assert seen > 100


def _determiner_noun_pairs(sentence: str):
    """(article, adjectives, noun readings) for every article-adjectives-noun run."""
    words = re.findall(r"[\w']+|,", sentence)
    for i, word in enumerate(words[:-1]):
        det = word.lower()
        if det not in ENDINGS or (i > 0 and words[i - 1] == ","):  # skip relative pronouns
            continue
        j = i + 1
        while j < len(words) and words[j] in ADJ_FORMS:
            j += 1
        if j < len(words) and words[j] in NOUN_FORMS:
            yield det, words[i + 1 : j], NOUN_FORMS[words[j]]


ADJ_FORMS = {a.stem + e: e for a in lx.load_adjectives() for e in ("e", "en", "er", "es", "em")}
# article -> {(gender, plural): adjective ending} for every reading the article allows
ENDINGS = {
    "das": {(2, False): "e"},
    "dem": {(0, False): "en", (2, False): "en"},
    "des": {(0, False): "en", (2, False): "en"},
    "den": {(0, False): "en", (0, True): "en", (1, True): "en", (2, True): "en"},
    "die": {(1, False): "e", (0, True): "en", (1, True): "en", (2, True): "en"},
    "ein": {(0, False): "er", (2, False): "es"},
    "eine": {(1, False): "e"},
    "einen": {(0, False): "en"},
    "einem": {(0, False): "en", (2, False): "en"},
    "einer": {(1, False): "en"},
}


def test_article_gender_and_adjective_agreement(corpus: pl.DataFrame) -> None:
    checked = 0
    for de in corpus["de"].head(5000):
        for det, adjs, readings in _determiner_noun_pairs(de):
            allowed = {r: e for r, e in ENDINGS[det].items() if r in readings}
            assert allowed, (de, det, readings)
            for adj in adjs:
                assert ADJ_FORMS[adj] in allowed.values(), (de, det, adj)
            checked += 1
    assert checked > 5000


def test_plural_subjects_agree_in_both_languages(corpus: pl.DataFrame) -> None:
    """The dogs run / the dog runs; die Hunde laufen / die Katze läuft."""
    de_sg = {v.forms[2] for v in VERBS} | {de[2] for de, _ in MODALS}
    de_pl = {v.forms[3] for v in VERBS} | {de[3] for de, _ in MODALS}
    english = german = 0
    for de, en in corpus.iter_rows():
        words = en.split()
        if words[0] == "The" and words[1] in EN_NOUNS and words[2] in EN_BASE | EN_3SG:
            assert words[2] in (EN_BASE if EN_NOUNS[words[1]] else EN_3SG), en
            english += 1
        words = de.split()
        readings = {plural for _, plural in NOUN_FORMS.get(words[1], ())}
        if words[0] == "Die" and len(readings) == 1 and words[2] in de_sg | de_pl:
            assert words[2] in (de_pl if readings == {True} else de_sg), de
            german += 1
    assert english > 500 and german > 300


def test_negation_and_numbers_are_translated(corpus: pl.DataFrame) -> None:
    rows = list(corpus.iter_rows())
    assert sum(" nicht" in de for de, _ in rows) > 0.05 * len(rows)
    assert sum(re.search(r"\bkein", de) is not None for de, _ in rows) > 0.01 * len(rows)
    for de, en in rows:
        de_words, en_words = WORD.findall(de.lower()), WORD.findall(en.lower())
        if "nicht" in de_words:
            assert "not" in en_words or "cannot" in en_words, (de, en)
        if any(w.startswith("kein") for w in de_words):
            assert "no" in en_words, (de, en)
        for de_num, en_num in lx.NUMBER_PAIRS:
            assert de_words.count(de_num) == en_words.count(en_num.split()[-1]), (de, en)
    assert sum("zwei" in de for de, _ in rows) > 50
    # the small vocabulary keeps the numerals zwei..sieben only, so each is seen often
    kept = {de for de, _ in lx.NUMBER_PAIRS[:6]}
    used = {w for de, _ in rows for w in WORD.findall(de.lower()) if w in dict(lx.NUMBER_PAIRS)}
    assert used == kept, used


def test_english_articles_and_do_support(corpus: pl.DataFrame) -> None:
    for en in corpus["en"]:
        words = WORD.findall(en.lower())
        for a, nxt in zip(words, words[1:], strict=False):
            if a in ("a", "an"):
                assert (a == "an") == (nxt[0] in "aeiou"), en
        for i, word in enumerate(words[2:], 2):
            if words[i - 1] == "not" and words[i - 2] in ("do", "does"):
                assert word in EN_BASE, en  # do-support: does not see, never does not sees


def test_lexicon_morphology() -> None:
    assert lx.conjugate("sehen", "siehst,sieht") == (
        "sehe",
        "siehst",
        "sieht",
        "sehen",
        "seht",
        "sehen",
    )
    assert lx.conjugate("arbeiten", "")[1:3] == ("arbeitest", "arbeitet")
    assert lx.conjugate("öffnen", "öffnest,öffnet")[4] == "öffnet"
    assert lx.conjugate("sammeln", "")[:3] == ("sammle", "sammelst", "sammelt")
    assert lx.conjugate("tanzen", "")[1] == "tanzt"
    assert lx.english_3sg("tidy up") == "tidies up" and lx.english_3sg("watch TV") == "watches TV"
    assert lx.english_3sg("have") == "has" and lx.english_3sg("play") == "plays"
    assert lx.noun_forms("Junge", "Jungen", 0, "~n") == (
        "Junge",
        "Jungen",
        "Jungen",
        "Jungen",
        "Jungen",
        "Jungen",
    )
    assert lx.noun_forms("Hund", "Hunde", 0, "")[3:] == ("Hunds", "Hunde", "Hunden")
    assert len(lx.load_nouns()) >= 150 and len(VERBS) >= 90
