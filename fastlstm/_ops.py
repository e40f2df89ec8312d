"""Loads the native ops and registers their fake (meta) and autograd implementations.

torch.ops.fastlstm.lstm_layer_forward / lstm_layer_backward / lstm_layer_inference are defined
in csrc/ops.cpp; every shape is documented in csrc/lstm.h. lstm_layer_inference (the forward
without a reserve, for when no gradient is needed) has no autograd formula.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading the library registers torch.ops.fastlstm.*)
from ._inputs import DTypeError

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
    """The checks of check_layer_args in csrc/checks.cpp, in the same order, for the fake
    kernels (which run under torch.compile, and for mixed-device calls that dispatch to Meta).
    The native op raises ValueError for every failure (the stable ABI cannot raise TypeError);
    here dtype failures raise DTypeError, a TypeError as in nn.LSTM and also a ValueError.
    Returns (T, B, H, Hout, D)."""
    if input.dim() != 3:
        raise ValueError(f"fastlstm: input must be 3-D [T, B, I], got {input.dim()}-D with "
                         f"shape {list(input.shape)}")
    if not input.is_floating_point():
        raise DTypeError(f"fastlstm: input must be a floating-point tensor, got {input.dtype}")
    if lengths.dim() != 1:
        raise ValueError(f"fastlstm: lengths must be 1-D [B], got {lengths.dim()}-D with shape "
                         f"{list(lengths.shape)}")
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise DTypeError(f"fastlstm: lengths must be an integer tensor, got {lengths.dtype}")
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
            raise DTypeError(f"fastlstm: {name} must have the input's dtype {input.dtype}, got "
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


def _differentiable_backward(ctx, grad_output, grad_h_n, grad_c_n):
    """The first-order gradients as a differentiable function (for create_graph=True): the
    layer recomputed by fastlstm.reference (plain PyTorch ops, tested against nn.LSTM) from
    the saved inputs, which keep their own graph, then torch.autograd.grad with
    create_graph=True. Slow (a Python loop over time steps) but exact to rounding."""
    from .reference import lstm_reference

    input, lengths, h0, c0, _reserve, *weights = ctx.saved_tensors
    has_biases, has_projections, bidirectional = ctx.flags
    wrt = [input, h0, c0, *weights]
    needed = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3],
              *[ctx.needs_input_grad[4]] * len(weights)]
    needed = [need and t.requires_grad for t, need in zip(wrt, needed)]
    inputs = [t for t, need in zip(wrt, needed) if need]
    if not inputs:
        return (None,) * 8
    with torch.enable_grad():
        outputs = lstm_reference(input, lengths, h0, c0, weights, 1, has_biases, bidirectional,
                                 has_projections)
        pairs = [(o, g) for o, g in zip(outputs, (grad_output, grad_h_n, grad_c_n))
                 if g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs],
                                    create_graph=True, allow_unused=True)
    it = iter(grads)
    full = [next(it) if need else None for need in needed]
    full = [torch.zeros_like(t) if need and g is None else g
            for t, g, need in zip(wrt, full, needed)]
    if ctx.needs_input_grad[4]:
        full[3:] = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, full[3:])]
    return (full[0], None, full[1], full[2], full[3:], None, None, None)


def _backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_reserve):
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        # create_graph=True: the gradients must be differentiable themselves.
        return _differentiable_backward(ctx, grad_output, grad_h_n, grad_c_n)
    input, lengths, h0, c0, reserve, *weights = ctx.saved_tensors
    input_requires_grad = ctx.needs_input_grad[0]
    args = (grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, weights, reserve,
            *ctx.flags, input_requires_grad)
    try:
        grad_input, grad_h0, grad_c0, grad_weights = layer_backward(*args)
    except RuntimeError as error:
        # torch.autograd.grad(..., is_grads_batched=True) runs this under the legacy vmap,
        # whose for-loop fallback takes only ops that return Tensors (this one returns a
        # Tensor[] too): go through _layer_backward_tensors, which returns Tensors only.
        if "Batching rule not implemented" not in str(error):
            raise
        padded = list(weights) + [None] * (MAX_WEIGHTS - len(weights))
        grad_input, grad_h0, grad_c0, *grad_weights = _layer_backward_tensors(
            grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, reserve, *ctx.flags,
            input_requires_grad, *padded)
        grad_weights = grad_weights[:len(weights)]
    return (grad_input if input_requires_grad else None, None, grad_h0, grad_c0, grad_weights,
            None, None, None)


MAX_WEIGHTS = 10  # one layer at most: 2 directions x (w_ih, w_hh, b_ih, b_hh, w_hr)


@torch.library.custom_op("fastlstm::_layer_backward_tensors", mutates_args=())
def _layer_backward_tensors(
        grad_output: Optional[Tensor], grad_h_n: Optional[Tensor], grad_c_n: Optional[Tensor],
        input: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor, reserve: Tensor,
        has_biases: bool, has_projections: bool, bidirectional: bool, input_requires_grad: bool,
        w0: Optional[Tensor], w1: Optional[Tensor], w2: Optional[Tensor], w3: Optional[Tensor],
        w4: Optional[Tensor], w5: Optional[Tensor], w6: Optional[Tensor], w7: Optional[Tensor],
        w8: Optional[Tensor], w9: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
           Tensor, Tensor, Tensor]:
    """lstm_layer_backward with Tensor returns only: grad_input, grad_h0, grad_c0, then
    MAX_WEIGHTS weight gradients, the missing ones empty. The weights come as MAX_WEIGHTS
    optional tensors (None past the layer's count): the legacy vmap's fallback refuses ops
    with a Tensor[] argument too."""
    weights = [w for w in (w0, w1, w2, w3, w4, w5, w6, w7, w8, w9) if w is not None]
    grad_input, grad_h0, grad_c0, grad_weights = layer_backward(
        grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, weights, reserve, has_biases,
        has_projections, bidirectional, input_requires_grad)
    pad = [input.new_empty(0) for _ in range(MAX_WEIGHTS - len(grad_weights))]
    return (grad_input, grad_h0, grad_c0, *grad_weights, *pad)


@_layer_backward_tensors.register_fake
def _layer_backward_tensors_fake(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0,
                                 reserve, has_biases, has_projections, bidirectional,
                                 input_requires_grad, *weights):
    weights = [w for w in weights if w is not None]
    grad_input = input.new_empty(input.shape) if input_requires_grad else input.new_empty(0)
    pad = [input.new_empty(0) for _ in range(MAX_WEIGHTS - len(weights))]
    return (grad_input, h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            *[w.new_empty(w.shape) for w in weights], *pad)


torch.library.register_autograd("fastlstm::lstm_layer_forward", _backward,
                                setup_context=_setup_context)


# The backward op has no derivative of its own. A create_graph=True backward does not call it
# (_backward takes _differentiable_backward then); should it still be recorded (under
# torch.func, or by a direct call), a second backward must fail loudly rather than give zeros,
# which PyTorch's fallback would do without this registration.
DOUBLE_BACKWARD_MESSAGE = (
    "fastlstm: double backward (gradients of gradients, e.g. torch.autograd.grad(..., "
    "create_graph=True) followed by a second backward, or gradgradcheck) is not supported "
    "yet here: fastlstm.lstm_layer_backward has no derivative (a create_graph=True backward "
    "through fastlstm.LSTM outside torch.func does support it)")


def _backward_setup_context(ctx, inputs, output):
    pass


def _double_backward(ctx, *grads):
    raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)


torch.library.register_autograd("fastlstm::lstm_layer_backward", _double_backward,
                                setup_context=_backward_setup_context)
torch.library.register_autograd("fastlstm::_layer_backward_tensors", _double_backward,
                                setup_context=_backward_setup_context)


# ---------------------------------------------------------------------------------------------
# torch.func (grad, vjp, jacrev, vmap, ...) and forward-mode AD.
#
# register_autograd above makes an autograd.Function whose forward takes ctx (no
# setup_context), which torch.func refuses ("must override the setup_context staticmethod"),
# and forward-mode AD through it silently gives zero tangents. Under a torch.func transform or
# a forward-AD dual level, fastlstm.functional therefore calls LayerForward below instead:
# the same op and backward, with setup_context (grad, vjp, jacrev), a generated vmap rule over
# the ops' loop batching rules (vmap, jacrev, is_grads_batched=True), and a jvp that raises.

FORWARD_AD_MESSAGE = (
    "fastlstm: forward-mode AD (torch.func.jvp, torch.func.jacfwd, torch.autograd.forward_ad, "
    "hessian) is not supported: fastlstm.lstm_layer_forward has no forward-mode derivative. "
    "Use reverse mode (torch.func.vjp, torch.func.jacrev, torch.autograd.grad) instead")


class LayerForward(torch.autograd.Function):
    """lstm_layer_forward as an autograd.Function that torch.func can transform."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, lengths, h0, c0, has_biases, has_projections, bidirectional, *weights):
        # Below autograd, as an autograd.Function's forward: this Function is the derivative.
        with torch._C._AutoDispatchBelowAutograd():
            return layer_forward(input, lengths, h0, c0, list(weights), has_biases,
                                 has_projections, bidirectional)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, lengths, h0, c0, has_biases, has_projections, bidirectional, *weights = inputs
        ctx.save_for_backward(input, lengths.clone(), h0, c0, output[3], *weights)
        ctx.flags = (has_biases, has_projections, bidirectional)
        ctx.mark_non_differentiable(output[3])

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_reserve):
        input, lengths, h0, c0, reserve, *weights = ctx.saved_tensors
        input_requires_grad = ctx.needs_input_grad[0]
        grad_input, grad_h0, grad_c0, *grad_weights = LayerBackward.apply(
            grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, reserve, *ctx.flags,
            input_requires_grad, *weights)
        return (grad_input if input_requires_grad else None, None, grad_h0, grad_c0, None, None,
                None, *grad_weights)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(FORWARD_AD_MESSAGE)


class LayerBackward(torch.autograd.Function):
    """lstm_layer_backward for LayerForward: torch.func runs backwards with create_graph,
    which needs an autograd.Function with setup_context; differentiating it raises."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, reserve, has_biases,
                has_projections, bidirectional, input_requires_grad, *weights):
        with torch._C._AutoDispatchBelowAutograd():
            grad_input, grad_h0, grad_c0, grad_weights = layer_backward(
                grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, list(weights), reserve,
                has_biases, has_projections, bidirectional, input_requires_grad)
        return (grad_input, grad_h0, grad_c0, *grad_weights)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(FORWARD_AD_MESSAGE)


def transforms_active() -> bool:
    """True under a torch.func transform (grad, vjp, vmap, jacrev, jvp, ...) or inside a
    torch.autograd.forward_ad.dual_level."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return torch.autograd.forward_ad._current_level >= 0


def layer_forward_any(input, lengths, h0, c0, weights, has_biases, has_projections,
                      bidirectional):
    """The op, or LayerForward under torch.func / forward AD (never while compiling: there the
    op, with its fake kernel and autograd registration, is what gets traced)."""
    if not torch.compiler.is_compiling() and transforms_active():
        return LayerForward.apply(input, lengths, h0, c0, has_biases, has_projections,
                                  bidirectional, *weights)
    return layer_forward(input, lengths, h0, c0, weights, has_biases, has_projections,
                         bidirectional)


def _select(arg, dim, i):
    if dim is None:
        return arg
    if isinstance(arg, (list, tuple)):
        return [_select(a, d, i) for a, d in zip(arg, dim)]
    return arg.select(dim, i)


def _stack(results):
    first = results[0]
    if isinstance(first, (list, tuple)):
        parts = [_stack([r[k] for r in results]) for k in range(len(first))]
        return [p[0] for p in parts], [p[1] for p in parts]
    return torch.stack(results), 0


def _loop_batching_rule(op):
    """vmap by a loop over the batch: the op once per example, results stacked on dim 0."""
    def rule(info, in_dims, *args):
        results = [op(*[_select(a, d, i) for a, d in zip(args, in_dims)])
                   for i in range(info.batch_size)]
        outs, dims = zip(*[_stack([r[k] for r in results]) for k in range(len(results[0]))])
        return tuple(outs), tuple(dims)
    return rule


torch.library.register_vmap("fastlstm::lstm_layer_forward", _loop_batching_rule(layer_forward))
torch.library.register_vmap("fastlstm::lstm_layer_backward",
                            _loop_batching_rule(layer_backward))
