"""An LSTM layer over a packed sequence with its own backward, for the CPU's training step.

nn.LSTM's native packed path on the CPU records every time step in autograd: its backward runs
one weight-gradient matrix product per step, accumulates each step's gradient with an add, and
zero-fills a whole-sequence gradient buffer for every step's slice of the precomputed input
projection. Here the forward keeps the gate activations and cell states, and the backward walks
the steps once for the recurrent gradients only, then computes the weight, bias and input
gradients in one matrix product each over all time steps. The maths is nn.LSTM's (gate order
i, f, g, o; h0/c0 of the packed rows; final states of every row at its own last step), which
tests/test_lstm.py checks to double precision against nn.LSTM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def packed_lstm_layer(
    x: Tensor,
    batch_sizes: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over packed data.

    x (N, E): a PackedSequence's data (time-major, rows longest first); batch_sizes (T,) its
    CPU batch sizes; h0, c0 (B, H) in the packed (sorted) row order, B = batch_sizes[0];
    weights as nn.LSTM's layer weights. Returns (out (N, H), h_n (B, H), c_n (B, H)), h_n and
    c_n taken at each row's own last step.
    """
    return _PackedLSTMLayer.apply(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh)


class _PackedLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        batch_sizes: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        sizes = batch_sizes.tolist()
        hidden = w_hh.shape[1]
        # every step's input projection first; each step then adds its recurrent term in place
        # and applies the nonlinearities in place: acts ends up holding i, f, g, o
        acts = torch.addmm(b_ih + b_hh, x, w_ih.t())  # (N, 4H)
        cells = x.new_empty(x.shape[0], hidden)
        tanh_cells = x.new_empty(x.shape[0], hidden)
        out = x.new_empty(x.shape[0], hidden)
        h_n, c_n = h0.clone(), c0.clone()
        h, c = h0, c0
        w_hh_t = w_hh.t()
        start = 0
        for t, size in enumerate(sizes):
            stop = start + size
            gates = acts[start:stop].addmm_(h[:size], w_hh_t)
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
        ctx.sizes = sizes
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, d_out: Tensor | None, d_hn: Tensor | None, d_cn: Tensor | None):
        # gradients autograd has none for (an encoder's outputs, a decoder's final state) come
        # as None, not as zero-filled tensors (set_materialize_grads(False) in forward)
        x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out = ctx.saved_tensors
        sizes: list[int] = ctx.sizes
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
        d_gates = torch.empty_like(acts)
        dg_all = d_gates.view(n, 4, hidden)
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
            dg = dg_all[start:stop]
            torch.mul(dc_t.unsqueeze(1), by_dc[start:stop], out=dg[:, :3])
            torch.mul(dh_t, by_dh[start:stop], out=dg[:, 3])
            dc_t.mul_(f[start:stop])  # into step t-1's cell (rows ending there hold d_cn)
            if t == 0 or d_out is None:
                torch.mm(d_gates[start:stop], w_hh, out=dh_t)
                continue
            prev, before = starts[t - 1], sizes[t - 1]
            torch.addmm(d_out[prev : prev + size], d_gates[start:stop], w_hh, out=dh_t)
            if before > size:  # rows whose last step is t-1: d_hn (kept in dh) + d_out
                dh[size:before] += d_out[prev + size : prev + before]
        d_w_hh = d_gates.t().mm(previous(h0, out))
        d_w_ih = d_gates.t().mm(x)
        d_b = d_gates.sum(0)
        d_x = d_gates.mm(w_ih) if ctx.needs_input_grad[0] else None
        return d_x, None, dh, dc, d_w_ih, d_w_hh, d_b, d_b.clone()
