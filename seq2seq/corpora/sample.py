"""The generated German-English `sample` corpus: real words, real grammar, no network.

`generate(num_pairs, seed)` returns a polars frame with columns `de` and `en`, one sentence pair a
row, identical for the same arguments on every machine (all randomness comes from one
`random.Random(seed)`). The grammar is small and compositional so a small LSTM learns it:

- German main clauses are verb-second (with inversion after a fronted time phrase, a fronted
  masculine object or a fronted subordinate clause); subordinate and relative clauses are
  verb-final (dass, ob, weil, wenn, obwohl, während, bevor); separable verbs split in main
  clauses (ruft ... an) and modals send the infinitive to the end (kann ... sehen).
- Articles, possessives, "kein" and adjectives agree in gender, number and case (nominative,
  accusative, dative after prepositions, genitive possessors); weak masculine nouns (den Jungen),
  dative plurals (den Hunden) and contractions (im, ins, zum, zur, am) are applied.
- English gets 3rd-person -s, do-support in negation and questions, a/an, irregular plurals.
Sentences chain clauses with und/aber/denn and subordinators, so lengths run from 3 to 40+ words.
Pairs come in chunks of CHUNK, each from its own seeded stream, so `workers` > 1 generates large
corpora in parallel processes with exactly the same result.
"""

from __future__ import annotations

import multiprocessing
import random
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache

import polars as pl

from seq2seq.corpora import sample_lexicon as lx
from seq2seq.errors import DataError

# Rows: case (0 nom, 1 acc, 2 dat, 3 gen); columns: slot (0 masc, 1 fem, 2 neut, 3 plural).
DEF = (("der", "die", "das", "die"), ("den", "die", "das", "die"),
       ("dem", "der", "dem", "den"), ("des", "der", "des", "der"))  # fmt: skip
DER_END = (("er", "e", "es", "e"), ("en", "e", "es", "e"),
           ("em", "er", "em", "en"), ("es", "er", "es", "er"))  # fmt: skip
EIN_END = (("", "e", "", "e"), ("en", "e", "", "e"),
           ("em", "er", "em", "en"), ("es", "er", "es", "er"))  # fmt: skip
WEAK = (("e", "e", "e", "en"), ("en", "e", "e", "en"),
        ("en", "en", "en", "en"), ("en", "en", "en", "en"))  # fmt: skip
MIXED = (("er", "e", "es", "en"), ("en", "e", "es", "en"),
         ("en", "en", "en", "en"), ("en", "en", "en", "en"))  # fmt: skip
STRONG = (("er", "e", "es", "e"), ("en", "e", "es", "e"),
          ("em", "er", "em", "en"), ("en", "er", "en", "er"))  # fmt: skip
CONTRACT = {("in", "dem"): "im", ("in", "das"): "ins", ("an", "dem"): "am",
            ("zu", "dem"): "zum", ("zu", "der"): "zur", ("von", "dem"): "vom"}  # fmt: skip
PRONOUNS = (("ich", "I", 0), ("du", "you", 1), ("er", "he", 2), ("sie", "she", 2),
            ("wir", "we", 3), ("ihr", "you all", 4), ("sie", "they", 5))  # fmt: skip
BE = (("am", "are", "is", "are", "are", "are"), ("am not", "are not", "is not") + ("are not",) * 3)
# German forms; English: ("aux", forms, negated forms, tail) or ("do", base, 3rd person).
CAN, SHOULD = (("can",) * 6, ("cannot",) * 6), (("should",) * 6, ("should not",) * 6)
MODALS = (
    (("kann", "kannst", "kann", "können", "könnt", "können"), ("aux", *CAN, "")),
    (("soll", "sollst", "soll", "sollen", "sollt", "sollen"), ("aux", *SHOULD, "")),
    (("darf", "darfst", "darf", "dürfen", "dürft", "dürfen"), ("aux", *BE, "allowed to")),
    (("muss", "musst", "muss", "müssen", "müsst", "müssen"), ("do", "have to", "has to")),
    (("will", "willst", "will", "wollen", "wollt", "wollen"), ("do", "want to", "wants to")),
)
# (German, English, verb-final?, comma before in English?)
CONNECTORS = (("und", "and", False, False), ("aber", "but", False, True),
              ("denn", "for", False, True), ("weil", "because", True, False),
              ("wenn", "when", True, False), ("obwohl", "although", True, False),
              ("während", "while", True, False), ("bevor", "before", True, False))  # fmt: skip
FRONT_CONJ = CONNECTORS[3:]
IN, ON, NEXT = ("in", 2, "in"), ("auf", 2, "on"), ("neben", 2, "next to")
PLACES = ((IN, "L"), (("vor", 2, "in front of"), "L"), (("hinter", 2, "behind"), "L"),
          (NEXT, "L"), (ON, "S"), (("unter", 2, "under"), "S"), (NEXT, "S"), (ON, "W"))  # fmt: skip
THING_PLACES = ((IN, "L"), (ON, "S"), (("unter", 2, "under"), "S"), (NEXT, "S"))
DIRECTIONS = ((("in", 1, "into"), "L"), (("zu", 2, "to"), "L"), (("durch", 1, "through"), "L"),
              (("über", 1, "across"), "W"))  # fmt: skip
# (verb flag, chance, options): companion, beneficiary, direction, location (TeKaMoLo order)
ADJUNCT_PPS = (("c", 0.15, ((("mit", 2, "with"), "PA"), (("ohne", 1, "without"), "PA"))),
               ("b", 0.15, ((("für", 1, "for"), "P"),)),
               ("g", 0.35, DIRECTIONS), ("l", 0.25, PLACES))  # fmt: skip
FRAMES = (
    ("i",) * 25 + ("t",) * 36 + ("d",) * 6 + ("di",) * 8 + ("s",) * 7 + ("q",) * 2 + ("c",) * 16
)
CHUNK = 50_000  # pairs per independently seeded stream
VOWEL_START = re.compile(r"\ba (?=[aeiou])")
COMMAS = re.compile(r",+")


@dataclass(slots=True)
class NP:
    """A rendered noun phrase: German article and rest apart (for im/zum), English, agreement."""

    art: str
    body: str
    en: str
    person: int  # 0-5: ich du er/sie/es wir ihr sie
    slot: int  # 0 masc, 1 fem, 2 neut, 3 plural
    noun: lx.Noun | None = None  # None for a pronoun

    @property
    def de(self) -> str:
        return f"{self.art} {self.body}" if self.art else self.body


@dataclass(slots=True)
class Clause:
    """One clause before word order: German main/subordinate and English are rendered from it."""

    subj: NP
    fin: str  # finite German verb (second in a main clause, last in a subordinate one)
    bracket: str  # end of a main clause: separable prefix or infinitive after a modal
    final: str  # verb cluster ending a subordinate clause ("anruft", "sehen kann")
    head: tuple  # English verb group: ("do", base, 3rd singular) or ("aux", forms, negated, tail)
    neg: bool  # "nicht" in German, do-support negation in English
    time: tuple[str, str] | None = None
    iobj: NP | None = None
    obj: NP | None = None
    post_de: str = ""  # manner adverb, prepositional phrases, predicate
    post_en: str = ""
    ext_de: str = ""  # extraposed relative clause or complement clause (German)
    comp_en: str = ""


class Pools(dict):
    """Class letters ("PA") -> the nouns of those classes, filled on first use."""

    def __init__(self, nouns: tuple[lx.Noun, ...]) -> None:
        super().__init__()
        self.nouns = nouns

    def __missing__(self, classes: str) -> tuple[lx.Noun, ...]:
        self[classes] = tuple(n for n in self.nouns if set(n.classes) & set(classes))
        return self[classes]


# vocabulary -> (nouns per semantic class, verbs per frame, adjectives, numerals); 0 keeps all
VOCABULARIES = {"small": (6, 6, 15, 6), "full": (0, 0, 0, 0)}
CHAIN = 0.15  # default chance of chaining one more clause (und/aber/denn, subordinators)


def _first_per(items: tuple, key, k: int) -> tuple:  # noqa: ANN001 - any attribute getter
    """The first `k` items of each `key` group, in lexicon order (all of them when k is 0)."""
    if not k:
        return items
    taken: dict = {}
    kept = []
    for item in items:
        group = key(item)
        if taken.get(group, 0) < k:
            taken[group] = taken.get(group, 0) + 1
            kept.append(item)
    return tuple(kept)


@cache
def _lexicon(vocabulary: str = "small") -> dict:
    """Word lists indexed for fast sampling: pools by semantic class, adjectives by noun.

    `vocabulary` "small" keeps the first 6 nouns of each semantic class, 6 verbs of each frame,
    15 adjectives and 6 numerals (zwei..sieben): every content word is seen often, so a small
    model learns the grammar in minutes; "full" keeps the whole lexicon."""
    if vocabulary not in VOCABULARIES:
        raise DataError(
            f"sample corpus: unknown vocabulary {vocabulary!r}",
            f"use one of {', '.join(VOCABULARIES)}",
        )
    per_class, per_frame, n_adjs, n_numbers = VOCABULARIES[vocabulary]
    nouns = _first_per(lx.load_nouns(), lambda n: n.classes[0], per_class)
    verbs = _first_per(lx.load_verbs(), lambda v: v.frame, per_frame)
    adjs = lx.load_adjectives()[: n_adjs or None]

    def fits(a: str, b: str) -> bool:
        return bool(set(a) & set(b))

    return {
        "pool": Pools(nouns),
        "numbers": lx.NUMBER_PAIRS[: n_numbers or None],
        "frames": {f: tuple(v for v in verbs if v.frame == f) for f in sorted(set(FRAMES))},
        "adjs": {n: tuple(a for a in adjs if fits(a.classes, n.classes)) for n in nouns},
        "pred": {c: tuple(a for a in adjs if c in a.classes) for c in "PATCFDRYVLSW"},
        "subj_rel": {
            n: tuple(v for v in verbs if v.frame in ("i", "t", "c") and fits(n.classes, v.subj))
            for n in nouns
        },
        "obj_rel": {
            n: tuple(v for v in verbs if v.frame == "t" and fits(n.classes, v.obj)) for n in nouns
        },
    }


def verb_group_en(head: tuple, person: int, neg: bool, question: bool) -> tuple[str, str]:
    """English (auxiliary before the subject, verb group after it): do-support, -s, am/is/are."""
    if head[0] == "do":
        _, base, third = head
        do = "does" if person == 2 else "do"
        if question:
            return do, base
        return "", f"{do} not {base}" if neg else third if person == 2 else base
    _, forms, negated, tail = head
    if question:
        return forms[person], tail
    return "", f"{(negated if neg else forms)[person]} {tail}".rstrip()


def render_main(c: Clause, front: str = "subj", vorfeld: str | None = None) -> str:
    """German verb-second clause; `vorfeld` (a fronted clause, or "" for a question) wins."""
    fields = {
        "subj": c.subj.de,
        "time": c.time[0] if c.time else "",
        "obj": c.obj.de if c.obj else "",
    }
    first = fields.pop(front) if vorfeld is None else vorfeld
    rest = [fields.get("subj", ""), fields.get("time", ""), c.iobj.de if c.iobj else ""]
    rest += [fields.get("obj", ""), "nicht" if c.neg else "", c.post_de, c.bracket]
    return " ".join(w for w in [first, c.fin, *rest] if w) + c.ext_de


def render_sub(c: Clause, conj: str) -> str:
    """German verb-final clause introduced by `conj` (a conjunction or relative pronoun)."""
    words = [conj, c.subj.de, c.time[0] if c.time else "", c.iobj.de if c.iobj else ""]
    words += [c.obj.de if c.obj else "", "nicht" if c.neg else "", c.post_de, c.final]
    return " ".join(w for w in words if w) + c.ext_de


def render_en(c: Clause, front_time: bool = False, question: bool = False) -> str:
    aux, verbs = verb_group_en(c.head, c.subj.person, c.neg, question)
    time = c.time[1] if c.time else ""
    words = [time if front_time else "", aux, c.subj.en, verbs, c.iobj.en if c.iobj else ""]
    words += [c.obj.en if c.obj else "", c.post_en, "" if front_time else time, c.comp_en]
    return " ".join(w for w in words if w)


class Grammar:
    """Draws sentence pairs from one `random.Random`; each method is one rule of the grammar."""

    def __init__(self, seed: int | str, vocabulary: str = "small", chain: float = CHAIN) -> None:
        self.rnd = random.Random(seed).random
        self.lex = _lexicon(vocabulary)
        self.chain = chain
        self.pools = self.lex["pool"]

    def pick(self, seq):  # noqa: ANN001, ANN201 - any sequence
        return seq[int(self.rnd() * len(seq))]

    def noun_phrase(self, classes: str, case: int, neg: bool = False, mods: bool = True) -> NP:
        """A noun with determiner, 0-2 agreeing adjectives and maybe a genitive or a PP."""
        noun = self.pick(self.pools[classes])
        plural = self.rnd() < 0.3
        slot = 3 if plural else noun.gender
        art, en_det, ends = self.determiner(case, slot, plural, neg)
        adjs = self.adjectives(noun)
        forms = noun.de  # nom, acc, dat, gen singular; plural; dative plural
        word = (forms[5] if case == 2 else forms[4]) if plural else forms[case]
        body, en = word, noun.en_pl if plural else noun.en_sg
        if adjs:
            body = " ".join([a.stem + ends[case][slot] for a in adjs] + [body])
            en = " ".join([a.en for a in adjs] + [en])
        r = self.rnd() if mods else 1.0
        if r < 0.04 and art == DEF[case][slot] and noun.classes[0] != "P":
            owner = self.noun_phrase("P", 3, mods=False)  # das Auto des Mannes: the man's car
            mark = "'" if owner.slot == 3 and owner.en.endswith("s") else "'s"
            return NP(
                art, f"{body} {owner.de}", f"{owner.en}{mark} {en}", 2 + 3 * plural, slot, noun
            )
        if r < 0.1:
            where = (
                (("mit", 2, "with"), "T") if noun.classes[0] in "PA" else self.pick(THING_PLACES)
            )
            de, en_pp = self.prep_phrase(*where)
            body, en = f"{body} {de}", f"{en} {en_pp}"
        return NP(art, body, f"{en_det} {en}" if en_det else en, 2 + 3 * plural, slot, noun)

    def determiner(self, case: int, slot: int, plural: bool, neg: bool) -> tuple[str, str, tuple]:
        """German and English determiner and the adjective endings the German one selects."""
        r = self.rnd() * (0.63 if case == 3 else 1.0)  # genitive owners: der, dieser, mein
        if r < 0.45:
            return DEF[case][slot], "the", WEAK
        if r < 0.53:
            return "dies" + DER_END[case][slot], "these" if plural else "this", WEAK
        if r < 0.63:
            stem, en = self.pick((("mein", "my"), ("dein", "your"), ("unser", "our")))
            return stem + EIN_END[case][slot], en, MIXED
        if plural and not neg and r < 0.78:
            de, en = self.pick(self.lex["numbers"])  # zwei große Hunde: strong endings
            return de, en, STRONG
        if plural and not neg and r < 0.84:
            return ("viele", "viele", "vielen", "vieler")[case], "many", STRONG
        if neg:
            return "kein" + EIN_END[case][slot], "no", MIXED
        if plural:
            return "", "", STRONG
        return "ein" + EIN_END[case][slot], "a", MIXED

    def adjectives(self, noun: lx.Noun) -> Sequence[lx.Adjective]:
        r = self.rnd()
        if r > 0.35:
            return ()
        options = self.lex["adjs"][noun]
        first, second = self.pick(options), self.pick(options)
        if r > 0.07 or second.rank == first.rank:
            return [first]
        return [first, second] if first.rank < second.rank else [second, first]

    def prep_phrase(self, prep: tuple[str, int, str], classes: str) -> tuple[str, str]:
        """("im großen Park", "in the big park"): in dem -> im, zu der -> zur, ..."""
        de_prep, case, en_prep = prep
        np = self.noun_phrase(classes, case, mods=self.rnd() < 0.25)
        short = CONTRACT.get((de_prep, np.art)) if np.slot != 3 else None
        return (f"{short} {np.body}" if short else f"{de_prep} {np.de}"), f"{en_prep} {np.en}"

    def subject(self, verb: lx.Verb, depth: int) -> NP:
        if "P" in verb.subj and self.rnd() < 0.2:
            de, en, person = self.pick(PRONOUNS)
            return NP("", de, en, person, 3 if person > 2 else 0)
        np = self.noun_phrase(verb.subj, 0)
        if depth < 2 and self.rnd() < 0.1:
            rel_de, rel_en = self.relative(np, subject=True)
            np.body, np.en = f"{np.body}, {rel_de},", f"{np.en} {rel_en}"
        return np

    def relative(self, head: NP, subject: bool) -> tuple[str, str]:
        """A verb-final relative clause on `head`: der den Ball fängt / den die Frau sieht."""
        verb = self.pick(self.lex["subj_rel" if subject else "obj_rel"][head.noun])
        pron = DEF[0 if subject else 1][head.slot]
        if subject:
            who = "who" if head.noun is not None and head.noun.classes[0] == "P" else "that"
            c = self.clause(3, verb, NP("", pron, who, head.person, head.slot, head.noun))
            return render_sub(c, ""), render_en(c)
        c = self.clause(3, verb, gap=True)
        return render_sub(c, pron), f"that {render_en(c)}"

    def verb_group(self, verb: lx.Verb, subj: NP) -> tuple[str, str, str, tuple]:
        """German finite verb, main-clause bracket, subordinate cluster; English verb group."""
        person, animate = subj.person, subj.noun is None or subj.noun.classes[0] in "PA"
        if animate and self.rnd() < 0.15:  # modals only for people and animals
            de_forms, en = self.pick(MODALS)
            fin = de_forms[person]
            head: tuple
            if en[0] == "aux":
                head = ("aux", en[1], en[2], f"{en[3]} {verb.en}".lstrip())
            else:
                head = ("do", f"{en[1]} {verb.en}", f"{en[2]} {verb.en}")
            return fin, verb.inf, f"{verb.inf} {fin}", head
        fin = verb.forms[person]
        head = ("aux", *BE, "") if verb.frame == "c" else ("do", verb.en, verb.en3)
        return fin, verb.prefix, verb.prefix + fin, head

    def clause(self, depth: int, verb=None, subj=None, gap=False, neg=None) -> Clause:  # noqa: ANN001
        """One clause: verb, subject, objects or complement by the verb's frame, adjuncts."""
        if verb is None:
            frame = self.pick(FRAMES)
            verb = self.pick(self.lex["frames"]["t" if depth >= 2 and frame in "sq" else frame])
        subj = subj or self.subject(verb, depth)
        neg = self.rnd() < 0.18 if neg is None else neg
        c = Clause(subj, *self.verb_group(verb, subj), neg)
        frame = verb.frame
        if frame in ("t", "di") and not gap:
            c.obj = self.noun_phrase(verb.obj, 1, neg)
            c.neg = neg and not c.obj.art.startswith("kein")  # keinen Hund: no dog
        if frame in ("d", "di"):
            c.iobj = self.noun_phrase(verb.iobj or verb.obj, 2, neg and frame == "d")
            c.neg = c.neg and not c.iobj.art.startswith("kein")
        if frame in ("s", "q"):
            comp = self.clause(depth + 1)
            conj, en_conj = ("dass", "that") if frame == "s" else ("ob", "whether")
            c.ext_de, c.comp_en = f", {render_sub(comp, conj)},", f"{en_conj} {render_en(comp)}"
        self.adjuncts(c, verb)
        if c.obj and depth < 2 and not (c.post_de or c.time) and self.rnd() < 0.12:
            rel_de, rel_en = self.relative(c.obj, subject=self.rnd() < 0.5)
            c.ext_de, c.obj.en = f", {rel_de},", f"{c.obj.en} {rel_en}"
        return c

    def adjuncts(self, c: Clause, verb: lx.Verb) -> None:
        """Predicate (copula), time, manner and prepositional phrases, in TeKaMoLo order."""
        rnd = self.rnd
        de: list[str] = []
        en: list[str] = []
        if verb.frame == "c":
            cls = c.subj.noun.classes[0] if c.subj.noun else "P"
            if cls in "LSW" or rnd() < 0.75:
                adj = self.pick(self.lex["pred"][cls])
                very = rnd() < 0.2
                de, en = (["sehr", adj.de], ["very", adj.en]) if very else ([adj.de], [adj.en])
            else:
                pp = self.prep_phrase(*self.pick(PLACES))
                de, en = [pp[0]], [pp[1]]
        if rnd() < 0.2:
            c.time = self.pick(lx.TIME_PAIRS)
        flags = verb.flags
        if "m" in flags and not c.neg and rnd() < 0.2:
            adv = self.pick(lx.MANNER_PAIRS)
            de.append(adv[0])
            en.append(adv[1])
        for flag, chance, options in ADJUNCT_PPS:
            if flag in flags and rnd() < chance:
                pp = self.prep_phrase(*self.pick(options))
                de.append(pp[0])
                en.append(pp[1])
                if flag in "gl":
                    break  # one place per clause: direction or location
        c.post_de, c.post_en = " ".join(de), " ".join(en)

    def sentence(self) -> tuple[str, str]:
        """One pair: a question, or main clauses chained with und/aber/denn and subordinators."""
        r = self.rnd()
        if r < 0.05:
            c = self.clause(1, neg=False)
            return finish(render_main(c, vorfeld=""), render_en(c, question=True), "?")
        if r < 0.15:  # Wenn die Katze schläft, spielt der Hund.
            conj, en_conj, _, _ = self.pick(FRONT_CONJ)
            sub, main = self.clause(1), self.clause(1)
            de = render_main(main, vorfeld=render_sub(sub, conj) + ",")
            en = f"{en_conj} {render_en(sub)}, {render_en(main)}"
        else:
            main = self.clause(0)
            front = self.front(main)
            de, en = render_main(main, front), render_en(main, front == "time")
        after_sub = False  # a subordinate clause must be closed by a comma before "und"
        for _ in range(6):
            if self.rnd() > self.chain:
                break
            conj, en_conj, verb_final, en_comma = self.pick(CONNECTORS)
            c = self.clause(1)
            if verb_final:
                de, en = f"{de}, {render_sub(c, conj)}", f"{en} {en_conj} {render_en(c)}"
            else:
                front, comma = self.front(c), "," if en_comma or after_sub else ""
                de = f"{de}{comma} {conj} {render_main(c, front)}"
                en = f"{en}{comma} {en_conj} {render_en(c, front == 'time')}"
            after_sub = verb_final
        return finish(de, en, ".")

    def front(self, c: Clause) -> str:
        """What fills the German prefield: subject, time phrase or a masculine object."""
        r = self.rnd()
        if c.time and r < 0.45:
            return "time"  # Heute sieht der Mann den Hund.
        if c.obj and c.obj.slot == 0 and not c.ext_de and r > 0.8:
            return "obj"  # Den Hund sieht der Mann. (unambiguous only in the masculine)
        return "subj"


def finish(de: str, en: str, mark: str) -> tuple[str, str]:
    """Commas tidied, a -> an, first letter capitalised, final punctuation."""
    if ",," in de:
        de = COMMAS.sub(",", de)
    de = de.rstrip(",") + mark
    en = VOWEL_START.sub("an ", en) + mark
    return de[0].upper() + de[1:], en[0].upper() + en[1:]


def _chunk(
    seed: int, index: int, size: int, vocabulary: str = "small", chain: float = CHAIN
) -> tuple[list[str], list[str]]:
    """Pairs of chunk `index`: its own stream, seeded by a string (SHA-512, platform-free)."""
    grammar = Grammar(f"sample/{seed}/{index}", vocabulary, chain)
    pairs = [grammar.sentence() for _ in range(size)]
    return [de for de, _ in pairs], [en for _, en in pairs]


def generate(
    num_pairs: int,
    seed: int,
    workers: int = 1,
    *,
    vocabulary: str = "small",
    chain: float = CHAIN,
) -> pl.DataFrame:
    """`num_pairs` German-English sentence pairs, the same for the same arguments.

    `vocabulary`: "small" (the default: a few words per class, quick to learn) or "full";
    `chain`: the chance of chaining one more clause, which sets the length distribution (0.15:
    median 9 words, 1% over 30, up to 60+; 0.32: median 10, 5% over 30).

    Returns a frame with Utf8 columns `de` and `en` (NFC text, one sentence pair a row). Pairs
    come in chunks of CHUNK, each from its own seeded stream, so `workers` > 1 spreads chunks
    over processes (spawned: call it under `if __name__ == "__main__"`) with the same result.
    """
    if num_pairs < 0:
        raise DataError(f"sample corpus: num_pairs is {num_pairs}", "ask for 0 or more pairs")
    if workers < 1:
        raise DataError(f"sample corpus: workers is {workers}", "use 1 or more workers")
    sizes = [min(CHUNK, num_pairs - start) for start in range(0, num_pairs, CHUNK)]
    if not 0 <= chain < 1:
        raise DataError(f"sample corpus: chain is {chain}", "use a chance in [0, 1)")
    _lexicon(vocabulary)  # an unknown vocabulary fails here, before any worker starts
    jobs = [(seed, i, size, vocabulary, chain) for i, size in enumerate(sizes)]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # fork is unsafe with polars' threads
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            parts = list(pool.map(_chunk, *zip(*jobs, strict=True)))
    else:
        parts = [_chunk(*job) for job in jobs]
    de = [s for part in parts for s in part[0]]
    en = [s for part in parts for s in part[1]]
    return pl.DataFrame({"de": de, "en": en}, schema={"de": pl.Utf8, "en": pl.Utf8})
