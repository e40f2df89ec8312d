"""A plain-PyTorch masked LSTM with per-sequence lengths.

A readable model of the semantics (zero lengths included, which nn.LSTM cannot take), never
the fast path: it runs one Python iteration per time step. Tested against nn.LSTM in
tests/test_reference.py; nn.LSTM remains the judge of correctness.
"""

from typing import List, Tuple

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
