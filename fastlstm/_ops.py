"""Loads the native ops and registers their fake (meta) and autograd implementations.

torch.ops.fastlstm.lstm_layer_forward / lstm_layer_backward are defined in csrc/ops.cpp;
every shape is documented in csrc/lstm.h.
"""

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.fastlstm.*)

layer_forward = torch.ops.fastlstm.lstm_layer_forward.default
layer_backward = torch.ops.fastlstm.lstm_layer_backward.default


def reserve_numel(T, B, H, Hout, D, has_projections):
    """Elements of the reserve; mirrors LayerDims::reserve_per_dir in csrc/lstm.h."""
    row_width = 4 * H + H + Hout + (H if has_projections else 0)
    return D * T * B * row_width


@torch.library.register_fake("fastlstm::lstm_layer_forward")
def _layer_forward_fake(input, lengths, h0, c0, weights, has_biases, has_projections,
                        bidirectional):
    T, B, _ = input.shape
    D = 2 if bidirectional else 1
    H = weights[1].shape[0] // 4
    Hout = h0.shape[2] if has_projections else H
    return (input.new_empty(T, B, D * Hout), input.new_empty(D, B, Hout),
            input.new_empty(D, B, H),
            input.new_empty(reserve_numel(T, B, H, Hout, D, has_projections)))


@torch.library.register_fake("fastlstm::lstm_layer_backward")
def _layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, weights,
                         reserve, has_biases, has_projections, bidirectional,
                         input_requires_grad):
    grad_input = input.new_empty(input.shape) if input_requires_grad else input.new_empty(0)
    return (grad_input, h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            [w.new_empty(w.shape) for w in weights])


def _setup_context(ctx, inputs, output):
    input, lengths, h0, c0, weights, has_biases, has_projections, bidirectional = inputs
    reserve = output[3]
    ctx.save_for_backward(input, lengths, h0, c0, reserve, *weights)
    ctx.flags = (has_biases, has_projections, bidirectional)
    ctx.mark_non_differentiable(reserve)


def _backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_reserve):
    input, lengths, h0, c0, reserve, *weights = ctx.saved_tensors
    input_requires_grad = ctx.needs_input_grad[0]
    grad_input, grad_h0, grad_c0, grad_weights = layer_backward(
        grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, weights, reserve, *ctx.flags,
        input_requires_grad)
    return (grad_input if input_requires_grad else None, None, grad_h0, grad_c0, grad_weights,
            None, None, None)


torch.library.register_autograd("fastlstm::lstm_layer_forward", _backward,
                                setup_context=_setup_context)
