"""The LSTM encoder-decoder of Sutskever et al. (2014).

Embedding -> multi-layer LSTM encoder; its final (h, c) initialise a multi-layer LSTM decoder;
a linear layer maps decoder states to target-vocabulary logits. Tensors are batch-first.
The encoder packs its input, so padding never changes a sentence's result.
"""

from __future__ import annotations

from typing import Protocol

import torch
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
        packed = pack_padded_sequence(x, src_lens.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.encoder(packed)
        return h, c

    def decode_step(self, y_prev: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoder step: y_prev (B,) ids -> logits (B, V) and the next state."""
        x = self.dropout(self.tgt_emb(y_prev)).unsqueeze(1)  # (B, 1, E)
        out, state = self.decoder(x, state)  # (B, 1, H)
        return self.out(self.dropout(out.squeeze(1))), state
