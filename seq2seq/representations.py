"""What the encoder learned: its final hidden state for given sentences, and a 2-D PCA of such
states (the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seq2seq.vocab import PAD


def final_states(
    model: Any, sequences: Sequence[Sequence[int]], *, layer: int = -1, device: Any = "cpu"
) -> Tensor:
    """The encoder's final hidden state h of each id sequence (as stored: reversed, no
    specials) -> (N, H) on the CPU, in input order; `layer` -1 is the top layer. Eval mode and
    no autograd; the model's training flag is restored. One batch: meant for a few phrases."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("final_states needs non-empty id sequences")
    src = pad_sequence(
        [torch.tensor(list(s), dtype=torch.long) for s in sequences],
        batch_first=True,
        padding_value=PAD,
    ).to(device)
    lens = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            h, _ = model.encode(src, lens)  # (L, N, H)
    finally:
        model.train(was_training)
    return h[layer].float().cpu()


def pca_2d(points: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) points -> their coordinates on the first two principal components (N, 2) and the
    share of the variance each explains (2,). Centred, by SVD; each component's sign is fixed
    (its largest loading positive), so the same points always give the same picture. Fewer
    than two non-trivial components leave zeros."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = np.zeros((2, x.shape[1]))
    k = min(2, vt.shape[0])
    comps[:k] = vt[:k]
    for row in comps:
        biggest = row[np.argmax(np.abs(row))] if row.size else 0.0
        if biggest < 0:
            row *= -1
    total = float((s**2).sum())
    share = np.zeros(2)
    share[:k] = (s[:k] ** 2) / total if total > 0 else 0.0
    return x @ comps.T, share
