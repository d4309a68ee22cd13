"""Text preprocessing as polars expressions over whole columns: cleaning, tokenisation,
vocabularies, token ids and source reversal.

The pipeline stages (clean, tokenize, reverse) and `prepare_source` (used by translate) build
their queries from the same expression functions, so a new sentence gets exactly the
training-time preprocessing. No per-row Python callbacks: everything runs inside polars and
streams (`scan_parquet` ... `sink_parquet`).

Definitions (also in params.yaml):
- normalisation: remove control and format characters (Unicode Cc other than whitespace, Cf:
  NUL, zero-width spaces, BOM, soft hyphens, bidi marks), collapse every run of whitespace
  (tabs, newlines, NBSP, ideographic space, ...) to one space, strip both ends, Unicode NFC.
- tokens: the matches of ``\\w+|[^\\w\\s]`` (words and single punctuation marks) in the
  lower-cased text when `lowercase`, else in the text as is.
- drop reasons, each row counted under the first that applies, in this order:
  ``empty`` (either side empty after normalisation), ``over_long`` (more than `max_len` tokens
  on either side, or more than `max_len * MAX_CHARS_PER_TOKEN` characters, a cheap guard that
  spares the tokeniser pathological lines), ``ratio`` (max(n_src+1, n_tgt+1) /
  min(n_src+1, n_tgt+1) > `max_ratio`, token counts n), ``duplicate`` (the same (src, tgt) pair
  seen earlier in the split; only when `dedup`).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from seq2seq.errors import DataError
from seq2seq.vocab import SPECIALS, UNK, Vocab

TOKEN_PATTERN = r"\w+|[^\w\s]"
DROP_REASONS = ("empty", "over_long", "ratio", "duplicate")
REASON_DTYPE = pl.Enum(DROP_REASONS)
MAX_CHARS_PER_TOKEN = 50

# Control (Cc) characters other than whitespace, and format (Cf) characters.
_INVISIBLE = r"[[\p{Cc}\p{Cf}]--\s]"
# A run of 2+ whitespace characters, or one that is not a plain space (a lone space stays).
_WHITESPACE = r"\s{2,}|[\s--[ ]]"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's training data was made: what translating for it must repeat.

    Written by the reverse stage as `prepared/meta.json` (the one truth), copied into every
    checkpoint. `max_source_tokens`: the longest training source, in tokens.
    """

    source_lang: str
    target_lang: str
    lowercase: bool
    reverse_source: bool
    max_source_tokens: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> Preprocessing:
        missing = [k for k in cls.__dataclass_fields__ if k not in raw]
        if missing:
            raise DataError(
                f"{where} does not say how its data was prepared (missing {', '.join(missing)})",
                "rebuild it with this version's data stages (`dvc repro reverse`, then train)",
            )
        return cls(
            str(raw["source_lang"]),
            str(raw["target_lang"]),
            bool(raw["lowercase"]),
            bool(raw["reverse_source"]),
            int(raw["max_source_tokens"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _nfc_sensitive() -> str:
    """A regex class of every character that NFC might change or merge with its neighbour.

    A string without any of them is already NFC, so `str.normalize` (costly: it has no
    quick-check) runs only on the rare strings that contain one. The set: marks (\\p{M}, from
    polars' own Unicode tables), characters with a non-zero combining class or that NFC maps
    elsewhere, second halves of canonical pairs (e.g. Hangul jamo), from `unicodedata`. Only
    planes 0-2 hold such characters.
    """
    cps: set[int] = set()
    for cp in range(0x30000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if unicodedata.combining(ch) or unicodedata.normalize("NFC", ch) != ch:
            cps.add(cp)
        parts = unicodedata.decomposition(ch).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            cps.add(int(parts[1], 16))
    cps |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    ranges: list[str] = []
    ordered = sorted(cps)
    start = prev = ordered[0]
    for cp in [*ordered[1:], -1]:
        if cp == prev + 1:
            prev = cp
            continue
        ranges.append(f"\\x{{{start:X}}}" + (f"-\\x{{{prev:X}}}" if prev > start else ""))
        start = prev = cp
    return r"[\p{M}" + "".join(ranges) + "]"


def squeeze(text: pl.Expr) -> pl.Expr:
    """Utf8 -> Utf8: invisible characters removed, whitespace runs collapsed, ends stripped."""
    return text.str.replace_all(_INVISIBLE, "").str.replace_all(_WHITESPACE, " ").str.strip_chars()


def nfc(text: pl.Expr) -> pl.Expr:
    """Utf8 -> Utf8 in Unicode NFC. Pass a column: `text` is evaluated three times."""
    # Only rows that NFC can change reach `normalize`; the others pass it a (free) null.
    needs_nfc = text.str.contains(_nfc_sensitive())
    return pl.when(needs_nfc).then(text).str.normalize("NFC").fill_null(text)


def normalize(frame: pl.LazyFrame | pl.DataFrame, *columns: str) -> pl.LazyFrame:
    """The cleaning normalisation of `columns` (Utf8), in place: `squeeze`, then `nfc`.

    Controls go first (removing one may join a letter and a combining mark), NFC last. Two
    steps so that each expression reads a materialised column instead of recomputing it.
    """
    squeezed = frame.lazy().with_columns(squeeze(pl.col(c)).alias(c) for c in columns)
    return squeezed.with_columns(nfc(pl.col(c)).alias(c) for c in columns)


def _cased(text: pl.Expr, lowercase: bool) -> pl.Expr:
    return text.str.to_lowercase() if lowercase else text


def tokens(text: pl.Expr, *, lowercase: bool) -> pl.Expr:
    """Utf8 -> List[Utf8]: word and punctuation tokens (`TOKEN_PATTERN`)."""
    return _cased(text, lowercase).str.extract_all(TOKEN_PATTERN)


def token_count(text: pl.Expr, *, lowercase: bool) -> pl.Expr:
    """Utf8 -> UInt32: the number of `tokens` of the text, without building the lists."""
    return _cased(text, lowercase).str.count_matches(TOKEN_PATTERN)


def _capped_count(text: pl.Expr, *, max_len: int, lowercase: bool) -> pl.Expr:
    """Token count, or null for texts over the character guard (they skip the tokeniser)."""
    fits = text.str.len_chars() <= max_len * MAX_CHARS_PER_TOKEN
    return token_count(pl.when(fits).then(text), lowercase=lowercase)


def drop_reason(
    src: pl.Expr,
    tgt: pl.Expr,
    n_src: pl.Expr,
    n_tgt: pl.Expr,
    *,
    max_len: int,
    max_ratio: float,
    dedup: bool,
) -> pl.Expr:
    """Normalised pairs and their token counts (null: over the character guard) ->
    Enum(DROP_REASONS): the first reason to drop the pair, or null to keep it."""
    longest = pl.max_horizontal(n_src, n_tgt)
    ratio = (longest + 1).cast(pl.Float64) / (pl.min_horizontal(n_src, n_tgt) + 1)
    empty = (src.str.len_bytes().fill_null(0) == 0) | (tgt.str.len_bytes().fill_null(0) == 0)
    reason = (
        pl.when(empty)
        .then(pl.lit("empty", REASON_DTYPE))
        .when(n_src.is_null() | n_tgt.is_null() | (longest > max_len))
        .then(pl.lit("over_long", REASON_DTYPE))
        .when(ratio > max_ratio)
        .then(pl.lit("ratio", REASON_DTYPE))
    )
    if dedup:
        # Identical pairs share the earlier reasons, so only first copies of kept pairs remain.
        duplicate = ~pl.struct(src.alias("s"), tgt.alias("t")).is_first_distinct()
        reason = reason.when(duplicate).then(pl.lit("duplicate", REASON_DTYPE))
    return reason.otherwise(pl.lit(None, REASON_DTYPE))


def clean_frame(
    pairs: pl.LazyFrame, *, max_len: int, max_ratio: float, lowercase: bool, dedup: bool
) -> pl.LazyFrame:
    """(src, tgt) raw -> (src, tgt) normalised, plus `reason` (null: keep). Row order kept."""
    normed = normalize(pairs.select("src", "tgt"), "src", "tgt")
    counted = normed.with_columns(
        _capped_count(pl.col(c), max_len=max_len, lowercase=lowercase).alias(f"_n_{c}")
        for c in ("src", "tgt")
    )
    reason = drop_reason(
        pl.col("src"),
        pl.col("tgt"),
        pl.col("_n_src"),
        pl.col("_n_tgt"),
        max_len=max_len,
        max_ratio=max_ratio,
        dedup=dedup,
    )
    return counted.select("src", "tgt", reason.alias("reason"))


def token_counts(texts: pl.LazyFrame, column: str, *, lowercase: bool) -> pl.LazyFrame:
    """Frequencies of the tokens of `column`: (token Utf8, count UInt32), unordered."""
    toks = texts.select(tokens(pl.col(column), lowercase=lowercase).alias("token"))
    return toks.explode("token").drop_nulls("token").group_by("token").len("count")


def vocab_from_counts(counts: pl.DataFrame, *, min_freq: int, max_size: int) -> Vocab:
    """Specials, then tokens seen >= min_freq times by count desc, token asc; len <= max_size."""
    kept = (
        counts.filter((pl.col("count") >= min_freq) & ~pl.col("token").is_in(SPECIALS))
        .sort(["count", "token"], descending=[True, False])
        .head(max(max_size - len(SPECIALS), 0))
    )
    return Vocab.from_tokens(kept["token"].to_list())


def token_ids(toks: pl.Expr, vocab: Vocab) -> pl.Expr:
    """List[Utf8] -> List[UInt32]: vocabulary ids, unknown tokens -> UNK (1).

    The lookup is a cast to an Enum whose categories are the vocabulary in id order (a hash
    lookup per token, cheaper than `replace_strict`); unknown tokens cast to null.
    """
    as_enum = toks.cast(pl.List(pl.Enum(vocab.itos)), strict=False)
    return as_enum.list.eval(pl.element().to_physical().cast(pl.UInt32).fill_null(UNK))


def reverse_ids(ids: pl.Expr) -> pl.Expr:
    """List[UInt32] -> List[UInt32]: each list in reverse order (Sutskever et al., 2014)."""
    return ids.list.reverse()


def tokenize_texts(texts: Sequence[str], *, lowercase: bool) -> list[list[str]]:
    """Sentences -> tokens, with the cleaning normalisation applied first."""
    frame = normalize(pl.DataFrame({"text": list(texts)}, schema={"text": pl.String}), "text")
    return frame.select(tokens(pl.col("text"), lowercase=lowercase)).collect()["text"].to_list()


def prepare_source(
    texts: Sequence[str], *, lowercase: bool, reverse: bool, vocab: Vocab
) -> list[list[int]]:
    """New source sentences -> id lists exactly as training saw them (no specials).

    Normalisation, tokenisation, id mapping and (when `reverse`) reversal, from the same
    expressions as the clean, tokenize and reverse stages. Nothing is dropped: an empty
    sentence gives an empty list.
    """
    frame = normalize(pl.DataFrame({"text": list(texts)}, schema={"text": pl.String}), "text")
    ids = token_ids(tokens(pl.col("text"), lowercase=lowercase), vocab)
    return frame.select(reverse_ids(ids) if reverse else ids).collect()["text"].to_list()
