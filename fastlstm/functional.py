"""The op-level LSTM the module calls: layers in Python, every time step in native code."""

from typing import List, Tuple

import torch
from torch import Tensor

from . import _ops


def needs_grad(input: Tensor, h0: Tensor, c0: Tensor, weights: List[Tensor]) -> bool:
    """Whether autograd would record the forward: grad mode is on and some input, state or
    weight requires a gradient."""
    if not torch.is_grad_enabled():
        return False
    return input.requires_grad or h0.requires_grad or c0.requires_grad or \
        any(w.requires_grad for w in weights)


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
    # No gradient can flow: the reserve-free op, whose memory follows the valid tokens.
    inference = not needs_grad(input, h0, c0, weights)
    for layer in range(num_layers):
        states = slice(layer * D, (layer + 1) * D)
        args = (x, lengths, h0[states], c0[states],
                weights[layer * per_layer:(layer + 1) * per_layer],
                has_biases, has_projections, bidirectional)
        if inference:
            x, h, c = _ops.layer_inference(*args)
        else:
            x, h, c, _ = _ops.layer_forward(*args)
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and training and layer < num_layers - 1:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, torch.cat(h_n, 0), torch.cat(c_n, 0)
