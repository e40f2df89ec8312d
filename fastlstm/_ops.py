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


def reserve_bytes(tokens, H, Hout, D, has_projections, dtype):
    """Bytes of the uint8 reserve for `tokens` = sum(lengths) valid tokens; mirrors
    LayerDims::reserve_bytes_per_dir in csrc/lstm.h."""
    t_size = torch.empty((), dtype=dtype, device="meta").element_size()
    acc_size = 4 if dtype in (torch.float16, torch.bfloat16) else t_size
    per_dir = tokens * (5 * H * acc_size + (Hout + (H if has_projections else 0)) * t_size)
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


def _empty_tb(input, C):
    """A new [T, B, C] tensor in input's memory order, as the kernels allocate their output and
    grad_input (csrc/layer_io.h, empty_tb): batch-major where input is a batch-first caller's
    transposed view."""
    T, B = input.shape[0], input.shape[1]
    if input.stride(2) == 1 and input.stride(0) < input.stride(1):
        return input.new_empty(B, T, C).transpose(0, 1)
    return input.new_empty(T, B, C)


def _transposed_weight(w):
    """csrc/layer_io.h transposed_weight: a transposed view of a contiguous 2-D tensor."""
    return (w.dim() == 2 and w.shape[0] > 1 and w.shape[1] > 1 and w.stride(0) == 1
            and w.stride(1) == w.shape[0])


def _weight_grads_fake(weights, device, has_biases, has_projections):
    """The backward's weight gradients: each like its weight, but on the CPU a transposed
    w_ih or w_hh (Keras's kernel layout) gets a gradient in the same layout, as the kernels
    return it (csrc/layer_driver.h, weight_grad)."""
    per_dir = 2 + 2 * has_biases + has_projections
    return [w.new_empty(w.shape[1], w.shape[0]).t()
            if device.type == "cpu" and k % per_dir < 2 and _transposed_weight(w)
            else w.new_empty(w.shape) for k, w in enumerate(weights)]


@torch.library.register_fake("fastlstm::lstm_layer_forward")
def _layer_forward_fake(input, lengths, h0, c0, weights, has_biases, has_projections,
                        bidirectional, padded_reserve=False):
    T, B, H, Hout, D = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                        has_projections, bidirectional)
    # The reserve holds one row per valid token: its size depends on the values of lengths.
    # With padded_reserve (under torch.compile), and on meta tensors, which have no values,
    # it holds one row per padded position, T * B.
    if padded_reserve or input.device.type == "meta":
        reserve_size = reserve_bytes(T * B, H, Hout, D, has_projections, input.dtype)
    else:
        reserve_size = torch.library.get_ctx().new_dynamic_size()
    return (_empty_tb(input, D * Hout), input.new_empty(D, B, Hout),
            input.new_empty(D, B, H), input.new_empty(reserve_size, dtype=torch.uint8))


@torch.library.register_fake("fastlstm::lstm_layer_inference")
def _layer_inference_fake(input, lengths, h0, c0, weights, has_biases, has_projections,
                          bidirectional):
    T, B, H, Hout, D = check_layer_args(input, lengths, h0, c0, weights, has_biases,
                                        has_projections, bidirectional)
    return (_empty_tb(input, D * Hout), input.new_empty(D, B, Hout),
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
    grad_input = (_empty_tb(input, input.shape[2]) if input_requires_grad
                  else input.new_empty(0))
    return (grad_input, h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            _weight_grads_fake(weights, input.device, has_biases, has_projections))


def _setup_context(ctx, inputs, output):
    input, lengths, h0, c0, weights, has_biases, has_projections, bidirectional = inputs[:8]
    reserve = output[3]
    # A snapshot of the lengths the forward used (B integers): the caller may change its
    # tensor in place after the forward, and the backward must not see that.
    lengths = lengths.clone()
    ctx.save_for_backward(input, lengths, h0, c0, reserve, *weights)
    ctx.flags = (has_biases, has_projections, bidirectional)
    ctx.mark_non_differentiable(reserve)
    ctx.set_materialize_grads(False)


def reference_pullback(primals, lengths, flags, cotangents, direction=None):
    """One layer recomputed by fastlstm.reference (plain PyTorch ops, tested against nn.LSTM)
    and pulled back with torch.func.vjp, so that the gradients are differentiable themselves
    (by autograd and by any torch.func transform around this call). Slow (a Python loop over
    time steps) but exact to rounding.

    primals = [input, h0, c0, *weights]; flags = (has_biases, has_projections, bidirectional).
    Without `direction`: the values are (output, h_n, c_n) and the gradients those of
    cotangents . (output, h_n, c_n). With `direction` (tangents of the primals, None for 0):
    the values are (output, h_n, c_n, d_output, d_h_n, d_c_n), the layer and its tangent along
    direction (fastlstm.reference.lstm_reference_jvp), and `cotangents` has six entries, the
    last three paired with the tangents: a second-order pullback. None cotangents are zero.
    Returns (values, gradients w.r.t. primals)."""
    from .reference import lstm_reference, lstm_reference_jvp

    has_biases, has_projections, bidirectional = flags

    def layer(input, h0, c0, *weights):
        if direction is None:
            return lstm_reference(input, lengths, h0, c0, list(weights), 1, has_biases,
                                  bidirectional, has_projections)
        values, tangents = lstm_reference_jvp(input, lengths, h0, c0, list(weights),
                                              tuple(direction), 1, has_biases,
                                              bidirectional, has_projections)
        return (*values, *tangents)

    values, pullback = torch.func.vjp(layer, *primals)
    cotangents = tuple(torch.zeros_like(v) if c is None else c
                       for v, c in zip(values, cotangents))
    return values, pullback(cotangents)


def _differentiable_backward(ctx, grad_output, grad_h_n, grad_c_n):
    """The first-order gradients as a differentiable function (for create_graph=True):
    reference_pullback from the saved inputs, which keep their own graph."""
    input, lengths, h0, c0, _reserve, *weights = ctx.saved_tensors
    needed = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]]
    if not any(needed) and not ctx.needs_input_grad[4]:
        return _one_per_input(ctx, (None,) * 9)
    _, grads = reference_pullback([input, h0, c0, *weights], lengths, ctx.flags,
                                  (grad_output, grad_h_n, grad_c_n))
    grad_input, grad_h0, grad_c0 = (g if need else None for g, need in zip(grads, needed))
    grad_weights = list(grads[3:]) if ctx.needs_input_grad[4] else None
    return _one_per_input(ctx, (grad_input, None, grad_h0, grad_c0, grad_weights, None, None,
                                None, None))


def _one_per_input(ctx, grads):
    """grads (one per schema argument: input, lengths, h0, c0, weights, the four flags) cut to
    the arguments the op received: the dispatcher drops trailing arguments equal to their
    defaults (padded_reserve=False) on some torch versions (2.11), not on others (2.14)."""
    return grads[:len(ctx.needs_input_grad)]


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
    # None for lengths and the four flags (has_biases, ..., padded_reserve).
    return _one_per_input(ctx, (grad_input if input_requires_grad else None, None, grad_h0,
                                grad_c0, grad_weights, None, None, None, None))


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
    grad_input = (_empty_tb(input, input.shape[2]) if input_requires_grad
                  else input.new_empty(0))
    pad = [input.new_empty(0) for _ in range(MAX_WEIGHTS - len(weights))]
    return (grad_input, h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            *_weight_grads_fake(weights, input.device, has_biases, has_projections), *pad)


torch.library.register_autograd("fastlstm::lstm_layer_forward", _backward,
                                setup_context=_setup_context)


# The backward op has no derivative of its own. A create_graph=True backward does not call it
# (_backward takes _differentiable_backward then), nor does torch.func (LayerBackward runs it
# below autograd and has derivatives of its own); should it still be recorded (by a direct
# call), a second backward must fail loudly rather than give zeros, which PyTorch's fallback
# would do without this registration.
DOUBLE_BACKWARD_MESSAGE = (
    "fastlstm: double backward (gradients of gradients, e.g. torch.autograd.grad(..., "
    "create_graph=True) followed by a second backward, or gradgradcheck) is not supported "
    "yet here: fastlstm.lstm_layer_backward has no derivative (a create_graph=True backward "
    "through fastlstm.LSTM, and torch.func's grad(grad(f)) over it, do support it)")


def _backward_setup_context(ctx, inputs, output):
    pass


def _double_backward(ctx, *grads):
    raise RuntimeError(DOUBLE_BACKWARD_MESSAGE)


torch.library.register_autograd("fastlstm::lstm_layer_backward", _double_backward,
                                setup_context=_backward_setup_context)
torch.library.register_autograd("fastlstm::_layer_backward_tensors", _double_backward,
                                setup_context=_backward_setup_context)


# ---------------------------------------------------------------------------------------------
# torch.func (grad, vjp, jacrev, jvp, jacfwd, hessian, vmap, ...) and forward-mode AD.
#
# register_autograd above makes an autograd.Function whose forward takes ctx (no
# setup_context), which torch.func refuses ("must override the setup_context staticmethod"),
# and which has no forward-mode rule. Under a torch.func transform or a forward-AD dual level,
# fastlstm.functional therefore calls LayerForward below instead: the same op and native
# backward, with setup_context (grad, vjp, jacrev), a generated vmap rule over the ops' loop
# batching rules (vmap, jacrev, is_grads_batched=True), and a jvp (jvp, jacfwd, forward_ad).
# Its backward is LayerBackward: the native backward op, whose own derivatives (jvp for
# hessian = jacfwd(jacrev), backward for grad(grad)) recompute the layer with
# fastlstm.reference.


def _flat_layer_args(ctx):
    """(primals [input, h0, c0, *weights], lengths) saved by LayerForward.setup_context."""
    input, lengths, h0, c0, _reserve, *weights = ctx.saved_tensors
    return [input, h0, c0, *weights], lengths


class LayerForward(torch.autograd.Function):
    """lstm_layer_forward as an autograd.Function that torch.func can transform.

    Forward mode (jvp): the primal outputs are the native op's; their tangents come from
    fastlstm.reference.lstm_reference_jvp, the linearised recurrence in plain PyTorch (one
    Python step per time step, the primal recomputed alongside): exactly 0 past each
    sequence's end, and differentiable, so reverse-over-forward works too."""

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
        saved = (input, lengths.clone(), h0, c0, output[3], *weights)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
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
    def jvp(ctx, d_input, _d_lengths, d_h0, d_c0, _d_biases, _d_projections, _d_bidirectional,
            *d_weights):
        from .reference import lstm_reference_jvp

        (input, h0, c0, *weights), lengths = _flat_layer_args(ctx)
        has_biases, has_projections, bidirectional = ctx.flags
        _, (d_output, d_h_n, d_c_n) = lstm_reference_jvp(
            input, lengths, h0, c0, weights, (d_input, d_h0, d_c0, *d_weights), 1, has_biases,
            bidirectional, has_projections)
        return d_output, d_h_n, d_c_n, None


class LayerBackward(torch.autograd.Function):
    """lstm_layer_backward for LayerForward: torch.func runs backwards with create_graph,
    which needs an autograd.Function with setup_context. Its output is G = J^T u, the
    layer's Jacobian J at the primals p = (input, h0, c0, weights) applied to the cotangents
    u = (grad_output, grad_h_n, grad_c_n). Its derivatives go through reference_pullback
    (the layer recomputed by fastlstm.reference), with f the layer and J d its tangent along d:
    - jvp (tangents dp, du): dG = J^T du + d/dp (u . J dp), one pullback of
      (du, u) . (f(p), J dp) -- used by hessian = jacfwd(jacrev(f));
    - backward (cotangent v on G): u gets J v and p gets d/dp (u . J v), one pullback of
      (0, u) . (f(p), J v) -- used by grad(grad(f))."""

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
        (grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, _reserve, has_biases,
         has_projections, bidirectional, input_requires_grad, *weights) = inputs
        saved = (grad_output, grad_h_n, grad_c_n, input, lengths.clone(), h0, c0, *weights)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.flags = (has_biases, has_projections, bidirectional)
        ctx.input_requires_grad = input_requires_grad
        ctx.has_cotangent = [g is not None for g in (grad_output, grad_h_n, grad_c_n)]

    @staticmethod
    def _saved(ctx):
        grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, *weights = ctx.saved_tensors
        return [grad_output, grad_h_n, grad_c_n], [input, h0, c0, *weights], lengths

    @staticmethod
    def backward(ctx, grad_grad_input, grad_grad_h0, grad_grad_c0, *grad_grad_weights):
        cotangents, primals, lengths = LayerBackward._saved(ctx)
        if not ctx.input_requires_grad:
            grad_grad_input = None  # grad_input was an empty placeholder
        direction = [grad_grad_input, grad_grad_h0, grad_grad_c0, *grad_grad_weights]
        values, grads = reference_pullback(primals, lengths, ctx.flags,
                                           (None, None, None, *cotangents), direction)
        # The cotangents enter G linearly: their gradient is J v, the tangent of the layer.
        grad_cotangents = [v if has else None for v, has in zip(values[3:], ctx.has_cotangent)]
        grad_input, grad_h0, grad_c0, *grad_weights = grads
        return (*grad_cotangents, grad_input, None, grad_h0, grad_c0, None, None, None, None,
                None, *grad_weights)

    @staticmethod
    def jvp(ctx, d_grad_output, d_grad_h_n, d_grad_c_n, d_input, _d_lengths, d_h0, d_c0,
            _d_reserve, _d_biases, _d_projections, _d_bidirectional, _d_input_requires_grad,
            *d_weights):
        cotangents, primals, lengths = LayerBackward._saved(ctx)
        direction = [d_input, d_h0, d_c0, *d_weights]
        _, grads = reference_pullback(primals, lengths, ctx.flags,
                                      (d_grad_output, d_grad_h_n, d_grad_c_n, *cotangents),
                                      direction)
        d_grad_input, d_grad_h0, d_grad_c0, *d_grad_weights = grads
        if not ctx.input_requires_grad:
            d_grad_input = primals[0].new_zeros(0)  # the empty placeholder's tangent
        return (d_grad_input, d_grad_h0, d_grad_c0, *d_grad_weights)


def transforms_active() -> bool:
    """True under a torch.func transform (grad, vjp, vmap, jacrev, jvp, ...) or inside a
    torch.autograd.forward_ad.dual_level."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return torch.autograd.forward_ad._current_level >= 0


def layer_forward_any(input, lengths, h0, c0, weights, has_biases, has_projections,
                      bidirectional):
    """The op, or LayerForward under torch.func / forward AD (never while compiling: there the
    op, with its fake kernel and autograd registration, is what gets traced). Under two or more
    forward-mode levels (forward over forward: jacfwd(jacfwd(f)), a jvp of a hessian), the
    layer is fastlstm.reference instead, reserve None: PyTorch runs an autograd.Function's jvp
    with forward AD off, so the outer level would not see how LayerForward's tangent depends on
    the primals, and its derivatives would be wrong."""
    if not torch.compiler.is_compiling() and transforms_active():
        # The torch.func forward-mode levels, counted inline: a helper function would be a
        # frame that dynamo tries to trace (and warns about) when a torch.compile'd model is
        # called under torch.func.jvp and falls back to eager.
        jvp_levels = 0
        for interpreter in torch._C._functorch.get_interpreter_stack() or ():
            jvp_levels += interpreter.key() == torch._C._functorch.TransformType.Jvp
        if jvp_levels > 1:
            from .reference import lstm_reference

            return (*lstm_reference(input, lengths, h0, c0, list(weights), 1, has_biases,
                                    bidirectional, has_projections), None)
        return LayerForward.apply(input, lengths, h0, c0, has_biases, has_projections,
                                  bidirectional, *weights)
    # A compiled graph needs shapes that do not depend on the values of lengths: there the
    # reserve is sized by the padded T x B (eagerly, by the valid tokens).
    return layer_forward(input, lengths, h0, c0, weights, has_biases, has_projections,
                         bidirectional, torch.compiler.is_compiling())


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


def _padded_reserve(args):
    """lstm_layer_forward's arguments with padded_reserve on: the examples' lengths may differ,
    and only reserves sized by the padded T x B have one size to stack."""
    return args[:8] + (True,)


def _loop_batching_rule(op, prepare=tuple):
    """vmap by a loop over the batch: the op once per example (its arguments adjusted by
    prepare), results stacked on dim 0."""
    def rule(info, in_dims, *args):
        results = [op(*prepare(tuple(_select(a, d, i) for a, d in zip(args, in_dims))))
                   for i in range(info.batch_size)]
        outs, dims = zip(*[_stack([r[k] for r in results]) for k in range(len(results[0]))])
        return tuple(outs), tuple(dims)
    return rule


torch.library.register_vmap("fastlstm::lstm_layer_forward",
                            _loop_batching_rule(layer_forward, prepare=_padded_reserve))
torch.library.register_vmap("fastlstm::lstm_layer_backward", _loop_batching_rule(layer_backward))
