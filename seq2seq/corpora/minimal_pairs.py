"""Minimal pairs for the paper's Figure 2, from the sample corpus's lexicon (so every word is in
the vocabulary of a model trained on it).

Each group holds four German phrases made of exactly the same words, for a verb and two
masculine nouns X and Y whose case forms coincide (so the words stay the same):

    Der Mann sieht den Hund.    man sees dog    subject first
    Den Hund sieht der Mann.    man sees dog    object first
    Der Hund sieht den Mann.    dog sees man    subject first
    Den Mann sieht der Hund.    dog sees man    object first

Swapping the nouns changes the meaning (who sees whom); fronting the object keeps it, because
German marks the roles by case (der/den, der/dem) rather than by position. The sample lexicon has
no passive voice (no "werden", no participles, no "von"), so this object fronting, which the
corpus generator itself produces ("Den Hund sieht der Mann."), stands in for the paper's
active/passive rewrites: a change of form that keeps the meaning. A bag of words cannot tell the
four apart; an encoder that understands the sentence groups them by meaning, not by order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seq2seq.corpora import sample
from seq2seq.corpora.sample_lexicon import Noun, Verb
from seq2seq.errors import DataError

SUBJECT_FIRST, OBJECT_FIRST = "subject first", "object first"
# (verb infinitive, noun X, noun Y): verbs with an accusative (t) or dative (d) object, all in
# the "small" vocabulary; the nouns masculine, with the same nominative and object forms
DEFAULT_GROUPS = (
    ("sehen", "Mann", "Hund"),
    ("helfen", "Vater", "Vogel"),
    ("folgen", "Hund", "Vater"),
)
CASE_OF_FRAME = {"t": 1, "d": 2}  # the object's case: accusative, dative


@dataclass(frozen=True)
class Phrase:
    text: str  # "Der Mann sieht den Hund."
    group: str  # the four phrases with the same words: "sehen Mann Hund"
    meaning: str  # who does what to whom, in English: "man sees dog"
    order: str  # SUBJECT_FIRST or OBJECT_FIRST


def _verb(lex: dict, name: str) -> tuple[Verb, int]:
    for frame, case in CASE_OF_FRAME.items():
        for verb in lex["frames"].get(frame, ()):
            if verb.inf == name and not verb.prefix:
                return verb, case
    raise DataError(
        f"minimal pairs: {name!r} is not a verb with a plain accusative or dative object in this "
        "vocabulary",
        f"use one of {', '.join(v.inf for f in CASE_OF_FRAME for v in lex['frames'].get(f, ()))}",
    )


def _noun(lex: dict, name: str, case: int) -> Noun:
    for noun in lex["pool"]["PA"]:
        if noun.de[0] == name:
            if noun.gender != 0 or noun.de[case] != noun.de[0]:
                break
            return noun
    raise DataError(
        f"minimal pairs: {name!r} is not a masculine person or animal of this vocabulary whose "
        "object form equals its nominative",
        "use e.g. Mann, Vater, Hund or Vogel",
    )


def _group(lex: dict, verb_name: str, x_name: str, y_name: str) -> list[Phrase]:
    verb, case = _verb(lex, verb_name)
    x, y = _noun(lex, x_name, case), _noun(lex, y_name, case)
    for noun, role in ((x, verb.subj), (x, verb.obj), (y, verb.subj), (y, verb.obj)):
        if not set(noun.classes) & set(role):
            raise DataError(
                f"minimal pairs: {noun.de[0]} cannot be subject and object of {verb.inf}",
                "pick nouns the verb accepts both ways round",
            )
    nom, obj, fin = sample.DEF[0][0], sample.DEF[case][0], verb.forms[2]
    phrases = []
    for subj, other in ((x, y), (y, x)):
        meaning = f"{subj.en_sg} {verb.en3} {other.en_sg}"
        for order, words in (
            (SUBJECT_FIRST, [nom, subj.de[0], fin, obj, other.de[0]]),
            (OBJECT_FIRST, [obj, other.de[0], fin, nom, subj.de[0]]),
        ):
            text = " ".join(words) + "."
            group = f"{verb.inf} {x.de[0]} {y.de[0]}"
            phrases.append(Phrase(text[0].upper() + text[1:], group, meaning, order))
    return phrases


def phrases(
    vocabulary: str = "small", groups: Sequence[tuple[str, str, str]] = DEFAULT_GROUPS
) -> list[Phrase]:
    """Four phrases per (verb, noun X, noun Y) group (see the module docstring), in order:
    X-subject first, X-object first, Y-subject first, Y-object first. Every word comes from the
    sample lexicon's `vocabulary`; a verb or noun that does not fit is a DataError."""
    lex = sample._lexicon(vocabulary)
    return [p for verb, x, y in groups for p in _group(lex, verb, x, y)]
