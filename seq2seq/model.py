"""The LSTM encoder-decoder of Sutskever et al. (2014).

Embedding -> multi-layer LSTM encoder; its final (h, c) initialise a multi-layer LSTM decoder;
a linear layer maps decoder states to target-vocabulary logits. Tensors are batch-first.
The encoder packs its input, so padding never changes a sentence's result.

The training forward is fast without changing the maths of a step-by-step decoder loop:
consecutive teacher-forced steps go through the LSTM in one call (a "segment" ends where a coin
flip says the next input is the model's own prediction), logits are computed only at non-pad
positions (one big Linear + cross-entropy) plus, at each segment end, the full batch's logits
whose argmax feeds the next segment. The coin flips are drawn up front on the host, so nothing
waits for the device mid-step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.vocab import PAD

State = tuple[Tensor, Tensor]  # (h, c), each (L, B, H)


class ModelSpec(Protocol):
    """What the model needs from a config section (pipeline's `cfg.model` satisfies it)."""

    emb_dim: int
    hidden_dim: int
    num_layers: int
    dropout: float


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
        self.src_emb = nn.Embedding(src_vocab_size, emb_dim, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=PAD)
        between = dropout if num_layers > 1 else 0.0  # dropout between stacked LSTM layers
        self.encoder = nn.LSTM(emb_dim, hidden_dim, num_layers, dropout=between, batch_first=True)
        self.decoder = nn.LSTM(emb_dim, hidden_dim, num_layers, dropout=between, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, tgt_vocab_size)
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
        _, (h, c) = self.encoder(packed)
        return h, c

    def decode_step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoder step: y_prev (B,) ids -> logits (B, V) and the next state."""
        x = self.dropout(self.tgt_emb(y_prev)).unsqueeze(1)  # (B, 1, E)
        out, state = self.decoder(x, state)  # (B, 1, H)
        return self.out(self.dropout(out.squeeze(1))), state

    def forward(
        self,
        src: Tensor,
        src_lens: Tensor | Sequence[int],
        tgt: Tensor,
        tgt_lens: Tensor | Sequence[int],
        tf_mask: Tensor | Sequence[bool],
    ) -> tuple[Tensor, int]:
        """Summed cross-entropy of a batch under a teacher-forcing plan.

        src (B, S), src_lens (B,); tgt (B, T) = `<sos> y1..yn <eos>` PAD-padded, tgt_lens (B,);
        tf_mask (T-1,) bool, one per decoder step: True feeds step t the reference token tgt[:, t],
        False feeds it the argmax of step t-1's logits; step 0's input is always <sos>.
        Lengths and tf_mask are read on the host (pass CPU tensors or lists: on an accelerator
        they would cost a sync). Returns (loss_sum: fp32 scalar over the n non-pad target
        tokens, n_tokens = sum(tgt_lens - 1)).
        """
        steps = tgt.shape[1] - 1
        plan = _StepPlan(_host_bools(tf_mask, steps), _host_ints(tgt_lens), steps, tgt.device)
        outs, end_logits = self._decode_segments(self.encode(src, src_lens), tgt, plan)
        hidden = outs.reshape(-1, outs.shape[-1]).index_select(0, plan.flat_idx)  # (N, H)
        logits = self.out(self.dropout(hidden))  # (N, V)
        gold = tgt[:, 1:].reshape(-1).index_select(0, plan.flat_idx)  # (N,)
        loss = F.cross_entropy(_at_least_fp32(logits), gold, reduction="sum")
        if end_logits:
            stacked = _at_least_fp32(torch.cat(end_logits))  # (K * B, V)
            gold_end = tgt[:, plan.end_cols + 1].t().reshape(-1)  # (K * B,), PAD past a sentence
            loss = loss + F.cross_entropy(stacked, gold_end, ignore_index=PAD, reduction="sum")
        return loss, plan.n_tokens

    def _decode_segments(self, state: State, tgt: Tensor, plan: _StepPlan) -> tuple[Tensor, list]:
        """Run the decoder segment by segment -> outputs (B, T-1, H) and the segment-end logits
        (B, V) whose argmax became the next segment's first input."""
        emb = self.dropout(self.tgt_emb(tgt[:, :-1]))  # (B, T-1, E) reference inputs
        outs, end_logits, pred = [], [], None
        for start, stop in plan.segments:
            x = emb[:, start:stop]
            if start > 0:  # free-running: the first input is the previous step's prediction
                first = self.dropout(self.tgt_emb(pred)).unsqueeze(1)  # (B, 1, E)
                x = torch.cat([first, x[:, 1:]], dim=1)
            out, state = self.decoder(x, state)  # (B, n, H)
            outs.append(out)
            if stop < plan.steps:  # the next step is free-running: it needs this step's argmax
                logits = self.out(self.dropout(out[:, -1]))  # (B, V)
                end_logits.append(logits)
                pred = logits.argmax(-1)  # stays on the device; argmax has no gradient
        return torch.cat(outs, dim=1), end_logits


class _StepPlan:
    """Host-side plan of one decoder pass: segments of steps and the positions scored in bulk.

    segments: [start, stop) step ranges; a new one starts at every free-running step.
    end_cols (K,): steps whose logits are computed for the argmax (scored separately).
    flat_idx (N,): positions b * steps + t with t < tgt_lens[b] - 1, minus the end_cols.
    """

    def __init__(self, tf: list[bool], tgt_lens: np.ndarray, steps: int, device) -> None:
        starts = [0] + [t for t in range(1, steps) if not tf[t]]
        self.steps = steps
        self.segments = list(zip(starts, starts[1:] + [steps], strict=True))
        ends = np.array([s - 1 for s in starts[1:]], dtype=np.int64)
        valid = np.arange(steps)[None, :] < (tgt_lens - 1)[:, None]  # (B, T-1)
        self.n_tokens = int(valid.sum())
        valid[:, ends] = False
        self.end_cols = _device_index(ends, device)
        self.flat_idx = _device_index(np.flatnonzero(valid), device)


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
