"""seq2seq.lstm's packed LSTM layer equals nn.LSTM: outputs, final states and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.lstm import packed_lstm_layer


def _case(lens: list[int], seed: int = 0, emb: int = 5, hidden: int = 7):
    torch.manual_seed(seed)
    lstm = nn.LSTM(emb, hidden, 1, batch_first=True).double()
    x = torch.randn(len(lens), max(lens), emb, dtype=torch.float64)
    h0 = torch.randn(1, len(lens), hidden, dtype=torch.float64)
    c0 = torch.randn(1, len(lens), hidden, dtype=torch.float64)
    return lstm, x, h0, c0


def _grads_of(outputs, tensors, seed: int):
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, tensors, retain_graph=True)  # both share the packing


@pytest.mark.parametrize(
    "lens",
    [[4, 4, 4], [6, 3, 3, 1, 5], [1], [2, 9, 9, 4, 1, 7, 3]],
    ids=["equal", "mixed", "one", "mixed-unsorted"],
)
@pytest.mark.parametrize(
    "used", [(0, 1, 2), (1, 2), (0,), (1,)], ids=["all", "states", "outputs", "h_n"]
)
def test_packed_layer_equals_nn_lstm_forward_and_gradients(
    lens: list[int], used: tuple[int, ...]
) -> None:
    """`used`: the outputs the loss reads (out, h_n, c_n); autograd passes None for the others'
    gradients (an encoder's outputs, a decoder's final state)."""
    lstm, x, h0, c0 = _case(lens)
    leaves = [x.requires_grad_(), h0.requires_grad_(), c0.requires_grad_(), *lstm.parameters()]
    packed = pack_padded_sequence(x, torch.tensor(lens), batch_first=True, enforce_sorted=False)
    want_out, (want_h, want_c) = lstm(packed, (h0, c0))

    order = packed.sorted_indices  # our layer takes and returns states in the packed order
    out, h_n, c_n = packed_lstm_layer(
        packed.data, packed.batch_sizes, h0[0, order], c0[0, order], *lstm.all_weights[0]
    )
    back = packed.unsorted_indices
    h_n, c_n = h_n.index_select(0, back), c_n.index_select(0, back)

    torch.testing.assert_close(out, want_out.data, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n, want_h[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n, want_c[0], rtol=0, atol=1e-12)
    want = _grads_of([[want_out.data, want_h[0], want_c[0]][k] for k in used], leaves, seed=1)
    got = _grads_of([[out, h_n, c_n][k] for k in used], leaves, seed=1)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-11, msg=f"gradient of {name}")


def test_packed_layer_gradient_passes_gradcheck() -> None:
    lstm, x, h0, c0 = _case([3, 2, 2, 1], seed=2, emb=3, hidden=4)
    packed = pack_padded_sequence(x, torch.tensor([3, 2, 2, 1]), batch_first=True)
    args = (
        packed.data.requires_grad_(),
        packed.batch_sizes,
        h0[0].requires_grad_(),
        c0[0].requires_grad_(),
        *(w.detach().requires_grad_() for w in lstm.all_weights[0]),
    )
    assert torch.autograd.gradcheck(packed_lstm_layer, args)


def test_packed_layer_with_bf16_products_stays_close_to_fp32() -> None:
    """Under bf16 autocast the layer's matrix products take bf16 operands (gemm_dtype) while
    its gates, states and gradients stay fp32: close to the fp32 layer, not equal to it."""
    lens = [9, 4, 7, 1, 9, 3]
    lstm, x, h0, c0 = _case(lens, seed=3, emb=24, hidden=32)
    lstm, x, h0, c0 = lstm.float(), x.float(), h0.float(), c0.float()
    packed = pack_padded_sequence(x, torch.tensor(lens), batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices
    runs = []
    for low in (None, torch.bfloat16):
        leaves = [
            packed.data.detach().requires_grad_(),
            h0[0, order].requires_grad_(),
            c0[0, order].requires_grad_(),
            *(w.detach().requires_grad_() for w in lstm.all_weights[0]),
        ]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low is not None):
            outs = packed_lstm_layer(leaves[0], packed.batch_sizes, *leaves[1:], gemm_dtype=low)
        assert all(o.dtype == torch.float32 for o in outs)
        runs.append((outs, _grads_of(outs, leaves, seed=4)))
    (outs32, grads32), (outs16, grads16) = runs
    for got, want in zip((*outs16, *grads16), (*outs32, *grads32), strict=True):
        assert got.dtype == want.dtype == torch.float32
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < 2e-2
    assert not torch.equal(outs16[0], outs32[0])  # the products really ran in bf16
