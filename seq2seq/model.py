"""The LSTM encoder-decoder of Sutskever et al. (2014).

Embedding -> multi-layer LSTM encoder; its final (h, c) initialise a multi-layer LSTM decoder;
a linear layer maps decoder states to target-vocabulary logits. Tensors are batch-first.
The encoder packs its input, so padding never changes a sentence's result.

The training forward is fast without changing the maths of a step-by-step decoder loop:
consecutive teacher-forced steps go through the LSTM in one call (a "segment" ends where a coin
flip says the next input is the model's own prediction), logits are computed only at non-pad
positions (one big Linear + cross-entropy) plus, at each segment end, the logits whose argmax
feeds the next segment. Rows are ordered longest target first, and each segment runs only the
rows whose target is not finished yet (a long teacher-forced run is also cut where a quarter of
its rows have finished), so padded target positions cost almost nothing even in batches of
mixed lengths. On the CPU's training path (seq2seq.lstm's layer, below) the decoder runs on
packed rows instead: every step holds exactly the unfinished rows, so no cuts are needed and a
segment ends only before a free-running step (`PACKED_DECODER = False` runs the padded
segments there too; benchmarks/decoder_packing.py compares them). The coin flips are drawn up
front on the host, so nothing waits for the device mid-step.

On the CPU, with gradients and without autocast, both LSTMs run one layer at a time through
seq2seq.lstm's layer, whose backward computes the weight gradients in one matrix product over
all time steps (nn.LSTM's packed path does one per step and zero-fills a buffer per step; its
oneDNN path reorders the weights at every call, which the decoder's short segments pay often),
and the model's FastDropout draws the dropout between layers. `OWN_BACKWARD = False` runs
nn.LSTM's kernels instead, with the same results (tests/test_model.py). Under bf16 autocast the
CPU's training step runs that layer too, its matrix products on bf16 operands (on CPUs with AMX
these run on its tiles) and its gates and states in fp32; `OWN_BF16 = False` gives it to
nn.LSTM's oneDNN bf16 kernels instead. Without gradients nn.LSTM runs, except for decode_step
in eval mode on the CPU (greedy and beam search, one step at a time): its own inference step
(`INFERENCE_STEP`) computes each layer's gates in two matrix products on the weights as they
are, and, within `inference_table` (translate_ids holds one), reads the first layer's input term
from a table of every target word; nn.LSTM's step there went through oneDNN, which reorders the
weights at every call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.loss import linear_cross_entropy
from seq2seq.lstm import packed_lstm_layer
from seq2seq.vocab import PAD

State = tuple[Tensor, Tensor]  # (h, c), each (L, B, H)


class ModelSpec(Protocol):
    """What the model needs from a config section (pipeline's `cfg.model` satisfies it)."""

    @property
    def emb_dim(self) -> int: ...
    @property
    def hidden_dim(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def dropout(self) -> float: ...


class Seq2Seq(nn.Module):
    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        emb_dim: int,
        hidden_dim: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        # the constructor's arguments: what a checkpoint needs to rebuild this model
        self.args = {
            "src_vocab_size": src_vocab_size,
            "tgt_vocab_size": tgt_vocab_size,
            "emb_dim": emb_dim,
            "hidden_dim": hidden_dim,
            "num_layers": num_layers,
            "dropout": dropout,
        }
        self.src_emb = nn.Embedding(src_vocab_size, emb_dim, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=PAD)
        between = dropout if num_layers > 1 else 0.0  # dropout between stacked LSTM layers
        self.encoder = nn.LSTM(emb_dim, hidden_dim, num_layers, dropout=between, batch_first=True)
        self.decoder = nn.LSTM(emb_dim, hidden_dim, num_layers, dropout=between, batch_first=True)
        self.dropout = FastDropout(dropout)
        self.out = nn.Linear(hidden_dim, tgt_vocab_size)
        # within a training forward under CPU bf16 autocast: the LSTM and output weights cast
        # to bf16 once (the decoder's segments call every layer many times), by id
        self._gemm_weights: dict[int, Tensor] | None = None
        self._step_table: Tensor | None = None  # decode_step's first-layer table: inference_table
        self.reset_parameters()

    @classmethod
    def from_config(cls, spec: ModelSpec, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
        return cls(
            src_vocab_size,
            tgt_vocab_size,
            spec.emb_dim,
            spec.hidden_dim,
            spec.num_layers,
            spec.dropout,
        )

    def reset_parameters(self, bound: float = 0.08) -> None:
        """Uniform init in [-0.08, 0.08] (the paper); pad embeddings stay zero."""
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        with torch.no_grad():
            self.src_emb.weight[PAD].zero_()
            self.tgt_emb.weight[PAD].zero_()

    def encode(self, src: Tensor, src_lens: Tensor) -> State:
        """src (B, S) padded ids, src_lens (B,) >= 1 -> decoder initial state (L, B, H) x 2."""
        x = self.dropout(self.src_emb(src))  # (B, S, E)
        lens = torch.as_tensor(src_lens).cpu()  # packing wants host lengths (a no-op on CPU)
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        if not _layerwise(self.encoder, x):
            _, (h, c) = self.encoder(packed)
            return h, c
        zeros = x.new_zeros(self.encoder.num_layers, x.shape[0], self.encoder.hidden_size)
        sizes = packed.batch_sizes
        _, (h, c) = _lstm_layers(
            self.encoder, packed.data, (zeros, zeros), self.dropout, sizes, self._gemm_weights
        )
        order = packed.unsorted_indices  # the packed rows run longest first
        assert order is not None  # enforce_sorted=False always sets it
        return h.index_select(1, order), c.index_select(1, order)

    def decode_step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoder step: y_prev (B,) ids -> logits (B, V) and the next state."""
        if _use_inference_step(self, y_prev):
            return self._inference_step(y_prev, state)
        x = self.dropout(self.tgt_emb(y_prev)).unsqueeze(1)  # (B, 1, E)
        out, state = self._decoder(x, state)  # (B, 1, H)
        return self.out(self.dropout(out.squeeze(1))), state

    def forward(
        self,
        src: Tensor,
        src_lens: Tensor | Sequence[int],
        tgt: Tensor,
        tgt_lens: Tensor | Sequence[int],
        tf_mask: Tensor | Sequence[bool],
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, int]:
        """Summed cross-entropy of a batch under a teacher-forcing plan.

        src (B, S), src_lens (B,); tgt (B, T) = `<sos> y1..yn <eos>` PAD-padded, tgt_lens (B,);
        tf_mask (T-1,) bool, one per decoder step: True feeds step t the reference token tgt[:, t],
        False feeds it the argmax of step t-1's logits; step 0's input is always <sos>.
        Lengths and tf_mask are read on the host (pass CPU tensors or lists: on an accelerator
        they would cost a sync). `label_smoothing` > 0 spreads that much of each target's
        probability mass uniformly over the vocabulary (the training objective only; 0 gives the
        plain negative log-likelihood). Returns (loss_sum: fp32 scalar over the n non-pad target
        tokens, n_tokens = sum(tgt_lens - 1)).
        """
        self._gemm_weights = {}  # weights cast for bf16 products, once per training step
        try:
            return self._loss(src, src_lens, tgt, tgt_lens, tf_mask, label_smoothing)
        finally:
            self._gemm_weights = None

    def _loss(
        self,
        src: Tensor,
        src_lens: Tensor | Sequence[int],
        tgt: Tensor,
        tgt_lens: Tensor | Sequence[int],
        tf_mask: Tensor | Sequence[bool],
        label_smoothing: float,
    ) -> tuple[Tensor, int]:
        steps = tgt.shape[1] - 1
        fused = _own_lstm(self.out.weight)  # the output layer and its loss in one function
        tf, lens = _host_bools(tf_mask, steps), _host_ints(tgt_lens)
        plan: _StepPlan | _PackedPlan
        if fused and PACKED_DECODER:
            plan = _PackedPlan(tf, lens, steps, tgt.device)
        else:
            plan = _StepPlan(tf, lens, steps, tgt.device)
        h, c = self.encode(src, torch.as_tensor(src_lens))
        if plan.order is not None:  # longest target first: a segment's live rows are a prefix
            tgt = tgt.index_select(0, plan.order)
            h, c = h.index_select(1, plan.order), c.index_select(1, plan.order)
        ls = label_smoothing
        if isinstance(plan, _PackedPlan):  # the CPU's training path: packed rows
            return self._packed_decode_loss((h, c), tgt, plan, ls), plan.n_tokens
        outs, loss = self._decode_segments((h, c), tgt, plan, ls, fused)
        hidden = outs.reshape(-1, outs.shape[-1]).index_select(0, plan.flat_idx)  # (N, H)
        gold = tgt[:, 1:].reshape(-1).index_select(0, plan.flat_idx)  # (N,)
        if fused:
            w, b, w_low = self.out.weight, self.out.bias, self._out_gemm_weight()
            main, _ = linear_cross_entropy(self.dropout(hidden), w, b, gold, ls, gemm_weight=w_low)
            loss = loss + main
        else:
            logits = _at_least_fp32(self.out(self.dropout(hidden)))  # (N, V)
            loss = loss + F.cross_entropy(logits, gold, reduction="sum", label_smoothing=ls)
        return loss, plan.n_tokens

    def _packed_decode_loss(
        self, state: State, tgt: Tensor, plan: _PackedPlan, ls: float
    ) -> Tensor:
        """The summed cross-entropy (label smoothing `ls`) of the decoder run on packed rows:
        every step holds only the rows whose target is unfinished (time-major, as a
        PackedSequence's data), so no step of a finished row is computed, and teacher-forced
        runs need no cuts where rows finish (`_PackedPlan`). A segment ends only
        before a free-running step, whose first input is the segment end's argmax. The output
        layer and loss run through linear_cross_entropy: once for the segment ends' rows (they
        need the argmax now), once for all other rows."""
        flat = tgt.reshape(-1)
        emb = self.dropout(self.tgt_emb(flat.index_select(0, plan.in_idx)))  # (N, E) packed
        w, b, w_low = self.out.weight, self.out.bias, self._out_gemm_weight()
        loss = emb.new_zeros((), dtype=torch.promote_types(emb.dtype, torch.float32))
        h, c = state
        kept: list[Tensor] = []
        pred = tgt[:, 0]  # replaced by each segment end's argmax before a free segment reads it
        for seg in plan.segments:
            x = emb[seg.lo : seg.hi]
            if seg.free:  # free-running: the first step's input is the previous prediction
                # a sparse gradient: a few rows, not a dense (V, E) one per segment
                ids = pred[: seg.live]
                first = self.dropout(F.embedding(ids, self.tgt_emb.weight, PAD, sparse=True))
                x = torch.cat([first, x[seg.live :]])
            h0, c0 = h[:, : seg.live].contiguous(), c[:, : seg.live].contiguous()
            out, (h, c) = _lstm_layers(
                self.decoder, x, (h0, c0), self.dropout, seg.sizes, cache=self._gemm_weights
            )
            if not seg.end_rows:
                kept.append(out)
                continue
            # the next segment is free-running: the last step's rows (those still unfinished)
            # give their logits' argmax now; their gold is the next token
            split = out.shape[0] - seg.end_rows
            kept.append(out[:split])
            gold = tgt[: seg.end_rows, seg.stop]
            term, pred = linear_cross_entropy(
                self.dropout(out[split:]), w, b, gold, ls, PAD, argmax=True, gemm_weight=w_low
            )
            loss = loss + term
        hidden = torch.cat(kept) if len(kept) > 1 else kept[0]  # (N - segment-end rows, H)
        gold = flat.index_select(0, plan.gold_idx)
        main, _ = linear_cross_entropy(self.dropout(hidden), w, b, gold, ls, gemm_weight=w_low)
        return loss + main

    def _decode_segments(
        self, state: State, tgt: Tensor, plan: _StepPlan, ls: float, fused: bool
    ) -> tuple[Tensor, Tensor]:
        """Run the decoder segment by segment on each segment's live rows -> outputs (B, T-1, H)
        (zero where a row had finished) and the summed cross-entropy (label smoothing `ls`) of
        the segment-end logits (live rows, V) whose argmax became the next segment's first
        input; `fused`: through linear_cross_entropy."""
        emb = self.dropout(self.tgt_emb(tgt[:, :-1]))  # (B, T-1, E) reference inputs
        batch = tgt.shape[0]
        outs: list[Tensor] = []
        end_logits: list[Tensor] = []
        end_loss = emb.new_zeros((), dtype=torch.promote_types(emb.dtype, torch.float32))
        pred = tgt[:, 0]  # replaced by each segment end's argmax before a free segment reads it
        h, c = state
        for (start, stop), live, free in zip(plan.segments, plan.live, plan.free, strict=True):
            x = emb[:live, start:stop]
            if free:  # free-running: the first input is the previous step's prediction
                first = self.dropout(self.tgt_emb(pred[:live])).unsqueeze(1)  # (live, 1, E)
                x = torch.cat([first, x[:, 1:]], dim=1)
            out, (h, c) = self._decoder(x, (h[:, :live].contiguous(), c[:, :live].contiguous()))
            outs.append(F.pad(out, (0, 0, 0, 0, 0, batch - live)) if live < batch else out)
            if stop < plan.steps and plan.free[len(outs)]:  # the next segment starts
                # free-running: it needs this step's argmax (a cut inside a teacher-forced run,
                # or the last segment, needs none)
                last = self.dropout(out[:, -1])  # (live, H)
                if fused:  # gold: the next token, PAD past a sentence's end
                    w, b, w_low = self.out.weight, self.out.bias, self._out_gemm_weight()
                    gold = tgt[:live, stop]
                    term, pred = linear_cross_entropy(
                        last, w, b, gold, ls, PAD, argmax=True, gemm_weight=w_low
                    )
                    end_loss = end_loss + term
                else:
                    logits = self.out(last)  # (live, V)
                    end_logits.append(logits)
                    pred = logits.argmax(-1)  # stays on the device; argmax has no gradient
        if end_logits:
            stacked = _at_least_fp32(torch.cat(end_logits))  # (sum of live rows, V)
            gold_end = tgt.reshape(-1).index_select(0, plan.end_gold_idx)  # PAD past a sentence
            end_loss = end_loss + F.cross_entropy(
                stacked, gold_end, ignore_index=PAD, reduction="sum", label_smoothing=ls
            )
        return torch.cat(outs, dim=1), end_loss

    @contextmanager
    def inference_table(self, rows: int) -> Iterator[None]:
        """Within it, decode_step's inference step (`INFERENCE_STEP`) reads the first decoder
        layer's input term from a table of every target word's, E W_ih^T + b_ih + b_hh
        (V, 4H), built on entry and dropped on exit: the weights must not change inside.

        Built only where it pays: on the CPU, for about `rows` decoder row-steps to come (a
        row-step saves a (E, 4H) product; the table costs V of them), and within
        STEP_TABLE_MAX. translate_ids holds it for a whole corpus. A nested call keeps the
        outer table. There is no cache across calls: an optimizer's fused step changes the
        weights without bumping their version counters, so a cache could not tell."""
        w_ih, _, b_ih, b_hh = self.decoder.all_weights[0]
        vocab, width = self.tgt_emb.weight.shape[0], w_ih.shape[0]
        if (
            self._step_table is not None
            or not INFERENCE_STEP
            or w_ih.device.type != "cpu"
            or w_ih.dtype not in (torch.float32, torch.float64)  # as _use_inference_step
            or rows < vocab
            or vocab * width > STEP_TABLE_MAX
        ):
            yield
            return
        with torch.no_grad():
            self._step_table = torch.addmm(b_ih + b_hh, self.tgt_emb.weight, w_ih.t())
        try:
            yield
        finally:
            self._step_table = None

    def _inference_step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        """decode_step for inference on the CPU (see `INFERENCE_STEP`): each layer's gates as
        x W_ih^T + h W_hh^T + b_ih + b_hh in two matrix products on the weights as they are
        (the first layer's x W_ih^T + biases from `inference_table` where one is held), the
        cell's pointwise maths in place. The same maths as nn.LSTM's step
        (tests/test_model.py)."""
        h, c = state
        hidden = h.shape[-1]
        hs, cs = [], []
        table = self._step_table
        x = y_prev  # the layer's input: for the first, ids (the table's rows or embeddings)
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.decoder.all_weights):
            if layer == 0 and table is not None:
                gates = table.index_select(0, x)
            else:
                if layer == 0:
                    x = self.tgt_emb(x)
                gates = torch.addmm(b_ih + b_hh, x, w_ih.t())
            gates.addmm_(h[layer], w_hh.t())
            i = gates[:, :hidden].sigmoid_()
            f = gates[:, hidden : 2 * hidden].sigmoid_()
            g = gates[:, 2 * hidden : 3 * hidden].tanh_()
            o = gates[:, 3 * hidden :].sigmoid_()
            cell = f * c[layer]
            cell.addcmul_(i, g)
            x = o * cell.tanh()
            hs.append(x)
            cs.append(cell)
        return self.out(x), (torch.stack(hs), torch.stack(cs))

    def _out_gemm_weight(self) -> Tensor | None:
        """The output layer's weight cast for bf16 products under CPU autocast (once per
        forward), else None."""
        low = _gemm_dtype()
        if low is None:
            return None
        return _cast(self.out.weight, low, self._gemm_weights)

    def _decoder(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """self.decoder(x, state) (batch-first), on the CPU's training path layer by layer."""
        if not _layerwise(self.decoder, x):
            return self.decoder(x, state)
        return _lstm_layers(self.decoder, x, state, self.dropout, cache=self._gemm_weights)


INFERENCE_STEP = True  # False: decode_step runs nn.LSTM on the CPU without gradients too
# the largest first-layer table (target words x 4H) inference_table builds: 128 MB in fp32
STEP_TABLE_MAX = 2**25
OWN_BACKWARD = True  # False: the CPU's training step runs nn.LSTM's own kernels (benchmarks)
OWN_BF16 = True  # False: under bf16 autocast the CPU's training step runs nn.LSTM's (oneDNN)
PACKED_DECODER = True  # False: the CPU's training step runs the decoder's padded segments


def _use_inference_step(model: Seq2Seq, y_prev: Tensor) -> bool:
    """Whether decode_step runs `Seq2Seq._inference_step`: in eval mode without gradients on
    the CPU, fp32/fp64 weights, no autocast. nn.LSTM's step there calls oneDNN, which reorders
    the weights at every call (a one-sentence step took twice as long); on a GPU cuDNN runs."""
    weight = model.out.weight
    return (
        INFERENCE_STEP
        and not model.training
        and not torch.is_grad_enabled()
        and y_prev.device.type == "cpu"
        and weight.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
    )


def _own_backward(x: Tensor) -> bool:
    """Whether the LSTMs run seq2seq.lstm's layer: CPU fp32/fp64 with gradients, no autocast."""
    return (
        OWN_BACKWARD
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _own_lstm(x: Tensor) -> bool:
    """Whether the LSTMs run seq2seq.lstm's layer: as `_own_backward`, and under CPU bf16
    autocast too (the layer's matrix products then take bf16 operands: `_gemm_dtype`)."""
    if _own_backward(x):
        return True
    return (
        OWN_BACKWARD
        and OWN_BF16
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and _gemm_dtype() == torch.bfloat16
    )


def _gemm_dtype() -> torch.dtype | None:
    """The CPU autocast's lower-precision type where it is on, else None."""
    if not torch.is_autocast_enabled("cpu"):
        return None
    return torch.get_autocast_dtype("cpu")


def _layerwise(lstm: nn.LSTM, x: Tensor) -> bool:
    """Whether to run `lstm` layer by layer (`_lstm_layers`) instead of nn.LSTM as a whole: with
    seq2seq.lstm's layer (`_own_lstm`), or on the CPU in training with dropout between
    layers (nn.LSTM draws that dropout with bernoulli_, several times slower than FastDropout
    there). Elsewhere nn.LSTM runs as a whole (cuDNN stacks its layers)."""
    between = lstm.training and lstm.num_layers > 1 and lstm.dropout > 0
    return _own_lstm(x) or (between and x.device.type == "cpu")


def _lstm_layers(
    lstm: nn.LSTM,
    x: Tensor,
    state: State,
    dropout: nn.Module,
    sizes: Tensor | None = None,
    cache: dict[int, Tensor] | None = None,
) -> tuple[Tensor, State]:
    """nn.LSTM's forward one layer at a time, `dropout` between layers (where nn.LSTM has it):
    the same maths and weights as lstm(x, state), only the dropout masks are drawn by `dropout`.
    x (B, S, E) batch-first, or a PackedSequence's data with its batch_sizes as `sizes` and
    `state` in its sorted_indices order.
    Each layer is seq2seq.lstm's (`_own_lstm`) or nn.LSTM's kernel (torch.lstm). `cache` keeps
    the layers' weights cast for bf16 products (`_gemm_dtype`) between calls of one forward."""
    own = _own_lstm(x)
    low = _gemm_dtype() if own else None
    batch_first = sizes is None
    if own and batch_first:  # time-major rows, as in a packed sequence of equal lengths
        batch, steps = x.shape[:2]
        x = x.transpose(0, 1).reshape(steps * batch, x.shape[2])
        sizes = torch.full((steps,), batch, dtype=torch.int64)
    h0, c0 = state
    hs, cs = [], []
    for layer, layer_weights in enumerate(lstm.all_weights):
        weights: list[Tensor] = list(layer_weights)
        if layer and lstm.dropout > 0:
            x = dropout(x)
        if sizes is not None and own:
            w_ih, w_hh, b_ih, b_hh = weights
            cast = None if low is None else (_cast(w_ih, low, cache), _cast(w_hh, low, cache))
            x, h, c = packed_lstm_layer(
                x, sizes, h0[layer], c0[layer], w_ih, w_hh, b_ih, b_hh, low, cast
            )
        else:
            hx = (h0[layer : layer + 1], c0[layer : layer + 1])
            if sizes is None:
                x, h, c = torch.lstm(x, hx, weights, lstm.bias, 1, 0.0, lstm.training, False, True)
            else:
                x, h, c = torch.lstm(x, sizes, hx, weights, lstm.bias, 1, 0.0, lstm.training, False)
        hs.append(h.view(h.shape[-2:]))
        cs.append(c.view(c.shape[-2:]))
    if own and batch_first:
        x = x.view(steps, batch, -1).transpose(0, 1)
    return x, (torch.stack(hs), torch.stack(cs))


def _cast(w: Tensor, low: torch.dtype, cache: dict[int, Tensor] | None) -> Tensor:
    """`w` cast to `low` (detached), kept in `cache` by id(w) for the rest of the forward."""
    if cache is None:
        return w.detach().to(low)
    if id(w) not in cache:
        cache[id(w)] = w.detach().to(low)
    return cache[id(w)]


class FastDropout(nn.Dropout):
    """nn.Dropout with a cheaper CPU mask: 16 random bits per element, cut from int64 draws of
    the default generator (seeded as usual), compared with round(p * 65536); the kept values are
    scaled by 1 / (1 - p') for that quantised p', so the expectation is exact. CPU bernoulli_ is
    several times slower than this (benchmarks/README.md).
    Other devices, eval mode and p within 2^-17 of 0 or 1 use nn.Dropout itself."""

    def forward(self, x: Tensor) -> Tensor:
        cut = round(self.p * 65536)
        if not self.training or x.device.type != "cpu" or not 0 < cut < 65536:
            return super().forward(x)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        keep = words.view(torch.int16)[:n].view(x.shape) >= cut - 32768
        return x * (keep * (65536 / (65536 - cut))).to(x.dtype)


class _StepPlan:
    """Host-side plan of one decoder pass over rows ordered longest target first.

    order (B,): that row order (None when the batch already is); segments: [start, stop) step
    ranges, a new one at every free-running step (free) and where the live rows drop to 3/4 of
    the segment's (a cut); live: rows whose target is unfinished at a segment's start (a prefix).
    end_gold_idx: flat positions in tgt (B, T) of the gold tokens of the segment-end logits.
    flat_idx (N,): positions b * steps + t with t < tgt_lens[b] - 1, minus the segment ends.
    """

    def __init__(self, tf: list[bool], tgt_lens: np.ndarray, steps: int, device) -> None:
        self.order, lens = _longest_first(tgt_lens, device)
        live_at = np.searchsorted(-lens, -np.arange(steps), side="left")  # rows with lens > t
        live_at = np.maximum(live_at, 1)  # a finished batch still runs one row (never empty)
        self.steps = steps
        self.segments: list[list[int]] = []
        self.live: list[int] = []
        self.free: list[bool] = []
        for t in range(steps):
            first = t == 0 or not tf[t] or live_at[t] <= 0.75 * self.live[-1]
            if first:
                self.segments.append([t, t + 1])
                self.live.append(int(live_at[t]))
                self.free.append(t > 0 and not tf[t])
            else:
                self.segments[-1][1] = t + 1
        followed_by_free = self.free[1:] + [False]
        ends = [
            (seg[1] - 1, live)
            for seg, live, nxt in zip(self.segments, self.live, followed_by_free, strict=True)
            if nxt
        ]
        valid = np.arange(steps)[None, :] < lens[:, None]  # (B, T-1)
        self.n_tokens = int(valid.sum())
        gold = [np.arange(live) * (steps + 1) + end + 1 for end, live in ends]
        self.end_gold_idx = _device_index(np.concatenate(gold) if gold else np.zeros(0), device)
        for end, _ in ends:
            valid[:, end] = False
        self.flat_idx = _device_index(np.flatnonzero(valid), device)


class _PackedPlan:
    """Host-side plan of `Seq2Seq._packed_decode_loss`: the decoder over packed rows ordered
    longest target first (`order` as `_StepPlan`'s).

    segments: a `_PackedSegment` per segment, a new one only at free-running steps; in_idx (N,):
    positions in tgt (B, T) of the decoder inputs of all live (row, step) pairs, time-major (the
    packed rows' order); gold_idx: positions in tgt of the gold tokens of the packed rows that
    are not segment ends, in the order `_packed_decode_loss` concatenates them.
    """

    def __init__(self, tf: list[bool], tgt_lens: np.ndarray, steps: int, device) -> None:
        self.order, lens = _longest_first(tgt_lens, device)
        last = int(lens[0])  # steps past the longest target have no live row
        live_at = np.searchsorted(-lens, -np.arange(last), side="left")  # rows with lens > t
        offsets = np.concatenate([[0], np.cumsum(live_at)])
        self.n_tokens = int(offsets[-1])
        starts = [t for t in range(last) if t == 0 or not tf[t]]
        stops = [*starts[1:], last]
        self.segments: list[_PackedSegment] = []
        gold: list[np.ndarray] = []
        step_of = np.repeat(np.arange(last), live_at)  # each packed row's step and row
        row_of = np.arange(self.n_tokens) - np.repeat(offsets[:-1], live_at)
        for start, stop in zip(starts, stops, strict=True):
            end_rows = int(live_at[stop - 1]) if stop < last else 0
            lo, hi = int(offsets[start]), int(offsets[stop])
            sizes = torch.from_numpy(live_at[start:stop].astype(np.int64))
            seg = _PackedSegment(lo, hi, sizes, int(live_at[start]), start > 0, stop, end_rows)
            self.segments.append(seg)
            kept = slice(lo, hi - end_rows)
            gold.append(row_of[kept] * (steps + 1) + step_of[kept] + 1)
        self.in_idx = _device_index(row_of * (steps + 1) + step_of, device)
        self.gold_idx = _device_index(np.concatenate(gold), device)


class _PackedSegment(NamedTuple):
    """Steps [stop - len(sizes), stop) of a packed decoder pass: its packed rows [lo, hi), the
    live rows per step (`sizes`, CPU, non-increasing), `live` = sizes[0], whether its first
    step is free-running, and `end_rows`: the rows of its last step whose argmax the next
    (free-running) segment needs (0 when none follows)."""

    lo: int
    hi: int
    sizes: Tensor
    live: int
    free: bool
    stop: int
    end_rows: int


def _longest_first(tgt_lens: np.ndarray, device) -> tuple[Tensor | None, np.ndarray]:
    """The row order longest target first (None when the batch already is) and the decoder
    steps per row in that order."""
    order = np.argsort(-tgt_lens, kind="stable")
    sorted_already = bool((order == np.arange(len(order))).all())
    return None if sorted_already else _device_index(order, device), tgt_lens[order] - 1


def _at_least_fp32(x: Tensor) -> Tensor:
    """bf16/fp16 logits (autocast) -> fp32 for the loss; fp32 and fp64 stay as they are."""
    return x.float() if x.element_size() < 4 else x


def _device_index(a: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    if device.type == "cuda":
        t = t.pin_memory()  # a pinned copy does not block the host
    return t.to(device, non_blocking=True)


def _host_ints(x: Tensor | Sequence[int]) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.int64)


def _host_bools(x: Tensor | Sequence[bool], steps: int) -> list[bool]:
    flags = x.tolist() if isinstance(x, Tensor) else [bool(v) for v in x]
    if len(flags) != steps:
        raise ValueError(f"tf_mask has {len(flags)} entries for {steps} decoder steps")
    return flags
