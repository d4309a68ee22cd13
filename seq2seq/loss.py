"""The output layer and its cross-entropy in one autograd function, for the CPU training step.

`F.cross_entropy(F.linear(x, W, b), gold)` makes three (N, V) tensors besides the logits (the
log-softmax, the gradient of the NLL and that of the log-softmax), each a fresh allocation and
a pass over memory; at Multi30k's sizes (N ~ 1,700 target tokens, V ~ 6,000 words) they cost
about a fifth of the output layer's time on a 2-core CPU. `linear_cross_entropy` turns the
logits into the softmax in place and keeps only that: the gradient of the logits is the softmax
minus the one-hot target (minus the uniform share under label smoothing), so the backward feeds
the softmax to the two matrix products as it is and applies the one-hot and uniform terms as a
row gather and index-add, and a rank-one correction. The maths is F.cross_entropy's with
reduction "sum", `label_smoothing` and `ignore_index` (tests/test_loss.py checks it in fp64).
Under bf16 autocast (`gemm_weight`: the weight in bf16) the three matrix products take bf16
operands, the softmax is computed in fp32 and kept in bf16 for the backward's products.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.precision import padded_cast


def _scaled_mm(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """alpha * (a @ b), the scaling done by the matrix product itself."""
    if alpha == 1.0:
        return a @ b
    out = a.new_empty(a.shape[0], b.shape[1])
    return torch.addmm(out, a, b, beta=0, alpha=alpha, out=out)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        gold: Tensor,
        label_smoothing: float,
        ignore_index: int,
        argmax: bool,
        gemm_weight: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        x_low = None
        if gemm_weight is None:
            z = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())  # (N, V)
        else:  # rows padded to a bucket: oneDNN keeps a kernel per shape (precision.padded_cast)
            x_low = padded_cast(x, gemm_weight.dtype)
            with torch.autocast(x.device.type, enabled=False):  # bias added as autocast would
                w_t = gemm_weight.t()
                if bias is None:
                    prod = x_low @ w_t
                else:
                    prod = torch.addmm(bias.to(gemm_weight.dtype), x_low, w_t)
            z = prod[:n].to(x.dtype)  # (N, V) fp32
        keep = gold != ignore_index
        idx = gold.masked_fill(~keep, 0)
        pred = z.argmax(1) if argmax else gold.new_empty(0)
        z_gold = z.gather(1, idx.unsqueeze(1)).squeeze(1)
        z_mean = z.mean(1) if label_smoothing else None
        top = z.amax(1, keepdim=True)
        z.sub_(top).exp_()
        total = z.sum(1, keepdim=True)
        z.div_(total)  # the softmax, in the logits' memory
        lse = (total.log_() + top).squeeze(1)
        nll = lse - z_gold
        if z_mean is not None:
            nll = (1 - label_smoothing) * nll + label_smoothing * (lse - z_mean)
        if not bool(keep.all()):
            z.masked_fill_(~keep.unsqueeze(1), 0)  # ignored rows: no gradient
            nll = nll.masked_fill(~keep, 0)
        p = z if gemm_weight is None else padded_cast(z, gemm_weight.dtype)
        ctx.save_for_backward(x, weight, p, idx, keep, x_low, gemm_weight)
        ctx.label_smoothing = label_smoothing
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(pred)
        return nll.sum(), pred

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _: Any) -> tuple[Tensor | None, ...]:
        x, weight, p, idx, keep, x_low, w_low = ctx.saved_tensors
        n = x.shape[0]
        if w_low is None:
            x_low, w_low = x, weight
        ls, vocab = ctx.label_smoothing, p.shape[1]
        # d loss / d z = p - (1 - ls) * onehot(gold) - ls / V on kept rows: p goes to the
        # products as it is; the other two terms are a gather / index-add and a rank-one term.
        # The incoming gradient (a scalar: 1 / tokens in training) scales the products inside
        # the matrix multiply (alpha) and the small terms before they are applied, instead of a
        # pass over each (N, H) and (V, H) result. This function runs on the CPU only (the
        # model's own path), where reading the scalar costs no device sync.
        scale = float(grad)
        hot = keep.to(x.dtype) * ((1 - ls) * scale)  # (N,) the one-hot's weight per row
        uniform = keep.to(x.dtype) * (ls / vocab * scale)  # (N,) the uniform term's per row
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _scaled_mm(p, w_low, scale)[:n].to(x.dtype)
            grad_x.sub_(weight.index_select(0, idx) * hot.unsqueeze(1))
            if ls:
                grad_x.sub_(torch.outer(uniform, weight.sum(0)))
        if ctx.needs_input_grad[1]:
            grad_w = _scaled_mm(p.t(), x_low, scale).to(weight.dtype)
            grad_w.index_add_(0, idx, x * hot.unsqueeze(1), alpha=-1)
            if ls:
                grad_w.sub_(uniform @ x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = p[:n].sum(0, dtype=x.dtype).mul_(scale)
            grad_b.index_add_(0, idx, hot, alpha=-1)
            if ls:
                grad_b.sub_(uniform.sum())
        return grad_x, grad_w, grad_b, None, None, None, None, None


def linear_cross_entropy(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    gold: Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    argmax: bool = False,
    gemm_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of the logits x @ weight.T + bias (N, V) against `gold` (N,), as
    F.cross_entropy(..., reduction="sum", label_smoothing, ignore_index), and with `argmax` the
    logits' argmax (N,) (no gradient; else an empty tensor). x (N, H) and weight (V, H) float;
    rows whose gold is `ignore_index` add nothing. Keeps one (N, V) tensor for the backward
    instead of four. `gemm_weight`: `weight` cast to bf16 (detached), for bf16 products; the
    loss and gradients stay in x's type."""
    args = (x, weight, bias, gold, label_smoothing, ignore_index, argmax, gemm_weight)
    loss, pred = _LinearCrossEntropy.apply(*args)
    return loss, pred
