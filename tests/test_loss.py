"""seq2seq.loss.linear_cross_entropy against F.cross_entropy(F.linear(...)) in fp64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seq2seq.loss import linear_cross_entropy

N, H, V = 23, 8, 31


def _inputs(seed: int, bias: bool, ignored: bool) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    gold = torch.randint(1, V, (N,), generator=g)
    if ignored:
        gold[::4] = 0  # ignore_index 0: every fourth row adds nothing
    return x, w, b, gold


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ignored", [False, True])
def test_loss_gradients_and_argmax_equal_f_cross_entropy(ls: float, bias: bool, ignored: bool):
    x, w, b, gold = _inputs(3, bias, ignored)
    ignore = 0 if ignored else -100
    leaves = [t for t in (x, w, b) if t is not None]
    logits = F.linear(x, w, b)
    want = F.cross_entropy(logits, gold, reduction="sum", label_smoothing=ls, ignore_index=ignore)
    want_grads = torch.autograd.grad(want * 0.37, leaves)  # a scaled loss, as in training
    got, pred = linear_cross_entropy(x, w, b, gold, ls, ignore, argmax=True)
    got_grads = torch.autograd.grad(got * 0.37, leaves)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)
    for mine, theirs in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-13)
    assert torch.equal(pred, logits.argmax(1))
    assert not pred.requires_grad
    assert linear_cross_entropy(x, w, b, gold, ls, ignore)[1].numel() == 0  # no argmax asked


def test_gradcheck_with_smoothing_and_ignored_rows() -> None:
    x, w, b, gold = _inputs(7, True, True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: linear_cross_entropy(x, w, b, gold, 0.2, 0)[0], (x, w, b)
    )


def test_bias_gradient_with_a_frozen_weight_is_softmax_minus_gold_counts() -> None:
    x, w, b, gold = _inputs(9, True, False)
    frozen = w.detach()
    loss, _ = linear_cross_entropy(x, frozen, b, gold)
    loss.backward()
    assert x.grad is not None and b is not None and b.grad is not None
    logits = F.linear(x.detach(), frozen, b.detach())
    p = logits.softmax(1)  # d loss / d b = sum over rows of softmax - one-hot
    torch.testing.assert_close(b.grad, p.sum(0) - torch.bincount(gold, minlength=V))


def test_every_row_ignored_gives_zero_loss_and_zero_gradients() -> None:
    x, w, b, _ = _inputs(11, True, False)
    gold = torch.zeros(N, dtype=torch.int64)
    loss, _ = linear_cross_entropy(x, w, b, gold, 0.1, 0)
    loss.backward()
    assert loss.item() == 0.0
    for t in (x, w, b):
        assert t is not None and t.grad is not None and not t.grad.any()


def test_fp32_agrees_with_fp64_on_wide_logits() -> None:
    """Logits spread over hundreds of nats (softmax entries underflow to 0 in fp32): the loss
    stays finite and close to fp64's."""
    x, w, b, gold = _inputs(13, True, False)
    x64 = (x.detach() * 30).requires_grad_()
    want, _ = linear_cross_entropy(x64, w.detach(), b.detach(), gold)
    x32 = x64.detach().float().requires_grad_()
    got, _ = linear_cross_entropy(x32, w.detach().float(), b.detach().float(), gold)
    assert torch.isfinite(got) and want.item() > 100
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-3)
    got.backward()
    assert x32.grad is not None and torch.isfinite(x32.grad).all()


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_bf16_products_stay_close_to_fp32(ls: float, bias: bool) -> None:
    """With `gemm_weight` (the weight in bf16) the products take bf16 operands over rows padded
    to precision.ROW_BUCKET; the loss and every gradient stay fp32, within bf16's rounding."""
    x, w, b, gold = _inputs(5, bias, ignored=True)
    x, w = x.detach().float(), w.detach().float()
    b = None if b is None else b.detach().float()
    runs = []
    for low in (None, w.bfloat16()):
        leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
        bb = leaves[2] if b is not None else None
        loss, pred = linear_cross_entropy(leaves[0], leaves[1], bb, gold, ls, 0, True, low)
        loss.backward()
        runs.append((loss.detach(), pred, [t.grad for t in leaves]))
    (loss32, pred32, grads32), (loss16, pred16, grads16) = runs
    assert loss16.dtype == torch.float32 and pred16.shape == pred32.shape == (N,)
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0.0)
    assert not torch.equal(loss16, loss32)  # the products really ran in bf16
    for got, want in zip(grads16, grads32, strict=True):
        assert got.dtype == torch.float32
        assert ((got - want).norm() / want.norm()).item() < 2e-2
    assert (grads16[0][::4] == 0).all()  # ignored rows: no gradient, padding or not
