"""seq2seq.text: normalisation, drop reasons, tokens, vocabularies, ids, reversal."""

from __future__ import annotations

import time
import unicodedata

import polars as pl
import pytest

from seq2seq import text
from seq2seq.vocab import SPECIALS, UNK, Vocab


def normalized(values: list[str | None]) -> list[str | None]:
    frame = pl.DataFrame({"t": values}, schema={"t": pl.String})
    return text.normalize(frame, "t").collect()["t"].to_list()


def reasons(src: list[str], tgt: list[str], *, dedup: bool = True, **kw) -> list[str | None]:
    settings = {"max_len": 5, "max_ratio": 2.0, "lowercase": True} | kw
    frame = pl.LazyFrame({"src": src, "tgt": tgt}, schema=text_schema())
    out = text.clean_frame(frame, dedup=dedup, **settings).collect(engine="streaming")
    return out["reason"].cast(pl.String).to_list()


def text_schema() -> dict:
    return {"src": pl.String, "tgt": pl.String}


# ------------------------------------------------------------------------------ normalisation
def test_nfc_composes_decomposed_umlauts() -> None:
    composed, decomposed = "Kühe über Öl", unicodedata.normalize("NFD", "Kühe über Öl")
    assert composed != decomposed
    assert normalized([composed, decomposed]) == [composed, composed]


def test_nfc_guard_misses_nothing() -> None:
    """Every code point of planes 0-2 alone, after a letter and before a combining mark, and
    Hangul jamo: the guarded NFC equals polars' NFC of every row."""
    cps = [chr(c) for c in range(0x30000) if not 0xD800 <= c < 0xE000]
    samples = cps + [f"a{c}" for c in cps] + [f"{c}\u0301" for c in cps] + ["\u1100\u1161\u11a8"]
    frame = pl.DataFrame({"t": samples})
    out = frame.select(got=text.nfc(pl.col("t")), full=pl.col("t").str.normalize("NFC"))
    assert out.filter(pl.col("got") != pl.col("full")).height == 0
    assert out.filter(pl.col("got") != frame["t"]).height > 1000  # NFC did change many rows


def test_whitespace_collapsed_and_stripped() -> None:
    raw = [" \tEin\t\tHund\u00a0 läuft\n.\u3000 ", "a\u2003b", "   ", "ok"]
    assert normalized(raw) == ["Ein Hund läuft .", "a b", "", "ok"]


def test_control_and_format_characters_removed() -> None:
    raw = ["a\x00b\x07c", "\ufeffHallo\u200b Welt", "Zucker\u00adwatte", "a\u200b \u200bb"]
    assert normalized(raw) == ["abc", "Hallo Welt", "Zuckerwatte", "a b"]


def test_control_removed_before_nfc() -> None:
    # Removing the zero-width space joins "u" and the combining diaeresis: NFC must see that.
    assert normalized(["Ku\u200b\u0308he"]) == ["Kühe"]


def test_null_stays_null() -> None:
    assert normalized([None, "x"]) == [None, "x"]


# ------------------------------------------------------------------------------- drop reasons
def test_each_reason_counted_once_in_fixed_order() -> None:
    src = ["ein hund", "", "a b c d e f", "a", "ein hund", "x y z", "  ", "a b c d e f g"]
    tgt = ["a dog", "x", "a b", "a b c d", "a dog", "x y z", "q", ""]
    assert reasons(src, tgt) == [
        None,
        "empty",
        "over_long",  # 6 tokens > max_len 5 (and a ratio outlier: over_long comes first)
        "ratio",  # (4+1)/(1+1) = 2.5 > 2
        "duplicate",
        None,
        "empty",
        "empty",  # empty target beats the over-long source
    ]


def test_boundaries_are_inclusive() -> None:
    # Exactly max_len tokens is kept; a ratio of exactly max_ratio is kept.
    src, tgt = ["a b c d e", "a b", "a b ."], ["v w x y z", "a b c d e", "a"]
    # (5+1)/(2+1) = 2.0 kept; (3+1)/(1+1) = 2.0 kept
    assert reasons(src, tgt) == [None, None, None]


def test_tokens_count_punctuation() -> None:
    # "Hallo, Welt!" is 4 tokens: over max_len 3.
    assert reasons(["Hallo, Welt!", "Hallo Welt"], ["a b", "a b"], max_len=3) == [
        "over_long",
        None,
    ]


def test_duplicates_only_with_dedup_keeping_first() -> None:
    src, tgt = ["a", "b", "a", "a", "b"], ["x", "y", "x", "z", "y"]
    assert reasons(src, tgt) == [None, None, "duplicate", None, "duplicate"]
    assert reasons(src, tgt, dedup=False) == [None] * 5


def test_duplicates_compare_normalised_text() -> None:
    nfd = unicodedata.normalize("NFD", "Kühe")
    assert reasons(["Kühe", f" {nfd}\t"], ["cows", "cows"]) == [None, "duplicate"]


def test_ratio_outliers_of_repeated_duplicates_are_ratio() -> None:
    assert reasons(["a", "a"], ["a b c d", "a b c d"]) == ["ratio", "ratio"]


def test_ten_megabyte_line_is_over_long_and_fast() -> None:
    huge_words = "Wort " * 2_000_000  # 10 MB, 2 M tokens
    huge_word = "x" * 10_000_000  # 10 MB, one token: caught by the character guard
    start = time.perf_counter()
    got = reasons([huge_words, "ein hund", huge_word], ["a dog", "a dog", "a"], max_len=50)
    assert got == ["over_long", None, "over_long"]
    assert time.perf_counter() - start < 10


def test_token_count_matches_tokens_including_case_oddities() -> None:
    # U+A7D2 / U+A7D4 lower-case into characters that split words differently.
    samples = ["x\ua7d2x", "x\ua7d4x", "Hallo, Welt!", "İstanbul", "d'Artagnan", ""]
    frame = pl.DataFrame({"t": samples})
    for lowercase in (True, False):
        out = frame.select(
            n=text.token_count(pl.col("t"), lowercase=lowercase),
            toks=text.tokens(pl.col("t"), lowercase=lowercase).list.len(),
        )
        assert out["n"].to_list() == out["toks"].to_list()


# ------------------------------------------------------------------------------------ tokens
def test_tokenize_texts_words_and_punctuation() -> None:
    got = text.tokenize_texts(["Hallo, Welt! Es ist 3 Uhr.", " Ku\u0308he\t"], lowercase=True)
    assert got == [["hallo", ",", "welt", "!", "es", "ist", "3", "uhr", "."], ["kühe"]]
    assert text.tokenize_texts(["Hallo Welt"], lowercase=False) == [["Hallo", "Welt"]]


def counts_frame(counts: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"token": list(counts), "count": list(counts.values())},
        schema={"token": pl.String, "count": pl.UInt32},
    )


def test_token_counts() -> None:
    frame = pl.LazyFrame({"src": ["Der Hund, der Hund.", "der"]})
    got = text.token_counts(frame, "src", lowercase=True).collect()
    assert dict(got.iter_rows()) == {"der": 3, "hund": 2, ",": 1, ".": 1}


def test_vocab_min_freq_order_and_specials() -> None:
    counts = counts_frame({"b": 3, "a": 3, "c": 5, "rare": 1, "d": 2})
    vocab = text.vocab_from_counts(counts, min_freq=2, max_size=100)
    assert vocab.itos == (*SPECIALS, "c", "a", "b", "d")  # count desc, then token asc


def test_vocab_max_size_includes_specials() -> None:
    counts = counts_frame({f"w{i:02d}": 100 - i for i in range(20)})
    vocab = text.vocab_from_counts(counts, min_freq=1, max_size=10)
    assert len(vocab) == 10
    assert vocab.itos[4:] == ("w00", "w01", "w02", "w03", "w04", "w05")


def test_token_ids_unknown_to_unk() -> None:
    vocab = Vocab.from_tokens(["hund", "der"])
    frame = pl.DataFrame({"t": [["der", "hund", "katze"], [], ["<pad>"]]})
    out = frame.select(text.token_ids(pl.col("t"), vocab))
    assert out.schema["t"] == pl.List(pl.UInt32)
    # "<pad>" as text is an ordinary (here unknown-to-the-tokeniser) string: it maps by lookup.
    assert out["t"].to_list() == [[5, 4, UNK], [], [0]]


def test_reverse_twice_is_identity() -> None:
    ids = pl.Series("ids", [[1, 2, 3], [], [7]], dtype=pl.List(pl.UInt32))
    once = ids.to_frame().select(text.reverse_ids(pl.col("ids")))["ids"]
    assert once.to_list() == [[3, 2, 1], [], [7]]
    twice = once.to_frame().select(text.reverse_ids(pl.col("ids")))["ids"]
    assert twice.equals(ids)


def test_prepare_source_normalises_tokenises_and_reverses() -> None:
    vocab = Vocab.from_tokens(["der", "hund", "läuft", "."])
    texts = ["Der  Hund la\u0308uft.", "Der Vogel", ""]
    assert text.prepare_source(texts, lowercase=True, reverse=True, vocab=vocab) == [
        [7, 6, 5, 4],
        [UNK, 4],
        [],
    ]
    # Not lower-cased: "Der" and "Hund" are unknown.
    assert text.prepare_source(texts[:1], lowercase=False, reverse=False, vocab=vocab) == [
        [UNK, UNK, 6, 7]
    ]


@pytest.mark.parametrize("lowercase", [True, False])
def test_prepare_source_equals_token_ids_of_tokenize_texts(lowercase: bool) -> None:
    texts = ["Ein Hund, zwei Hunde!", "ÄÖÜ äöü ß", "\tx  y\u00a0z "]
    toks = text.tokenize_texts(texts, lowercase=lowercase)
    vocab = Vocab.from_tokens(sorted({t for sent in toks for t in sent}))
    got = text.prepare_source(texts, lowercase=lowercase, reverse=False, vocab=vocab)
    assert got == [vocab.encode(sent) for sent in toks]
    assert all(UNK not in ids for ids in got)
