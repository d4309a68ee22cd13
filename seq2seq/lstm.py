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
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, d_hn: Tensor, d_cn: Tensor):
        x, h0, c0, w_ih, w_hh, acts, cells, tanh_cells, out = ctx.saved_tensors
        sizes: list[int] = ctx.sizes
        hidden = w_hh.shape[1]
        # the nonlinearities' derivatives at every step at once: a(1-a) for the sigmoid gates,
        # 1-g^2 for the tanh gate, 1-tanh(c)^2 for the cell's tanh
        d_act = (acts * (1 - acts)).view(-1, 4, hidden)
        g_all = acts.view(-1, 4, hidden)[:, 2]
        d_act[:, 2] = 1 - g_all * g_all
        d_tanh = 1 - tanh_cells * tanh_cells
        d_gates = torch.empty_like(acts)
        dh = d_hn.clone()  # a row's state gradient enters at its last step, untouched till then
        dc = d_cn.clone()
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        for t in range(len(sizes) - 1, -1, -1):
            size, start = sizes[t], starts[t]
            stop = start + size
            c_prev = c0[:size] if t == 0 else cells[starts[t - 1] : starts[t - 1] + size]
            i, f, g, o = acts[start:stop].view(size, 4, hidden).unbind(1)
            dh_t = d_out[start:stop] + dh[:size]
            dc_t = torch.addcmul(dc[:size], dh_t * o, d_tanh[start:stop])
            dg = d_gates[start:stop].view(size, 4, hidden)
            torch.mul(dc_t, g, out=dg[:, 0])
            torch.mul(dc_t, c_prev, out=dg[:, 1])
            torch.mul(dc_t, i, out=dg[:, 2])
            torch.mul(dh_t, tanh_cells[start:stop], out=dg[:, 3])
            dg.mul_(d_act[start:stop])
            torch.mm(d_gates[start:stop], w_hh, out=dh[:size])
            torch.mul(dc_t, f, out=dc[:size])
        # the previous hidden state of every packed row: h0 for step 0, else the step before's
        h_prev = torch.cat(
            [h0[: sizes[0]]]
            + [out[starts[t - 1] : starts[t - 1] + sizes[t]] for t in range(1, len(sizes))]
        )
        d_w_hh = d_gates.t().mm(h_prev)
        d_w_ih = d_gates.t().mm(x)
        d_b = d_gates.sum(0)
        d_x = d_gates.mm(w_ih) if ctx.needs_input_grad[0] else None
        return d_x, None, dh, dc, d_w_ih, d_w_hh, d_b, d_b.clone()
