"""The op-level LSTM the module calls: layers in Python, every time step in native code."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _ops


def packed_layout(batch_sizes: Tensor, sorted_indices: Optional[Tensor], batch: int,
                  total: int) -> Tuple[Tensor, Tensor]:
    """(tokens [N], lengths [B]) of a packed layout of N = total rows, int64 on the CPU.

    tokens[n] = t * B + b: where packed row n (step t, sorted slot s, batch index
    b = sorted_indices[s]) lives in a [T, B, *] tensor viewed as [T*B, *]. lengths[b] is
    sequence b's length, in batch order. No op here has a data-dependent output shape
    (searchsorted rather than repeat_interleave), so torch.compile needs no graph break.
    """
    batch_sizes = batch_sizes.to(torch.int64)
    ends = torch.cumsum(batch_sizes, 0)
    rows = torch.arange(total, dtype=torch.int64)
    step = torch.searchsorted(ends, rows, right=True)
    slot = rows - (ends - batch_sizes)[step]
    lengths = (batch_sizes.unsqueeze(0) > torch.arange(batch).unsqueeze(1)).sum(1)  # sorted
    if sorted_indices is not None:
        order = sorted_indices.to(device="cpu", dtype=torch.int64)
        slot = order[slot]
        lengths = torch.empty_like(lengths).index_copy_(0, order, lengths)
    return step * batch + slot, lengths


def tokens_from_lengths(lengths: Tensor, steps: int) -> Tensor:
    """Where the packed rows of pack_padded_sequence(x, lengths, enforce_sorted=False) live in
    x viewed as [T*B, *]: the same torch.sort(descending=True) order, so the same rows in the
    same order."""
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    sorted_lengths, order = torch.sort(lengths, descending=True)
    batch_sizes = (sorted_lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1)
    tokens, _ = packed_layout(batch_sizes, order, lengths.shape[0], int(lengths.sum()))
    return tokens


def needs_grad(input: Tensor, h0: Tensor, c0: Tensor, weights: List[Tensor]) -> bool:
    """Whether autograd would record the forward: grad mode is on and some input, state or
    weight requires a gradient."""
    if not torch.is_grad_enabled():
        return False
    return input.requires_grad or h0.requires_grad or c0.requires_grad or \
        any(w.requires_grad for w in weights)


def lstm(input: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor, weights: List[Tensor],
         num_layers: int, has_biases: bool, bidirectional: bool, has_projections: bool,
         dropout: float = 0.0, training: bool = False, tokens: Optional[Tensor] = None,
         token_dropout: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Multi-layer LSTM over padded, time-major input with per-sequence lengths.

    input [T, B, I]; lengths [B] int64 (CPU or input's device); h0 [L*D, B, Hout];
    c0 [L*D, B, H]; weights in nn.LSTM's `_flat_weights` order.
    Returns output [T, B, D*Hout] (0 past each length), h_n [L*D, B, Hout], c_n [L*D, B, H].
    Arguments are assumed checked (fastlstm.LSTM does it); the native op checks again.

    Inter-layer dropout is drawn, as nn.LSTM over a PackedSequence draws it, on the packed
    valid tokens only, in packed order: `tokens` (from packed_layout) gives that order, or
    `token_dropout=True` derives it from lengths as pack_padded_sequence(enforce_sorted=False)
    would. With neither, it is drawn on the whole padded tensor, as nn.LSTM on padded input.
    On the CPU the same seed then gives nn.LSTM's masks.
    """
    D = 2 if bidirectional else 1
    per_layer = D * (2 + 2 * has_biases + has_projections)
    h_n, c_n = [], []
    x = input
    # No gradient can flow: the reserve-free op, whose memory follows the valid tokens. (Under
    # torch.func transforms the forward goes through LayerForward, which has batching rules.)
    inference = not needs_grad(input, h0, c0, weights) and (
        torch.compiler.is_compiling() or not _ops.transforms_active())
    for layer in range(num_layers):
        states = slice(layer * D, (layer + 1) * D)
        args = (x, lengths, h0[states], c0[states],
                weights[layer * per_layer:(layer + 1) * per_layer],
                has_biases, has_projections, bidirectional)
        if inference:
            x, h, c = _ops.layer_inference(*args)
        else:
            x, h, c, _ = _ops.layer_forward_any(*args)
        h_n.append(h)
        c_n.append(c)
        if dropout > 0 and training and layer < num_layers - 1:
            if tokens is None and token_dropout and lengths.device.type == "cpu" and \
                    not torch.compiler.is_compiling():
                # (Under torch.compile, N = sum(lengths) would be a data-dependent size, and
                # lengths on a GPU would cost a sync: the padded draw below is used there,
                # with the same distribution.)
                tokens = tokens_from_lengths(lengths, x.shape[0]).to(x.device)
            if tokens is not None:
                steps, batch, width = x.shape
                kept = torch.nn.functional.dropout(
                    x.reshape(steps * batch, width).index_select(0, tokens), dropout,
                    training=True)
                x = x.new_zeros(steps * batch, width).index_copy(0, tokens, kept).view(
                    steps, batch, width)
            else:
                x = torch.nn.functional.dropout(x, dropout, training=True)
    return x, torch.cat(h_n, 0), torch.cat(c_n, 0)
