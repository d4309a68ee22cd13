"""Batched greedy and beam-search decoding, and `translate_ids` over a whole corpus.

Both decoders run on whole batches (beam search as (B*K, ...) tensors, joeynmt style; its
first step as (B, ...), since a sentence's K beams start from one state) and return token ids
without <sos>/<eos>, in input order. A hypothesis ends at <eos>; one that
reaches its length limit first is cut there. `max_len` counts decoding steps (the <eos> step
included), so an output has at most `max_len` tokens; it is an int or a per-sentence (B,) tensor.

Host syncs: on an accelerator the loops keep everything on the device and look at "all
finished?" only every `CHECK_EVERY` (8) steps, so the GPU runs ahead; the price is up to 7 wasted
steps. On the CPU a check costs nothing, so it happens every `CPU_CHECK_EVERY` (1) step.
At each check finished rows (greedy) and done sentences with their K beams (beam search) leave
the batch, so the tail of a batch decodes only what is still running (see benchmarks/README.md).

<pad> and <sos> are never generated. Beam scores: alive hypotheses are ranked by their summed
log-probabilities; a finished one is scored `logprob / len**length_penalty`, where `len` counts
its tokens including <eos> (length_penalty=0: raw log-probability; 1: per-token average). As in
fairseq, <eos> is accepted only from the top `beam_size` candidates of a step, so beam size 1 is
exactly greedy. A sentence stops once it holds `beam_size` finished hypotheses and none of its
alive ones scores better at the current length (Hugging Face's `early_stopping=False` rule), or
at its limit.

`Ensemble` wraps several models as one (the average of their log-probabilities) for the same
decoders; decoder states may be nested tuples of (L, B, H) tensors (one (h, c) per member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.defaults import DEFAULT_BATCH_ROWS, DEFAULT_LENGTH_PENALTY, DEFAULT_MAX_LEN_RATIO
from seq2seq.vocab import EOS, PAD, SOS

VOCAB_SIZES = ("src_vocab_size", "tgt_vocab_size")

CHECK_EVERY = 8  # steps between "all finished?" host syncs on an accelerator
CPU_CHECK_EVERY = 1  # ... and on the CPU, where a check is free
COMPACT_BEAMS = True  # done sentences leave a beam batch at each check (False: they stay until
# the whole batch is done, fixed shapes; benchmarks/decode.py measures both)


def _check_every(device: torch.device) -> int:
    return CPU_CHECK_EVERY if device.type == "cpu" else CHECK_EVERY


def _limits(max_len: int | Tensor, batch: int, device: torch.device) -> tuple[Tensor, int]:
    """Per-sentence step limits (B,) >= 1 on `device`, and their maximum (one host sync)."""
    if isinstance(max_len, Tensor):
        limits = max_len.to(device=device, dtype=torch.long).reshape(batch).clamp(min=1)
    else:
        limits = torch.full((batch,), max(1, int(max_len)), dtype=torch.long, device=device)
    return limits, int(limits.max()) if batch else 0


class _EvalMode:
    """`with _EvalMode(model):` eval mode and no autograd, restoring the training flag after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


class Ensemble(nn.Module):
    """Several models decoding as one: the average of the members' log-probabilities.

    It offers what the decoders use (`encode`, `decode_step`), so greedy and beam search run
    unchanged on it, batched: `encode` gives the tuple of the members' states, `decode_step` the
    mean of the members' log_softmax (B, V), which the searches treat as logits (beam search
    renormalises it; an ensemble of one scores exactly like its member). Members may differ in
    depth, width or dropout; they must share the vocabularies (their sizes are checked here,
    the tokens by the caller). `forward` is the teacher-forced loss of the renormalised
    average, with `Seq2Seq.forward`'s signature and tf_mask all True, so perplexity works too.
    It starts in eval mode, and puts its members in eval mode.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        sizes = {
            tuple((getattr(m, "args", None) or {}).get(k) for k in VOCAB_SIZES) for m in members
        }
        if len(sizes) > 1:
            raise ValueError(f"ensemble members differ in vocabulary sizes: {sorted(sizes)}")
        self.members = nn.ModuleList(members)
        self.eval()  # for inference: the members too (the decoders restore this mode after)

    def _each(self) -> list[Any]:
        return list(self.members)

    @contextmanager
    def inference_table(self, rows: int) -> Iterator[None]:
        """Each member's `inference_table` (where it has one) for the duration."""
        with ExitStack() as stack:
            for member in self._each():
                if hasattr(member, "inference_table"):
                    stack.enter_context(member.inference_table(rows))
            yield

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Any, ...]:
        """src (B, S), src_lens (B,) -> one decoder state per member."""
        return tuple(m.encode(src, src_lens) for m in self._each())

    def decode_step(self, y_prev: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple]:
        """y_prev (B,) -> the members' mean log-probabilities (B, V), fp32, and their states."""
        logps, states = [], []
        for member, own in zip(self._each(), state, strict=True):
            logits, own = member.decode_step(y_prev, own)
            logps.append(torch.log_softmax(logits.float(), dim=-1))
            states.append(own)
        return torch.stack(logps).mean(0), tuple(states)

    def forward(
        self, src: Tensor, src_lens: Any, tgt: Tensor, tgt_lens: Any, tf_mask: Any
    ) -> tuple[Tensor, int]:
        """Summed cross-entropy (fp32) of tgt (B, T) = `<sos> y <eos>` PAD-padded, teacher
        forced, and the number of target tokens: Seq2Seq.forward for an ensemble."""
        if not all(bool(flag) for flag in tf_mask):
            raise ValueError("an ensemble is scored teacher-forced only (tf_mask all True)")
        state = self.encode(src, torch.as_tensor(src_lens))
        total = torch.zeros((), device=tgt.device)
        for t in range(tgt.size(1) - 1):
            logp, state = self.decode_step(tgt[:, t], state)
            gold = tgt[:, t + 1]  # PAD after a sentence's <eos>: ignored
            step = F.nll_loss(logp.log_softmax(-1), gold, ignore_index=PAD, reduction="sum")
            total = total + step
        return total, int((torch.as_tensor(tgt_lens) - 1).sum())


def _ban_specials(logits: Tensor) -> Tensor:
    """logits (N, V) with <pad> and <sos> made impossible: they are never valid outputs."""
    logits[:, PAD] = float("-inf")
    logits[:, SOS] = float("-inf")
    return logits


def _select(state: Any, index: Tensor) -> Any:
    """Rows `index` of a decoder state: (L, N, H) tensors, or (nested) tuples of them."""
    if isinstance(state, Tensor):
        return state.index_select(1, index)
    return tuple(_select(s, index) for s in state)


def _to_lists(tokens: Tensor, lengths: Tensor) -> list[list[int]]:
    """tokens (B, T), lengths (B,) -> ragged Python lists (one device->host copy)."""
    rows, lens = tokens.tolist(), lengths.tolist()
    return [row[:n] for row, n in zip(rows, lens, strict=True)]


def greedy_decode(
    model: Any, src: Tensor, src_lens: Tensor, max_len: int | Tensor
) -> list[list[int]]:
    """Greedy decoding of a batch: src (B, S) padded ids, src_lens (B,) -> B lists of ids.

    Each row takes the arg-max token per step until <eos> or its limit. At every check (one
    host sync) the finished rows leave the batch, so long tails run on small batches.
    """
    batch, device = src.size(0), src.device
    limits, steps = _limits(max_len, batch, device)
    every = _check_every(device)
    with _EvalMode(model):
        state = model.encode(src, src_lens)
        y = torch.full((batch,), SOS, dtype=torch.long, device=device)
        tokens = torch.full((batch, max(steps, 1)), PAD, dtype=torch.long, device=device)
        lengths = limits.clone()  # output length: position of <eos>, else the limit
        rows = torch.arange(batch, device=device)  # original index of each row still decoding
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        for t in range(steps):
            logits, state = model.decode_step(y, state)  # (n, V)
            y = _ban_specials(logits).argmax(-1)  # (n,)
            tokens[rows, t] = y
            ended = (y == EOS) & ~done
            lengths[rows] = torch.where(ended, t, lengths[rows])
            done = done | ended | (limits[rows] <= t + 1)
            if (t + 1) % every == 0:
                keep = (~done).nonzero().squeeze(1)  # the one host sync
                if keep.numel() == 0:
                    break
                if keep.numel() < rows.numel():
                    rows, y, done = rows[keep], y[keep], done[keep]
                    state = _select(state, keep)
    return _to_lists(tokens, lengths)


def beam_search(
    model: Any,
    src: Tensor,
    src_lens: Tensor,
    *,
    beam_size: int,
    max_len: int | Tensor,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
) -> list[list[int]]:
    """Beam search over a batch: src (B, S), src_lens (B,) -> the best hypothesis per sentence.

    State and scores live as (B*K, ...) / (B, K) tensors; finished hypotheses are kept in a
    (B, K, T) store ranked by their length-normalised score (see the module docstring). At
    every check (one host sync) the done sentences leave the batch with their best finished
    hypothesis, so the tail of a batch decodes only the sentences still searching.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    batch, k, device = src.size(0), beam_size, src.device
    limits, steps = _limits(max_len, batch, device)
    every = _check_every(device)
    out_tokens = torch.full((batch, max(steps, 1)), PAD, dtype=torch.long, device=device)
    out_lens = torch.zeros(batch, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # original index of each sentence still searching
    beams = torch.arange(k, device=device)
    with _EvalMode(model):
        # step 0 runs one row a sentence: its K beams would hold the same state and <sos>
        state = model.encode(src, src_lens)  # (L, B, H) tensors
        beam = _BeamState(batch, k, max(steps, 1), limits, length_penalty, device)
        y = torch.full((batch,), SOS, dtype=torch.long, device=device)
        for t in range(steps):
            logits, state = model.decode_step(y, state)  # (B*K, V); (B, V) at step 0
            origin, y = beam.step(t, _ban_specials(logits.float()))  # parent rows, tokens (B*K,)
            state = _select(state, origin if t else origin // k)  # step 0: (B, ...) -> (B*K, ...)
            if (t + 1) % every == 0 and t + 1 < steps:
                keep = (~beam.done).nonzero().squeeze(1)  # the one host sync
                if keep.numel() == 0 or (COMPACT_BEAMS and keep.numel() < rows.numel()):
                    done = beam.done.nonzero().squeeze(1)
                    out_tokens[rows[done]] = beam.fin_tokens[done, 0]
                    out_lens[rows[done]] = beam.fin_lens[done, 0]
                    if keep.numel() == 0:
                        return _to_lists(out_tokens, out_lens)
                    rows = rows[keep]
                    beam.keep(keep)
                    flat = (keep.unsqueeze(1) * k + beams).view(-1)  # their K beams' rows
                    state, y = _select(state, flat), y[flat]
    out_tokens[rows] = beam.fin_tokens[:, 0]  # every sentence is done at its limit
    out_lens[rows] = beam.fin_lens[:, 0]
    return _to_lists(out_tokens, out_lens)


class _BeamState:
    """Alive and finished hypotheses of B sentences x K beams, all on one device."""

    def __init__(
        self, batch: int, k: int, steps: int, limits: Tensor, alpha: float, device: torch.device
    ) -> None:
        self.b, self.k, self.alpha, self.limits = batch, k, alpha, limits
        self.scores = torch.full((batch, k), float("-inf"), device=device)
        self.scores[:, 0] = 0.0  # only the first beam is live at step 0 (no duplicates)
        self.tokens = torch.full((batch, k, steps), PAD, dtype=torch.long, device=device)
        self.fin_tokens = torch.full((batch, k, steps), PAD, dtype=torch.long, device=device)
        self.fin_scores = torch.full((batch, k), float("-inf"), device=device)
        self.fin_lens = torch.zeros((batch, k), dtype=torch.long, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1)

    def keep(self, index: Tensor) -> None:
        """Only the sentences `index` (B',) go on searching, in that order."""
        for name in ("scores", "tokens", "fin_tokens", "fin_scores", "fin_lens", "done"):
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.limits = self.limits.index_select(0, index)
        self.b = index.numel()
        self.offsets = self.offsets[: self.b]  # (B', 1): row of each sentence's first beam

    def step(self, t: int, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Extend by one token from logits (B*K, V), or (B, V) shared by a sentence's K beams
        (at step 0, where only the first is live); returns parent indices and tokens (B*K,).

        The best 2K of a sentence's K x V candidates (score + log-softmax) are among the best
        2K of each beam's logits, so only those are normalised (by the row's logsumexp, summed
        in place over `logits`, which this overwrites) and ranked: no (B*K, V) log-softmax or
        sum is written."""
        b, k = self.b, self.k
        rows = logits.view(b, -1, logits.size(-1))  # (B, K, V), or (B, 1, V) at step 0
        width = min(2 * k, rows.size(-1))
        vals, words = rows.topk(width, dim=-1)  # (B, K', W), sorted: the max comes first
        top1 = vals[..., :1]
        vals = vals - top1 - rows.sub_(top1).exp_().sum(-1, keepdim=True).log()
        cand = (self.scores.unsqueeze(-1) + vals).view(b, k * width)  # step 0: broadcast
        top, idx = cand.topk(min(2 * k, k * width), dim=-1)  # (B, 2K), sorted
        parent = idx // width
        token = words.expand(b, k, width).reshape(b, k * width).gather(1, idx)  # (B, 2K)
        seqs = self.tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, self.tokens.size(-1)))
        seqs[:, :, t] = token  # (B, 2K, T)
        is_eos = token == EOS
        last = (self.limits <= t + 1).unsqueeze(1)  # (B, 1): this step is the sentence's last
        # finish: <eos> among the top K, or anything alive at the last step
        in_top_k = torch.arange(top.size(1), device=top.device) < k
        finish = in_top_k & (is_eos | last) & ~self.done.unsqueeze(1)
        self._finish(t, top, seqs, finish, is_eos)
        # alive: the best K candidates that did not end with <eos>
        alive_scores = top.masked_fill(is_eos, float("-inf"))
        keep_scores, keep = alive_scores.topk(k, dim=-1)  # (B, K)
        self.scores = keep_scores
        self.tokens = seqs.gather(1, keep.unsqueeze(-1).expand(-1, -1, seqs.size(-1)))
        self._update_done(t, last.squeeze(1))
        origin = (parent.gather(1, keep) + self.offsets).view(-1)
        return origin, token.gather(1, keep).view(-1)

    def _finish(self, t: int, top: Tensor, seqs: Tensor, finish: Tensor, is_eos: Tensor) -> None:
        """Merge the candidates marked `finish` (B, 2K) into the K-best finished store."""
        length = torch.full_like(top, t + 1, dtype=torch.long)  # <eos> counted; a cut one has none
        out_len = length - is_eos.long()  # tokens output (no <eos>)
        norm = top / length.to(top.dtype).pow(self.alpha)
        norm = norm.masked_fill(~finish, float("-inf"))
        all_scores = torch.cat([self.fin_scores, norm], dim=1)  # (B, 3K)
        all_tokens = torch.cat([self.fin_tokens, seqs], dim=1)  # (B, 3K, T)
        all_lens = torch.cat([self.fin_lens, out_len], dim=1)
        self.fin_scores, pick = all_scores.topk(self.k, dim=-1)  # (B, K)
        self.fin_tokens = all_tokens.gather(1, pick.unsqueeze(-1).expand(-1, -1, seqs.size(-1)))
        self.fin_lens = all_lens.gather(1, pick)

    def _update_done(self, t: int, last: Tensor) -> None:
        """A sentence is done at its limit, or when K finished beat every alive hypothesis."""
        full = torch.isfinite(self.fin_scores).all(dim=1)
        best_alive = self.scores[:, 0] / float(t + 1) ** self.alpha
        beaten = full & (self.fin_scores[:, -1] >= best_alive)
        self.done = self.done | last | beaten


def translate_ids(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    beam_size: int = 1,
    batch_size: int = DEFAULT_BATCH_ROWS,
    max_len_ratio: float = DEFAULT_MAX_LEN_RATIO,
    device: torch.device | str = "cpu",
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    progress: Callable[..., None] | None = None,
) -> list[list[int]]:
    """Decode many source id sequences (as stored: reversed, no specials) in batches.

    Sentences are sorted by length into batches of `batch_size` decoder rows (little padding):
    `batch_size` sentences for greedy (beam_size 1), `batch_size // beam_size` for beam search
    (K rows each). Each sentence gets up to
    `max_len_ratio * len + 10` tokens; the results come back in input order. An empty source
    gives [] without touching the model. A model with an `inference_table(rows)` context
    (Seq2Seq, Ensemble) holds it for the whole corpus.
    """
    seqs = [list(s) for s in sequences]
    device = torch.device(device)
    results: list[list[int]] = [[] for _ in seqs]
    order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: -len(seqs[i]))
    if progress is not None:
        progress(0, total=len(seqs))
        progress(len(seqs) - len(order))  # empty sources are already done
    per_batch = max(1, batch_size // beam_size)
    table = getattr(model, "inference_table", None)  # Seq2Seq's first-layer table, if any
    rows = beam_size * sum(len(s) for s in seqs)  # decoder row-steps, about
    with nullcontext() if table is None else table(rows):
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            src, lens = _pad([seqs[i] for i in idx], device)
            limits = (lens.to(torch.float64) * max_len_ratio + 10).long()
            if beam_size == 1:
                out = greedy_decode(model, src, lens, limits)
            else:
                out = beam_search(
                    model, src, lens, beam_size=beam_size, max_len=limits,
                    length_penalty=length_penalty,
                )  # fmt: skip
            for i, hyp in zip(idx, out, strict=True):
                results[i] = hyp
            if progress is not None:
                progress(len(idx))
    return results


def _pad(seqs: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged id lists -> src (B, S) padded with PAD, src_lens (B,)."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    src = torch.full((len(seqs), int(lens.max())), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        src[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return src.to(device), lens.to(device)
