"""Detokenisation: the model's word/punctuation tokens back into natural text for sacreBLEU.

The tokeniser splits `\\w+|[^\\w\\s]` (every punctuation mark is its own token), so scoring
space-joined tokens against raw references splits "don't", "t-shirt" and "3.5" apart and costs
dozens of BLEU points. `detokenize` undoes the split with a few rules that hold for English,
German and French:

- no space before . , ! ? ; : ) ] } % and closing quotes; none after ( [ { and opening quotes;
- an apostrophe between two words joins them ("don ' t" -> "don't", "l ' homme" -> "l'homme"),
  except after a word in s before a non-clitic ("dogs ' owner" -> "dogs' owner");
- a hyphen or slash between two words joins them ("t - shirt" -> "t-shirt"), but a hyphen
  before "und"/"and"/... hangs on the left word ("obst - und" -> "obst- und");
  (so single quotes used as quotation marks between words are glued on too: a known limit);
- . , : between two numbers join them ("3 . 5" -> "3.5", "10 : 30" -> "10:30");
- straight quotes alternate between opening and closing; „ « ‚ open, » closes, and “ closes
  an open „ (German) but opens otherwise (English).
"""

from __future__ import annotations

from collections.abc import Sequence

NO_SPACE_BEFORE = frozenset(".,!?;:)]}%…")
NO_SPACE_AFTER = frozenset("([{¿¡$#@")
APOSTROPHES = frozenset("'’")
WORD_JOINERS = frozenset("-/")
NUMBER_JOINERS = frozenset(".,:")
EN_CLITICS = frozenset({"s", "t", "re", "ve", "ll", "d", "m"})
# "obst- und gemüsehändler", "pre- and post-war": a hyphen before these hangs on the left word
SUSPENDED_BEFORE = frozenset({"und", "oder", "bzw", "sowie", "and", "or", "et", "ou"})
ALWAYS_OPEN = {"„": "“", "«": "»", "‚": "‘", "‹": "›"}  # opener -> its usual closer
ALWAYS_CLOSE = frozenset("»›”")


def _is_word(token: str | None) -> bool:
    return token is not None and (token[0].isalnum() or token[0] == "_" or len(token) > 1)


def _is_number(token: str | None) -> bool:
    return token is not None and token.isdigit()


class _Joiner:
    """Accumulates tokens, deciding for each whether a space goes before it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.glue_next = False  # the next token attaches without a space
        self.open_quotes: list[str] = []  # stack of opening quote characters

    def add(self, token: str, space: bool, glue_next: bool = False) -> None:
        if self.parts and space and not self.glue_next:
            self.parts.append(" ")
        self.parts.append(token)
        self.glue_next = glue_next

    def quote(self, token: str) -> None:
        """A quotation mark: close the innermost open quote it matches, else open one."""
        if token in ALWAYS_OPEN:
            self.open_quotes.append(token)
            self.add(token, True, glue_next=True)
            return
        matches = self.open_quotes and (
            self.open_quotes[-1] == token or ALWAYS_OPEN.get(self.open_quotes[-1]) == token
        )
        if matches or token in ALWAYS_CLOSE:
            if matches:
                self.open_quotes.pop()
            self.add(token, False)
        else:
            self.open_quotes.append(token)
            self.add(token, True, glue_next=True)


def _apostrophe(j: _Joiner, token: str, prev: str | None, nxt: str | None) -> None:
    if prev is not None and nxt is not None and _is_word(prev) and _is_word(nxt):
        if nxt in EN_CLITICS or not prev.endswith("s") or len(prev) == 1:
            j.add(token, False, glue_next=True)  # don't, dog's, l'homme, aujourd'hui, s'il
        else:
            j.add(token, False)  # dogs' owner
    elif _is_word(prev) and not (j.open_quotes and j.open_quotes[-1] == token):
        j.add(token, False)  # a trailing possessive: "the dogs'"
    else:
        j.quote(token)


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens (lower-cased words and single punctuation marks) -> one natural-text string."""
    j = _Joiner()
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok in NUMBER_JOINERS and _is_number(prev) and _is_number(nxt):
            j.add(tok, False, glue_next=True)
        elif tok in NO_SPACE_BEFORE:
            j.add(tok, False)
        elif tok in NO_SPACE_AFTER:
            j.add(tok, True, glue_next=True)
        elif tok in APOSTROPHES:
            _apostrophe(j, tok, prev, nxt)
        elif tok == "-" and _is_word(prev) and nxt in SUSPENDED_BEFORE:
            j.add(tok, False)
        elif tok in WORD_JOINERS and _is_word(prev) and _is_word(nxt):
            j.add(tok, False, glue_next=True)
        elif tok in {'"', "“", "”", "‘", *ALWAYS_OPEN, *ALWAYS_CLOSE}:
            j.quote(tok)
        else:
            j.add(tok, True)
    return "".join(j.parts)
