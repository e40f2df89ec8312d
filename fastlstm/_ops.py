"""Loads the native ops and registers their fake (meta) and autograd implementations.

torch.ops.fastlstm.lstm_layer_forward / lstm_layer_backward / lstm_layer_inference are defined
in csrc/ops.cpp; every shape is documented in csrc/lstm.h. lstm_layer_inference (the forward
without a reserve, for when no gradient is needed) has no autograd formula.
"""

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.fastlstm.*)

layer_forward = torch.ops.fastlstm.lstm_layer_forward.default
layer_backward = torch.ops.fastlstm.lstm_layer_backward.default
layer_inference = torch.ops.fastlstm.lstm_layer_inference.default


def reserve_bytes(T, B, H, Hout, D, has_projections, dtype):
    """Bytes of the uint8 reserve; mirrors LayerDims::reserve_bytes_per_dir in csrc/lstm.h."""
    t_size = torch.empty((), dtype=dtype, device="meta").element_size()
    acc_size = 4 if dtype in (torch.float16, torch.bfloat16) else t_size
    per_dir = T * B * (5 * H * acc_size + (Hout + (H if has_projections else 0)) * t_size)
    return D * ((per_dir + 63) // 64 * 64)


def check_layer_args(input, lengths, h0, c0, weights, has_biases, has_projections,
                     bidirectional):
    """The checks of check_layer_args in csrc/ops.cpp, in the same order and with the same
    exception types (TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError), for the
    fake kernels (which run under torch.compile, and for mixed-device calls that dispatch to
    Meta). Returns (T, B, H, Hout, D)."""
    if input.dim() != 3:
        raise ValueError(f"fastlstm: input must be 3-D [T, B, I], got {input.dim()}-D with "
                         f"shape {list(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"fastlstm: input must be a floating-point tensor, got {input.dtype}")
    if lengths.dim() != 1:
        raise ValueError(f"fastlstm: lengths must be 1-D [B], got {lengths.dim()}-D with shape "
                         f"{list(lengths.shape)}")
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"fastlstm: lengths must be an integer tensor, got {lengths.dtype}")
    if lengths.device.type != "cpu" and lengths.device != input.device:
        raise ValueError(f"fastlstm: lengths must be on the CPU or on the input's device "
                         f"{input.device}, got {lengths.device}")
    T, B, I = input.shape
    if lengths.shape[0] != B:
        raise ValueError(f"fastlstm: lengths must have one entry per sequence ({B}), got "
                         f"{lengths.shape[0]}")
    D = 2 if bidirectional else 1
    per_dir = 2 + 2 * bool(has_biases) + bool(has_projections)
    if len(weights) != D * per_dir:
        raise ValueError(f"fastlstm: weights must hold {D * per_dir} tensors, got {len(weights)}")
    if h0.dim() != 3:
        raise ValueError(f"fastlstm: h0 must be 3-D [D, B, Hout], got {list(h0.shape)}")
    if c0.dim() != 3:
        raise ValueError(f"fastlstm: c0 must be 3-D [D, B, H], got {list(c0.shape)}")
    w_hh0 = weights[1]
    if w_hh0.dim() != 2 or w_hh0.shape[0] % 4 != 0 or w_hh0.shape[0] <= 0:
        raise ValueError(f"fastlstm: w_hh must be 2-D [4*H, Hout] with H > 0, got "
                         f"{list(w_hh0.shape)}")
    H = w_hh0.shape[0] // 4
    w_hr0 = weights[per_dir - 1]
    if has_projections and (w_hr0.dim() != 2 or w_hr0.shape[0] <= 0):
        raise ValueError(f"fastlstm: w_hr must be 2-D [Hout, H] with Hout > 0, got "
                         f"{list(w_hr0.shape)}")
    Hout = w_hr0.shape[0] if has_projections else H

    def check_shape(name, t, shape):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"fastlstm: {name} must have shape {list(shape)}, got "
                             f"{list(t.shape)}")

    def check_dtype_device(name, t):
        if t.dtype != input.dtype:
            raise TypeError(f"fastlstm: {name} must have the input's dtype {input.dtype}, got "
                            f"{t.dtype}")
        if t.device != input.device:
            raise ValueError(f"fastlstm: {name} must be on the input's device {input.device}, "
                             f"got {t.device}")

    check_shape("h0", h0, (D, B, Hout))
    check_shape("c0", c0, (D, B, H))
    check_dtype_device("h0", h0)
    check_dtype_device("c0", c0)
    shapes = [("w_ih", (4 * H, I)), ("w_hh", (4 * H, Hout))]
    if has_biases:
        shapes += [("b_ih", (4 * H,)), ("b_hh", (4 * H,))]
    if has_projections:
        shapes += [("w_hr", (Hout, H))]
    for direction in range(D):
        sfx = "_reverse" if direction == 1 else ""
        for k, (name, shape) in enumerate(shapes):
            w = weights[direction * per_dir + k]
            check_shape(name + sfx, w, shape)
            check_dtype_device(name + sfx, w)
    return T, B, H, Hout, D


@torch.library.register_fake("fastlstm::lstm_layer_forward")
def _layer_forward_fake(input, lengths, h0, c0, weights, has_biases, has_projections,
                        bidirectional):
    T, B, H, Hout, D = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                        has_projections, bidirectional)
    return (input.new_empty(T, B, D * Hout), input.new_empty(D, B, Hout),
            input.new_empty(D, B, H),
            input.new_empty(reserve_bytes(T, B, H, Hout, D, has_projections, input.dtype),
                            dtype=torch.uint8))


@torch.library.register_fake("fastlstm::lstm_layer_inference")
def _layer_inference_fake(input, lengths, h0, c0, weights, has_biases, has_projections,
                          bidirectional):
    T, B, H, Hout, D = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                        has_projections, bidirectional)
    return (input.new_empty(T, B, D * Hout), input.new_empty(D, B, Hout),
            input.new_empty(D, B, H))


@torch.library.impl("fastlstm::lstm_layer_inference", "CUDA")
def _layer_inference_cuda(input, lengths, h0, c0, weights, has_biases, has_projections,
                          bidirectional):
    # The CUDA backend has no reserve-free path yet: run the training forward, drop the reserve.
    output, h_n, c_n, _ = layer_forward(input, lengths, h0, c0, weights, has_biases,
                                        has_projections, bidirectional)
    return output, h_n, c_n


@torch.library.register_fake("fastlstm::lstm_layer_backward")
def _layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, weights,
                         reserve, has_biases, has_projections, bidirectional,
                         input_requires_grad):
    check_layer_args(input, lengths, h0, c0, weights, has_biases, has_projections,
                     bidirectional)
    for name, t in (("reserve", reserve), ("grad_output", grad_output),
                    ("grad_h_n", grad_h_n), ("grad_c_n", grad_c_n)):
        if t is not None and t.device != input.device:
            raise ValueError(f"fastlstm: {name} must be on the input's device {input.device}, "
                             f"got {t.device}")
    grad_input = input.new_empty(input.shape) if input_requires_grad else input.new_empty(0)
    return (grad_input, h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            [w.new_empty(w.shape) for w in weights])


def _setup_context(ctx, inputs, output):
    input, lengths, h0, c0, weights, has_biases, has_projections, bidirectional = inputs
    reserve = output[3]
    # A snapshot of the lengths the forward used (B integers): the caller may change its
    # tensor in place after the forward, and the backward must not see that.
    lengths = lengths.clone()
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
