"""The op-level LSTM the module calls: layers in Python, every time step in native code."""

from typing import List, Tuple

import torch
from torch import Tensor

from . import _ops


def lstm(input: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor, weights: List[Tensor],
         num_layers: int, has_biases: bool, bidirectional: bool, has_projections: bool,
         dropout: float = 0.0, training: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Multi-layer LSTM over padded, time-major input with per-sequence lengths.

    input [T, B, I]; lengths [B] int64 (CPU or input's device); h0 [L*D, B, Hout];
    c0 [L*D, B, H]; weights in nn.LSTM's `_flat_weights` order.
    Returns output [T, B, D*Hout] (0 past each length), h_n [L*D, B, Hout], c_n [L*D, B, H].
    Arguments are assumed checked (fastlstm.LSTM does it); the native op checks again.
    """
    D = 2 if bidirectional else 1
    per_layer = D * (2 + 2 * has_biases + has_projections)
    h_n, c_n = [], []
    x = input
    for layer in range(num_layers):
        states = slice(layer * D, (layer + 1) * D)
        x, h, c, _ = _ops.layer_forward(
            x, lengths, h0[states], c0[states],
            weights[layer * per_layer:(layer + 1) * per_layer],
            has_biases, has_projections, bidirectional)
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and training and layer < num_layers - 1:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, torch.cat(h_n, 0), torch.cat(c_n, 0)
