"""Batched greedy and beam search: invariants and a tiny model trained to BLEU 100."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from seq2seq.metrics import corpus_bleu
from seq2seq.model import Seq2Seq
from seq2seq.search import Ensemble, beam_search, greedy_decode, translate_ids
from seq2seq.vocab import EOS, PAD, SOS, Vocab

SRC_WORDS = "ein mann eine frau hund katze sieht läuft rot blau groß klein der die im park"
TGT_WORDS = "a man a woman dog cat sees runs red blue big small the the in park"
SRC_WORDS, TGT_WORDS = SRC_WORDS.split(), TGT_WORDS.split()  # noqa: SIM905


def toy_pairs(n: int = 20, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """n distinct word-for-word pairs of 2-8 tokens (the target drops one word on odd lengths)."""
    rng = random.Random(seed)
    pairs, seen = [], set()
    while len(pairs) < n:
        idx = tuple(rng.randrange(len(SRC_WORDS)) for _ in range(rng.randint(2, 8)))
        if idx in seen:
            continue
        seen.add(idx)
        tgt = [TGT_WORDS[i] for i in idx]
        pairs.append(([SRC_WORDS[i] for i in idx], tgt[:-1] if len(idx) % 2 else tgt))
    return pairs


def pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(r) for r in rows])
    out = torch.full((len(rows), int(lens.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, lens


def train_tiny(src: list[list[int]], tgt: list[list[int]], v_src: int, v_tgt: int, steps: int):
    """Teacher-forced full-batch Adam; returns the model in eval mode."""
    torch.manual_seed(0)
    model = Seq2Seq(v_src, v_tgt, emb_dim=32, hidden_dim=64, num_layers=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    s, s_lens = pad(src)
    t, _ = pad([[SOS, *y, EOS] for y in tgt])
    for _ in range(steps):
        # teacher forcing over the whole target at once (dropout 0, so this equals decode_step)
        h_c = model.encode(s, s_lens)
        out, _ = model.decoder(model.tgt_emb(t[:, :-1]), h_c)  # (B, T-1, H)
        logits = model.out(out)  # (B, T-1, V)
        loss = F.cross_entropy(logits.transpose(1, 2), t[:, 1:], ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core box thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    pairs = toy_pairs()
    sv = Vocab.from_tokens(dict.fromkeys(SRC_WORDS))
    tv = Vocab.from_tokens(dict.fromkeys(TGT_WORDS))
    src = [sv.encode(s)[::-1] for s, _ in pairs]  # reversed source, as stored
    tgt = [tv.encode(t) for _, t in pairs]
    model = train_tiny(src, tgt, len(sv), len(tv), steps=150)
    return model, src, tgt, tv


def test_trained_tiny_model_reaches_bleu_100_greedy_and_beam(toy):
    model, src, tgt, tv = toy
    refs = [" ".join(tv.decode(y)) for y in tgt]
    for beam in (1, 3):
        out = translate_ids(model, src, beam_size=beam, batch_size=7, max_len_ratio=2.0)
        hyps = [" ".join(tv.decode(y)) for y in out]
        assert corpus_bleu(hyps, refs, lowercase=True).score == pytest.approx(100.0)
        assert out == tgt  # exact ids, in input order despite length-sorted batches of 7


def test_beam_size_1_equals_greedy(toy):
    model, src, _, _ = toy
    s, lens = pad(src)
    for max_len in (3, 20, lens + 1):
        g = greedy_decode(model, s, lens, max_len)
        b = beam_search(model, s, lens, beam_size=1, max_len=max_len, length_penalty=1.0)
        assert g == b


def test_beam_size_1_equals_greedy_untrained_model():
    torch.manual_seed(3)
    model = Seq2Seq(30, 12, emb_dim=8, hidden_dim=16, num_layers=2, dropout=0.3)
    src = torch.randint(4, 30, (9, 6))
    lens = torch.tensor([6, 1, 3, 5, 2, 6, 4, 4, 1])
    g = greedy_decode(model, src, lens, 15)
    b = beam_search(model, src, lens, beam_size=1, max_len=15, length_penalty=0.6)
    assert g == b
    assert all(len(y) <= 15 and EOS not in y and SOS not in y for y in g)
    assert model.training  # the decoders restore the caller's mode


def test_translation_does_not_depend_on_batch_mates(toy):
    model, src, _, _ = toy
    batched_g = translate_ids(model, src, beam_size=1, batch_size=len(src))
    batched_b = translate_ids(model, src, beam_size=4, batch_size=4 * len(src))  # one batch
    for i, s in enumerate(src):
        assert translate_ids(model, [s], beam_size=1, batch_size=1) == [batched_g[i]]
        assert translate_ids(model, [s], beam_size=4, batch_size=1) == [batched_b[i]]


def _recorder(seen: list[int]):
    return lambda n, **_: seen.append(n)


def test_batch_size_counts_decoder_rows(toy):
    """Greedy batches hold batch_size sentences, beam batches batch_size // beam_size."""
    model, src, _, _ = toy
    for beam, sizes in ((1, [6, 6]), (3, [2] * 6), (7, [1] * 12)):
        seen: list[int] = []
        translate_ids(model, src[:12], beam_size=beam, batch_size=6, progress=_recorder(seen))
        assert seen[2:] == sizes  # after progress(0, total=...) and progress(empties)


def test_per_sentence_max_len_and_outputs_have_no_specials(toy):
    model, src, tgt, _ = toy
    s, lens = pad(src)
    limits = torch.tensor([2 if i % 2 else 50 for i in range(len(src))])
    for out in (
        greedy_decode(model, s, lens, limits),
        beam_search(model, s, lens, beam_size=3, max_len=limits, length_penalty=1.0),
    ):
        for i, y in enumerate(out):
            assert y == (tgt[i][:2] if i % 2 else tgt[i])
            assert not {SOS, EOS, PAD} & set(y)


class _Chain(torch.nn.Module):
    """A decoder whose next-token distribution depends only on the previous token:
    after <sos>: <eos> .5, A .5; after A: B .7, <eos> .3; after B: <eos> .9, A .1.
    Raw log-probability prefers [] (.5) to [A, B] (.315); per token (alpha 1) [A, B] wins:
    log(.315) / 3 = -0.385 > log(.5) / 1 = -0.693."""

    A, B, V = 4, 5, 6

    def encode(self, src, lens):
        z = torch.zeros(1, src.size(0), 1)
        return z, z.clone()

    def decode_step(self, y, state):
        probs = torch.full((y.numel(), self.V), 1e-9)
        table = {SOS: {EOS: 0.5, self.A: 0.5}, self.A: {self.B: 0.7, EOS: 0.3},
                 self.B: {EOS: 0.9, self.A: 0.1}}  # fmt: skip
        for i, prev in enumerate(y.tolist()):
            for tok, p in table.get(prev, {EOS: 1.0}).items():
                probs[i, tok] = p
        return probs.log(), state


@pytest.mark.parametrize(("alpha", "best"), [(0.0, []), (1.0, [4, 5]), (2.0, [4, 5])])
def test_length_penalty_decides_between_short_and_long_hypotheses(alpha, best):
    src, lens = pad([[7, 7], [8]])
    out = beam_search(_Chain(), src, lens, beam_size=2, max_len=6, length_penalty=alpha)
    assert out == [best, best]


def test_empty_sources_skip_the_model_and_keep_order(toy):
    model, src, tgt, _ = toy
    calls = []

    def progress(n=1, total=None, description=None):
        calls.append((n, total))

    out = translate_ids(model, [[], src[0], [], src[1]], beam_size=2, progress=progress)
    assert out == [[], tgt[0], [], tgt[1]]
    assert calls[0] == (0, 4) and sum(n for n, _ in calls) == 4

    class Exploding(torch.nn.Module):
        def encode(self, *a):
            raise AssertionError("model touched")

    assert translate_ids(Exploding(), [[], []], beam_size=3) == [[], []]


def test_bad_beam_size(toy):
    model, src, _, _ = toy
    s, lens = pad(src)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, s, lens, beam_size=0, max_len=5)


def score_hypothesis(model, src, lens, hyp: list[int], alpha: float, limit: int) -> float:
    """Length-normalised log-probability of `hyp` (+<eos> unless cut at `limit`), step by step."""
    state = model.encode(src, lens)
    y, total = torch.tensor([SOS]), 0.0
    targets = hyp if len(hyp) == limit else [*hyp, EOS]
    for tok in targets:
        logits, state = model.decode_step(y, state)
        logits[:, [PAD, SOS]] = float("-inf")
        total += torch.log_softmax(logits, -1)[0, tok].item()
        y = torch.tensor([tok])
    return total / len(targets) ** alpha


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_as_wide_as_the_search_space_finds_the_exact_best(alpha):
    """V = 4 outputs (<unk>, <eos>, a, b), 3 steps: 40 hypotheses; a beam of 40 sees them all."""
    torch.manual_seed(1)
    model = Seq2Seq(10, 6, emb_dim=8, hidden_dim=8, num_layers=1, dropout=0.0)
    model.out.weight.data.mul_(40)  # sharpen: make the choice of hypothesis matter
    model.eval()
    src, lens = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    outputs = [1, 4, 5]
    hyps = [[]] + [[a] for a in outputs]
    hyps += [[a, b] for a in outputs for b in outputs]
    hyps += [[a, b, c] for a in outputs for b in outputs for c in outputs]
    with torch.no_grad():
        scores = [score_hypothesis(model, src, lens, h, alpha, 3) for h in hyps]
    best = hyps[max(range(len(hyps)), key=scores.__getitem__)]
    found = beam_search(model, src, lens, beam_size=40, max_len=3, length_penalty=alpha)
    assert found == [best]
    greedy = greedy_decode(model, src, lens, 3)[0]
    assert scores[hyps.index(greedy)] <= max(scores)


@pytest.mark.parametrize("every", [1, 2, 3, 50])
def test_results_do_not_depend_on_the_sync_interval(toy, monkeypatch, every):
    """Finished rows leave the greedy batch at each check; any interval gives the same ids."""
    import seq2seq.search as search

    model, src, tgt, _ = toy
    s, lens = pad(src)
    limits = torch.tensor([3 + i % 7 for i in range(len(src))])
    monkeypatch.setattr(search, "CHECK_EVERY", every)
    monkeypatch.setattr(search, "CPU_CHECK_EVERY", every)
    assert greedy_decode(model, s, lens, 20) == tgt
    expected = [y[: int(n)] for y, n in zip(tgt, limits, strict=True)]
    assert greedy_decode(model, s, lens, limits) == expected
    assert beam_search(model, s, lens, beam_size=3, max_len=limits) == expected


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("beam", [2, 4])
def test_done_sentences_leaving_the_beam_batch_change_no_result(monkeypatch, every, beam):
    """An untrained model's hypotheses end at scattered steps, so sentences leave the batch one
    by one: each gets what it gets when all stay until the batch is done (fixed shapes)."""
    import seq2seq.search as search

    model = _untrained(3, 2)
    src, lens = _sources()
    limits = torch.tensor([2, 9, 4, 12, 1, 7, 5, 3, 10])
    monkeypatch.setattr(search, "CPU_CHECK_EVERY", every)
    found = {}
    for compact in (True, False):
        monkeypatch.setattr(search, "COMPACT_BEAMS", compact)
        found[compact] = beam_search(model, src, lens, beam_size=beam, max_len=limits)
    assert found[True] == found[False]
    assert len({len(h) for h in found[True]}) > 3  # the sentences did end at different steps
    assert all(len(h) <= n for h, n in zip(found[True], limits.tolist(), strict=True))


# ----------------------------------------------------------------------------------- ensembles
def _untrained(seed: int, layers: int) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(30, 12, emb_dim=8, hidden_dim=16, num_layers=layers, dropout=0.2)
    model.out.weight.data.mul_(20)  # sharpen: hypotheses differ clearly in score
    return model.eval()


def _sources() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(7)
    return torch.randint(4, 30, (9, 6)), torch.tensor([6, 1, 3, 5, 2, 6, 4, 4, 1])


@pytest.mark.parametrize("members", [1, 2])
def test_ensemble_of_copies_equals_the_single_model(toy, members):
    """An ensemble of one model, or of two identical copies, decodes and scores like it."""
    import copy

    for model, (src, lens), limit in (
        (toy[0], pad(toy[1]), 20),
        (_untrained(3, 2), _sources(), 8),
    ):
        ens = Ensemble([copy.deepcopy(model) for _ in range(members)])
        assert greedy_decode(ens, src, lens, limit) == greedy_decode(model, src, lens, limit)
        beams = beam_search(model, src, lens, beam_size=3, max_len=limit, length_penalty=1.0)
        assert beam_search(ens, src, lens, beam_size=3, max_len=limit, length_penalty=1.0) == beams
        with torch.no_grad():
            for i, hyp in enumerate(beams):
                one = (src[i : i + 1], lens[i : i + 1])
                expected = score_hypothesis(model, *one, hyp, 1.0, limit)
                assert score_hypothesis(ens, *one, hyp, 1.0, limit) == pytest.approx(expected)
    ids = translate_ids(Ensemble([toy[0]] * members), toy[1], beam_size=4, batch_size=8)
    assert ids == toy[2]  # batched over the corpus, in input order


def test_ensemble_averages_log_probabilities_and_beam_finds_its_best():
    """Two different members (1 and 2 layers): the step output is the mean of their
    log_softmax, and a beam as wide as the search space finds the best under that average."""
    a, b = _untrained(5, 1), _untrained(6, 2)
    ens = Ensemble([a, b])
    src, lens = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    y = torch.tensor([SOS])
    with torch.no_grad():
        got, _ = ens.decode_step(y, ens.encode(src, lens))
        mean = sum(torch.log_softmax(m.decode_step(y, m.encode(src, lens))[0], -1) for m in (a, b))
        assert torch.allclose(got, mean / 2)
        outputs = [1, *range(4, 12)]
        hyps = [[]] + [[x] for x in outputs] + [[x, z] for x in outputs for z in outputs]
        scores = [score_hypothesis(ens, src, lens, h, 1.0, 2) for h in hyps]
        alone = [[score_hypothesis(m, src, lens, h, 1.0, 2) for h in hyps] for m in (a, b)]
    best = hyps[max(range(len(hyps)), key=scores.__getitem__)]
    assert beam_search(ens, src, lens, beam_size=len(hyps), max_len=2) == [best]
    for own in alone:  # the average chose what neither member would have chosen alone
        assert best != hyps[max(range(len(hyps)), key=own.__getitem__)]


def test_ensemble_loss_of_one_equals_the_model_and_bad_members_are_refused(toy):
    model, src, tgt, _ = toy
    s, s_lens = pad(src)
    t, t_lens = pad([[SOS, *y, EOS] for y in tgt])
    tf = [True] * (t.size(1) - 1)
    with torch.no_grad():
        single, n = model(s, s_lens, t, t_lens, tf)
        both, n2 = Ensemble([model, model])(s, s_lens, t, t_lens, tf)
    assert n2 == n and both.item() == pytest.approx(single.item(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher-forced only"):
        Ensemble([model])(s, s_lens, t, t_lens, [False] * len(tf))
    with pytest.raises(ValueError, match="vocabulary sizes"):
        Ensemble([model, Seq2Seq(5, 6, emb_dim=4, hidden_dim=4, num_layers=1, dropout=0.0)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


@pytest.mark.parametrize("vocab", [50, 6])
def test_beam_step_ranks_as_a_full_log_softmax_would(vocab):
    """_BeamState.step ranks only each beam's best 2K logits; its new beams, parents, tokens
    and scores equal a ranking of all K x V candidates (score + log_softmax), also at step 0
    (one row a sentence) and when V < 2K."""
    from seq2seq.search import _BeamState

    b, k, steps = 3, 4, 4
    g = torch.Generator().manual_seed(vocab)
    limits = torch.full((b,), steps)
    beam = _BeamState(b, k, steps, limits, 1.0, torch.device("cpu"))
    scores = torch.full((b, k), float("-inf"))
    scores[:, 0] = 0.0
    for t in range(steps - 1):
        logits = torch.randn(b * k if t else b, vocab, generator=g) * 3
        logp = torch.log_softmax(logits, -1).view(b, -1, vocab)
        cand = (scores.unsqueeze(-1) + logp).view(b, -1)  # all K x V (step 0: broadcast)
        top, idx = cand.topk(min(2 * k, k * vocab), dim=-1)
        alive = top.masked_fill(idx % vocab == EOS, float("-inf")).topk(k, dim=-1)
        origin, tokens = beam.step(t, logits.clone())
        want_parent = idx.gather(1, alive.indices) // vocab
        want_origin = (want_parent + torch.arange(b).unsqueeze(1) * k).view(-1)
        assert origin.tolist() == want_origin.tolist()
        assert tokens.tolist() == (idx.gather(1, alive.indices) % vocab).view(-1).tolist()
        torch.testing.assert_close(beam.scores, alive.values, rtol=1e-6, atol=1e-6)
        scores = alive.values
