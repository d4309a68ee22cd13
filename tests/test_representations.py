"""seq2seq.representations: the encoder's final states of id sequences, and a 2-D PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seq2seq.model import Seq2Seq
from seq2seq.representations import final_states, pca_2d


def test_final_states_are_each_sentences_own_top_layer_state():
    torch.manual_seed(0)
    model = Seq2Seq(20, 10, emb_dim=8, hidden_dim=12, num_layers=2, dropout=0.3)  # training mode
    seqs = [[5, 6, 7, 8, 9], [4], [10, 11, 4]]
    states = final_states(model, seqs)
    assert states.shape == (3, 12) and model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        for row, seq in zip(states, seqs, strict=True):  # alone, unpadded: the same state
            h, _ = model.encode(torch.tensor([seq]), torch.tensor([len(seq)]))
            assert torch.allclose(row, h[-1, 0], atol=1e-6)
        bottom = final_states(model, seqs, layer=0)
        assert torch.allclose(
            bottom[1], model.encode(torch.tensor([[4]]), torch.tensor([1]))[0][0, 0]
        )
    with pytest.raises(ValueError, match="non-empty"):
        final_states(model, [[4], []])


def test_pca_2d_keeps_the_geometry_of_planar_points():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(10, 2)) * [5.0, 1.0]  # 10 points, most variance along one axis
    basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))  # an orthonormal 2-D plane in 6-D
    points = plane @ basis.T + 3.0  # shifted: PCA centres first
    coords, share = pca_2d(points)
    assert coords.shape == (10, 2)
    dist = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    assert np.allclose(dist(coords), dist(points))  # the plane holds all the variance
    assert share.sum() == pytest.approx(1.0) and share[0] > share[1] > 0
    assert np.allclose(coords.mean(axis=0), 0.0)
    order = rng.permutation(10)  # another row order: SVD may flip a component's sign ...
    again, _ = pca_2d(points[order])
    assert np.allclose(again, coords[order])  # ... but the sign rule gives the same picture
    one, share_one = pca_2d(points[:1])  # a single point: nothing to project on
    assert np.allclose(one, 0.0) and share_one.tolist() == [0.0, 0.0]
