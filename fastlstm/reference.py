"""A plain-PyTorch masked LSTM with per-sequence lengths.

A readable model of the semantics (zero lengths included, which nn.LSTM cannot take), never
the fast path: it runs one Python iteration per time step. Tested against nn.LSTM in
tests/test_reference.py; nn.LSTM remains the judge of correctness.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def lstm_reference(input: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor,
                   weights: List[Tensor], num_layers: int, has_biases: bool,
                   bidirectional: bool, has_projections: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Same contract as fastlstm.functional.lstm without dropout: input [T, B, I] time-major,
    lengths [B], h0 [L*D, B, Hout], c0 [L*D, B, H], weights in nn.LSTM's flat order."""
    D = 2 if bidirectional else 1
    per_dir = 2 + 2 * has_biases + has_projections
    steps = input.shape[0]
    lengths = lengths.to(input.device)
    x = input
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for direction in range(D):
            k = (layer * D + direction) * per_dir
            w = weights[k:k + per_dir]
            w_ih, w_hh = w[0], w[1]
            b = w[2] + w[3] if has_biases else None
            w_hr = w[-1] if has_projections else None
            h, c = h0[layer * D + direction], c0[layer * D + direction]
            out = []
            order = range(steps - 1, -1, -1) if direction == 1 else range(steps)
            for t in order:
                active = (t < lengths).unsqueeze(1)
                # Zero the padding before it meets the weights: NaN / Inf there would
                # otherwise reach the weight gradients (NaN * 0 in the backward).
                x_t = torch.where(active, x[t], torch.zeros_like(x[t]))
                gates = x_t @ w_ih.T + h @ w_hh.T
                if b is not None:
                    gates = gates + b
                i, f, g, o = gates.chunk(4, 1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                if w_hr is not None:
                    h_new = h_new @ w_hr.T
                # where() rather than a product keeps NaN / Inf in padding out of the state.
                c = torch.where(active, c_new, c)
                h = torch.where(active, h_new, h)
                out.append(torch.where(active, h_new, torch.zeros_like(h_new)))
            if direction == 1:
                out.reverse()
            outs.append(torch.stack(out) if out else x.new_zeros(0, x.shape[1], h.shape[1]))
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outs, 2)
    return x, torch.stack(h_n), torch.stack(c_n)


def lstm_reference_jvp(input: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor,
                       weights: List[Tensor], tangents: Tuple[Optional[Tensor], ...],
                       num_layers: int, has_biases: bool, bidirectional: bool,
                       has_projections: bool
                       ) -> Tuple[Tuple[Tensor, Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]:
    """lstm_reference and its forward-mode derivative: ((output, h_n, c_n), (their tangents)).

    tangents = (d_input, d_h0, d_c0, *d_weights), each shaped as its primal or None for zero.
    The tangent recurrence is the linearisation of lstm_reference's, step by step (sigmoid' =
    s (1 - s), tanh' = 1 - tanh^2), with the same where() masks: the tangents are exactly 0 in
    the output past each sequence's end, and d_h_n, d_c_n = d_h0, d_c0 for a length-0 one.
    Plain PyTorch ops throughout, so the result is itself differentiable (reverse over forward,
    vmap). fastlstm's forward-mode rules (fastlstm/_ops.py) use it."""
    D = 2 if bidirectional else 1
    per_dir = 2 + 2 * has_biases + has_projections

    def tangent(t: Optional[Tensor], like: Tensor) -> Tensor:
        return torch.zeros_like(like) if t is None else t

    d_input, d_h0, d_c0 = (tangent(t, p) for t, p in zip(tangents[:3], (input, h0, c0)))
    d_weights = [tangent(t, w) for t, w in zip(tangents[3:], weights)]
    steps = input.shape[0]
    lengths = lengths.to(input.device)
    x, dx = input, d_input
    h_n, c_n, dh_n, dc_n = [], [], [], []
    for layer in range(num_layers):
        outs, d_outs = [], []
        for direction in range(D):
            k = (layer * D + direction) * per_dir
            w, dw = weights[k:k + per_dir], d_weights[k:k + per_dir]
            w_ih, w_hh = w[0], w[1]
            b = w[2] + w[3] if has_biases else None
            db = dw[2] + dw[3] if has_biases else None
            w_hr, dw_hr = (w[-1], dw[-1]) if has_projections else (None, None)
            s = layer * D + direction
            h, c, dh, dc = h0[s], c0[s], d_h0[s], d_c0[s]
            out, d_out = [], []
            order = range(steps - 1, -1, -1) if direction == 1 else range(steps)
            for t in order:
                active = (t < lengths).unsqueeze(1)
                x_t = torch.where(active, x[t], torch.zeros_like(x[t]))
                dx_t = torch.where(active, dx[t], torch.zeros_like(dx[t]))
                gates = x_t @ w_ih.T + h @ w_hh.T
                d_gates = dx_t @ w_ih.T + x_t @ dw[0].T + dh @ w_hh.T + h @ dw[1].T
                if b is not None:
                    gates = gates + b
                    d_gates = d_gates + db
                i, f, g, o = gates.chunk(4, 1)
                di, df, dg, do = d_gates.chunk(4, 1)
                si, sf, so, tg = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), \
                    torch.tanh(g)
                dsi, dsf, dso = si * (1 - si) * di, sf * (1 - sf) * df, so * (1 - so) * do
                dtg = (1 - tg * tg) * dg
                c_new = sf * c + si * tg
                dc_new = dsf * c + sf * dc + dsi * tg + si * dtg
                tc = torch.tanh(c_new)
                h_new = so * tc
                dh_new = dso * tc + so * (1 - tc * tc) * dc_new
                if w_hr is not None:
                    dh_new = dh_new @ w_hr.T + h_new @ dw_hr.T
                    h_new = h_new @ w_hr.T
                c = torch.where(active, c_new, c)
                dc = torch.where(active, dc_new, dc)
                h = torch.where(active, h_new, h)
                dh = torch.where(active, dh_new, dh)
                out.append(torch.where(active, h_new, torch.zeros_like(h_new)))
                d_out.append(torch.where(active, dh_new, torch.zeros_like(dh_new)))
            if direction == 1:
                out.reverse()
                d_out.reverse()
            empty = x.new_zeros(0, x.shape[1], h.shape[1])
            outs.append(torch.stack(out) if out else empty)
            d_outs.append(torch.stack(d_out) if d_out else empty)
            h_n.append(h)
            c_n.append(c)
            dh_n.append(dh)
            dc_n.append(dc)
        x, dx = torch.cat(outs, 2), torch.cat(d_outs, 2)
    return ((x, torch.stack(h_n), torch.stack(c_n)),
            (dx, torch.stack(dh_n), torch.stack(dc_n)))
