"""An LSTM layer over a packed sequence with its own backward, for the CPU's training step.

nn.LSTM's native packed path on the CPU records every time step in autograd: its backward runs
one weight-gradient matrix product per step, accumulates each step's gradient with an add, and
zero-fills a whole-sequence gradient buffer for every step's slice of the precomputed input
projection. Here the forward keeps the gate activations and cell states, and the backward walks
the steps once for the recurrent gradients only, then computes the weight, bias and input
gradients in one matrix product each over all time steps. The maths is nn.LSTM's (gate order
i, f, g, o; h0/c0 of the packed rows; final states of every row at its own last step), which
tests/test_lstm.py checks to double precision against nn.LSTM.

Under bf16 autocast (`gemm_dtype=torch.bfloat16`) the layer's matrix products take bf16
operands, as autocast's would (on CPUs with AMX these run on its tiles), while the gates, cells,
states and gradients stay in fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seq2seq.precision import padded_cast


def packed_lstm_layer(
    x: Tensor,
    batch_sizes: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    gemm_dtype: torch.dtype | None = None,
    gemm_weights: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over packed data.

    x (N, E): a PackedSequence's data (time-major, rows longest first); batch_sizes (T,) its
    CPU batch sizes; h0, c0 (B, H) in the packed (sorted) row order, B = batch_sizes[0];
    weights as nn.LSTM's layer weights. Returns (out (N, H), h_n (B, H), c_n (B, H)), h_n and
    c_n taken at each row's own last step. `gemm_dtype` (e.g. torch.bfloat16): the matrix
    products' operand type (their results are added to fp32 gates); None: x's own.
    `gemm_weights`: (w_ih, w_hh) already cast to `gemm_dtype` (a model casts each weight once per
    training step, not at every call of a layer; None: cast here).
    """
    if gemm_dtype is not None and gemm_weights is None:
        gemm_weights = (w_ih.detach().to(gemm_dtype), w_hh.detach().to(gemm_dtype))
    if gemm_dtype is None:
        gemm_weights = None
    args = (x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, gemm_weights)
    return _PackedLSTMLayer.apply(*args)


class _PackedLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *args: Any) -> tuple[Tensor, Tensor, Tensor]:  # as _forward's
        with torch.autocast("cpu", enabled=False):  # the operand types are set explicitly
            return _forward(ctx, *args)

    @staticmethod
    def backward(ctx: Any, d_out: Tensor | None, d_hn: Tensor | None, d_cn: Tensor | None):
        with torch.autocast("cpu", enabled=False):
            return (*_backward(ctx, d_out, d_hn, d_cn), None)


def _forward(
    ctx: Any,
    x: Tensor,
    batch_sizes: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    gemm_weights: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    low = None if gemm_weights is None else gemm_weights[0].dtype
    sizes = batch_sizes.tolist()
    hidden = w_hh.shape[1]
    # every step's input projection first; each step then adds its recurrent term in place
    # and applies the nonlinearities in place: acts ends up holding i, f, g, o
    x_low = None
    if gemm_weights is None:
        acts = torch.addmm(b_ih + b_hh, x, w_ih.t())  # (N, 4H)
    else:  # rows padded to a bucket: oneDNN keeps a kernel per shape (precision.padded_cast)
        x_low = padded_cast(x, gemm_weights[0].dtype)
        acts = torch.add(b_ih + b_hh, torch.mm(x_low, gemm_weights[0].t())[: x.shape[0]])
    cells = x.new_empty(x.shape[0], hidden)
    tanh_cells = x.new_empty(x.shape[0], hidden)
    out = x.new_empty(x.shape[0], hidden)
    h_n, c_n = h0.clone(), c0.clone()
    h, c = h0, c0
    w_hh_t = w_hh.t() if gemm_weights is None else gemm_weights[1].t()
    start = 0
    for t, size in enumerate(sizes):
        stop = start + size
        if low is None:
            gates = acts[start:stop].addmm_(h[:size], w_hh_t)
        else:
            gates = acts[start:stop].add_(torch.mm(h[:size].to(low), w_hh_t))
        ifo = gates.view(size, 4, hidden)
        ifo[:, :2].sigmoid_()
        ifo[:, 2].tanh_()
        ifo[:, 3].sigmoid_()
        c = torch.addcmul(ifo[:, 0] * ifo[:, 2], ifo[:, 1], c[:size], out=cells[start:stop])
        h = torch.mul(ifo[:, 3], torch.tanh(c, out=tanh_cells[start:stop]), out=out[start:stop])
        nxt = sizes[t + 1] if t + 1 < len(sizes) else 0
        if nxt < size:  # rows nxt..size-1 end at this step
            h_n[nxt:size] = h[nxt:]
            c_n[nxt:size] = c[nxt:]
        start = stop
    ctx.sizes, ctx.gemm_weights = sizes, gemm_weights
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out, x_low)
    return out, h_n, c_n


def _backward(ctx: Any, d_out: Tensor | None, d_hn: Tensor | None, d_cn: Tensor | None):
    # gradients autograd has none for (an encoder's outputs, a decoder's final state) come
    # as None, not as zero-filled tensors (set_materialize_grads(False) in forward)
    x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out, x_low = ctx.saved_tensors
    sizes: list[int] = ctx.sizes
    gemm_weights: tuple[Tensor, Tensor] | None = ctx.gemm_weights
    low = None if gemm_weights is None else gemm_weights[0].dtype
    w_rec = w_hh if gemm_weights is None else gemm_weights[1]
    n, hidden = acts.shape[0], w_hh.shape[1]
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)

    def previous(first: Tensor, seq: Tensor) -> Tensor:  # each packed row's step before
        rows = [seq[starts[t - 1] : starts[t - 1] + sizes[t]] for t in range(1, len(sizes))]
        return torch.cat([first[: sizes[0]], *rows])

    # Every factor that does not depend on the recurrent gradient, at all steps at once:
    # d gates = (dc * [g i', c_prev f', i g'], dh * tanh(c) o') with the derivatives
    # a' = a(1-a) of the sigmoid gates and g' = 1-g^2; dc = dc_next + dh * o (1-tanh(c)^2)
    i, f, g, o = acts.view(n, 4, hidden).unbind(1)
    by_dc = acts.new_empty(n, 3, hidden)
    torch.mul(g, i * (1 - i), out=by_dc[:, 0])
    torch.mul(previous(c0, cells), f * (1 - f), out=by_dc[:, 1])
    torch.mul(i, 1 - g * g, out=by_dc[:, 2])
    by_dh = tanh_cells * (o * (1 - o))  # for the o gate
    into_dc = o * (1 - tanh_cells * tanh_cells)
    # the gates' gradients; with `low` products they are kept in `low` (each step's in fp32 in
    # `dg_all`'s first rows, then cast once: its recurrent product and the weight products
    # read the cast)
    if low is None:
        d_gates = torch.empty_like(acts)
    else:  # rows padded as x_low's, the extra ones zero
        d_gates = acts.new_empty(x_low.shape[0], acts.shape[1], dtype=low)
        d_gates[n:] = 0
    dg_all = (d_gates if low is None else acts.new_empty(sizes[0], 4 * hidden)).view(-1, 4, hidden)
    dh = acts.new_zeros(sizes[0], hidden) if d_hn is None else d_hn.clone()
    dc = acts.new_zeros(sizes[0], hidden) if d_cn is None else d_cn.clone()
    # dh[:size] holds the gradient of step t's output h_t on entering step t: d_hn for a
    # row's last step, else step t+1's recurrent product; plus d_out of step t
    if d_out is not None:
        dh[: sizes[-1]] += d_out[starts[-1] :]
    for t in range(len(sizes) - 1, -1, -1):
        size, start = sizes[t], starts[t]
        stop = start + size
        dh_t, dc_t = dh[:size], dc[:size]
        dc_t.addcmul_(dh_t, into_dc[start:stop])
        dg = dg_all[start:stop] if low is None else dg_all[:size]
        torch.mul(dc_t.unsqueeze(1), by_dc[start:stop], out=dg[:, :3])
        torch.mul(dh_t, by_dh[start:stop], out=dg[:, 3])
        dc_t.mul_(f[start:stop])  # into step t-1's cell (rows ending there hold d_cn)
        if low is not None:  # dh = d_out + dg @ w_hh, the product in `low`
            d_gates[start:stop].copy_(dg.view(size, 4 * hidden))
            rec = torch.mm(d_gates[start:stop], w_rec)
            if t == 0 or d_out is None:
                dh_t.copy_(rec)
                continue
            prev, before = starts[t - 1], sizes[t - 1]
            torch.add(d_out[prev : prev + size], rec, out=dh_t)
        elif t == 0 or d_out is None:
            torch.mm(d_gates[start:stop], w_hh, out=dh_t)
            continue
        else:
            prev, before = starts[t - 1], sizes[t - 1]
            torch.addmm(d_out[prev : prev + size], d_gates[start:stop], w_hh, out=dh_t)
        if before > size:  # rows whose last step is t-1: d_hn (kept in dh) + d_out
            dh[size:before] += d_out[prev + size : prev + before]
    if gemm_weights is None:
        d_w_hh = d_gates.t().mm(previous(h0, out))
        d_w_ih = d_gates.t().mm(x)
        d_b = d_gates.sum(0)
        d_x = d_gates.mm(w_ih) if ctx.needs_input_grad[0] else None
    else:  # bf16 products over rows padded to the bucket (zero rows add nothing)
        prev_low = padded_cast(previous(h0, out), gemm_weights[0].dtype)
        d_w_hh = d_gates.t().mm(prev_low).to(w_hh.dtype)
        d_w_ih = d_gates.t().mm(x_low).to(w_ih.dtype)
        d_b = d_gates[:n].sum(0, dtype=acts.dtype)
        d_x = None
        if ctx.needs_input_grad[0]:
            d_x = d_gates.mm(gemm_weights[0])[:n].to(x.dtype)
    return d_x, None, dh, dc, d_w_ih, d_w_hh, d_b, d_b.clone()
