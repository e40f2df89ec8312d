"""fastlstm for Keras 3: ``fastlstm.keras.LSTM`` is ``keras.layers.LSTM`` on fastlstm's kernels.

Switching is two lines::

    import fastlstm.keras
    layer = fastlstm.keras.LSTM(128, return_sequences=True)   # was keras.layers.LSTM(...)

The class subclasses ``keras.layers.LSTM``: the same constructor, weights (``kernel`` [I, 4H],
``recurrent_kernel`` [H, 4H], one ``bias`` [4H], gates i, f, c, o as torch's i, f, g, o),
config and serialization (registered as ``fastlstm>LSTM``, so ``.keras`` files save and load
it once ``fastlstm.keras`` is imported), and it works inside ``keras.layers.Bidirectional``.

On Keras's torch backend the layer's recurrence runs in fastlstm (CPU or CUDA): the per-sequence
lengths come from the Keras mask when it is right padding (True for t < length; no mask: full
length), ``go_backwards`` reverses each sequence within its length, and every output, masked
positions included, is what ``keras.layers.LSTM`` gives for the same weights and inputs. The
weights are read from the Keras variables (torch weight_ih = kernel.T, weight_hh =
recurrent_kernel.T, bias_ih = bias, bias_hh = 0), so gradients reach them and ``model.fit``,
``train_on_batch`` and every Keras optimizer work. Input dropout is Keras's own mask (one per
sequence, drawn by the cell's seed generator), applied to the input before fastlstm.

Only the recurrence (``inner_loop``) is replaced: ``call`` is Keras's own (initial and stateful
states, dtype casts, dropout masks, return_sequences / return_state), and whatever fastlstm
cannot do exactly runs Keras's own loop instead, with a one-time :class:`FallbackWarning` per
layer naming the reason: a mask that is not right padding (left padding, holes),
``recurrent_dropout > 0``, activations other than tanh / sigmoid, ``unroll=True``, a per-gate
dropout (``implementation=1``), a backend other than torch. Input Keras would reject (a wrong
feature size or state shape, zero steps, a mask with ``use_cudnn=True``) goes to Keras's own
path silently, so that Keras raises its own error.

``fastlstm.keras.Bidirectional`` is ``keras.layers.Bidirectional`` (same arguments, config and
outputs; registered as ``fastlstm>Bidirectional``) that runs both directions in one
bidirectional fastlstm op, when its two layers are fastlstm.keras.LSTM a single op can run:
fastlstm's reverse direction starts at each sequence's own end, which is the backward layer's
result once Bidirectional flips it back (its outputs at the padding are 0, as Keras's). Anything
else goes to ``keras.layers.Bidirectional.call``, which runs each layer as it runs alone (one
fastlstm op per direction, or Keras's loop with the layer's warning): other layer classes,
layers of different sizes, ``stateful``, an ``activity_regularizer`` on a layer, layers with
another dtype policy than the wrapper's, and dropout in training (each direction has its own
input mask; in inference each cell still draws its mask, as Keras's layer does, so that later
draws stay Keras's). ``keras.layers.Bidirectional(fastlstm.keras.LSTM(...))`` works too, with one
op per direction.

Importing this module imports Keras (``import fastlstm`` does not) and sets nothing global: the
backend is whatever ``KERAS_BACKEND`` says before Keras is imported.
"""

import warnings

try:
    import keras
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    if getattr(e, "name", None) == "keras":
        raise ImportError("fastlstm.keras needs Keras 3 (on its torch backend): "
                          "pip install 'fastlstm[keras]'") from e
    # Installed, but its import failed: without KERAS_BACKEND, Keras loads TensorFlow.
    raise ImportError(f"fastlstm.keras: keras failed to import ({type(e).__name__}: {e}); for "
                      f"its torch backend set KERAS_BACKEND=torch before keras is first "
                      f"imported") from e

if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(f"fastlstm.keras needs Keras 3, found keras {keras.__version__}: "
                      f"pip install 'fastlstm[keras]'")

import torch

from .functional import lstm as _fastlstm

__all__ = ["LSTM", "Bidirectional", "FallbackWarning", "require_torch_backend"]


class FallbackWarning(UserWarning):
    """fastlstm.keras.LSTM ran keras.layers.LSTM's own path (exact, not faster)."""


def require_torch_backend():
    """Raises RuntimeError unless Keras runs on its torch backend, where fastlstm.keras.LSTM
    runs fastlstm (on other backends it is plain keras.layers.LSTM, with a warning)."""
    name = keras.backend.backend()
    if name != "torch":
        raise RuntimeError(f"fastlstm.keras runs fastlstm only on Keras's torch backend, but "
                           f"Keras uses {name!r}: set the environment variable "
                           f"KERAS_BACKEND=torch before keras is first imported")


_TANH = (keras.activations.tanh, keras.ops.tanh, torch.tanh)
_SIGMOID = (keras.activations.sigmoid, keras.ops.sigmoid, torch.sigmoid)


@keras.saving.register_keras_serializable(package="fastlstm")
class LSTM(keras.layers.LSTM):
    """keras.layers.LSTM (same arguments, weights, config and outputs) whose recurrence runs
    in fastlstm on Keras's torch backend; see the module's documentation."""

    # -- what fastlstm cannot do exactly --------------------------------------------------
    def _config_reason(self):
        """Why this layer's configuration needs Keras's own loop, or None."""
        cell = self.cell
        if keras.backend.backend() != "torch":
            return f"Keras backend {keras.backend.backend()!r} (fastlstm needs 'torch')"
        if cell.recurrent_dropout:
            return f"recurrent_dropout={cell.recurrent_dropout} (fastlstm has no recurrent dropout)"
        if cell.activation not in _TANH:
            return f"activation {_name(cell.activation)!r} (fastlstm computes tanh)"
        if cell.recurrent_activation not in _SIGMOID:
            return (f"recurrent_activation {_name(cell.recurrent_activation)!r} (fastlstm "
                    f"computes sigmoid)")
        if self.unroll:
            return "unroll=True"
        if cell.implementation == 1 and cell.dropout:
            return "implementation=1 with dropout (one dropout mask per gate)"
        return None

    def _warn_once(self, reason):
        warned = self.__dict__.setdefault("_fastlstm_warned", set())
        if reason not in warned:
            warned.add(reason)
            warnings.warn(f"fastlstm.keras.LSTM {self.name!r}: {reason}; running "
                          f"keras.layers.LSTM's own path (exact, not faster)",
                          FallbackWarning, stacklevel=3)

    # -- the recurrence ---------------------------------------------------------------------
    def inner_loop(self, sequences, initial_state, mask, training=False):
        """(last_output [B, H], outputs [B, T, H] or [B, 1, H], [h, c]) as Keras's own
        inner_loop returns them; fastlstm computes them when it can do so exactly."""
        reason = self._config_reason()
        if reason is not None:
            self._warn_once(reason)
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if keras.tree.is_nested(mask):
            mask = mask[0]
        lengths, reason = self._lengths(sequences, initial_state, mask)
        if reason:
            self._warn_once(reason)
        if lengths is None:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        return self._fastlstm_loop(sequences, initial_state, lengths, mask is not None,
                                   training)

    def _lengths(self, x, initial_state, mask):
        """(lengths [B] int64 on x's device, or None for Keras's own path; a reason to warn
        about, or None). Input Keras would reject goes to Keras's path without a warning."""
        cell = self.cell
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.device.type == "meta":
            return None, None                        # symbolic shape inference, or bad input
        B, T, features = x.shape
        kernel = cell.kernel
        if T == 0 or not x.is_floating_point() or features != kernel.shape[0]:
            return None, None
        if not isinstance(kernel.value, torch.Tensor) or kernel.value.device != x.device:
            return None, None
        if len(initial_state) != 2 or any(
                not isinstance(s, torch.Tensor) or tuple(s.shape) != (B, cell.units)
                or not s.is_floating_point() or s.device != x.device for s in initial_state):
            return None, None
        if mask is None:
            return torch.full((B,), T, dtype=torch.int64), None
        if self.use_cudnn is True:
            return None, None                        # Keras raises: cuDNN takes no mask
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or tuple(mask.shape) != (B, T):
            return None, f"a mask of shape {tuple(getattr(mask, 'shape', ()))}, not [B, T]"
        if mask.device != x.device:
            return None, f"a mask on {mask.device}, the input on {x.device}"
        mask = mask if mask.dtype == torch.bool else mask.to(torch.bool)
        lengths = mask.sum(1, dtype=torch.int64)
        prefix = torch.arange(T, device=mask.device) < lengths.unsqueeze(1)
        if not bool(torch.equal(prefix, mask)):
            return None, ("a mask that is not right padding (True for t < length), e.g. left "
                          "padding or holes")
        return lengths, None

    def _op_weights(self, kernel=None, recurrent=None):
        """The cell's weights as fastlstm takes them (nn.LSTM's order for one direction):
        weight_ih = kernel.T, weight_hh = recurrent_kernel.T, bias_ih = bias, bias_hh = 0; read
        from the variables under the current autocast scope (the compute dtype)."""
        cell = self.cell
        if kernel is None:
            kernel = keras.ops.convert_to_tensor(cell.kernel)
            recurrent = keras.ops.convert_to_tensor(cell.recurrent_kernel)
        # Transposed views, not copies: the CPU kernels read Keras's [I, 4H] layout in place and
        # give its gradient in that layout (the GPU's copy them).
        weights = [kernel.t(), recurrent.t()]
        if cell.use_bias:
            bias = keras.ops.convert_to_tensor(cell.bias)
            weights += [bias, torch.zeros_like(bias)]
        return weights

    def _last_output(self, h_n, lengths, T):
        """Keras's last output [B, H] under a mask: its output at step T-1, which at a masked
        step carries the last valid output (zeros before any), or is zero with
        zero_output_for_mask (forward only: going backwards the valid steps come last). h_n of
        a length-0 sequence is h_0, not an output."""
        ran = (lengths > 0).unsqueeze(1)
        if self.zero_output_for_mask and not self.go_backwards:
            ran = (lengths == T).unsqueeze(1)
        return torch.where(ran, h_n, torch.zeros_like(h_n))

    def _fastlstm_loop(self, x, initial_state, lengths, masked, training):
        cell = self.cell
        B, T, _ = x.shape
        kernel = keras.ops.convert_to_tensor(cell.kernel)          # autocast: compute dtype
        recurrent = keras.ops.convert_to_tensor(cell.recurrent_kernel)
        # (Keras has cast input and state to the compute dtype, the kernel's under autocast;
        # Keras's own fused LSTM casts to the kernel's dtype too.)
        x = x.to(kernel.dtype)
        h0, c0 = (s.to(kernel.dtype).unsqueeze(0) for s in initial_state)
        # Keras's input dropout: the cell's one mask per sequence, the same at every step
        # (Keras applies it before its fused LSTM, or in each step of its masked loop).
        if training and (0.0 < cell.dropout < 1.0 if masked else cell.dropout):
            x = x * cell.get_dropout_mask(x[:, 0, :]).unsqueeze(1)
        weights = self._op_weights(kernel, recurrent)
        steps = torch.arange(T, device=x.device)
        rows = torch.arange(B, device=x.device).unsqueeze(1)
        if self.go_backwards:
            # Keras flips the padded batch (the mask with it): the padding comes first and
            # leaves the state alone, then each sequence runs from its own end. fastlstm runs
            # each sequence reversed within its length, padding after (whole rows picked by
            # index_select: far cheaper than an element-wise gather).
            x = x.flip(1) if not masked else x.reshape(B * T, -1).index_select(
                0, (rows * T + (lengths.unsqueeze(1) - 1 - steps) % T).view(-1)).view(B, T, -1)
        # (lengths on the CPU: the op reads them there without a device-to-host copy)
        out, h_n, c_n = _fastlstm(x.transpose(0, 1), lengths.cpu(), h0, c0, weights, 1,
                                  cell.use_bias, False, False)
        h_n, c_n = h_n.squeeze(0), c_n.squeeze(0)
        if not masked:                                   # every sequence T steps long
            if not self.return_sequences:
                return h_n, h_n.unsqueeze(1), [h_n, c_n]
            return h_n, out.transpose(0, 1), [h_n, c_n]
        last = self._last_output(h_n, lengths, T)
        if not self.return_sequences:
            return last, last.unsqueeze(1), [h_n, c_n]
        if self.go_backwards:
            # Keras's step k of sequence b is fastlstm's step k - (T - length); before that, 0
            # (fastlstm's output past the length). Rows of the time-major output.
            index = ((steps + lengths.unsqueeze(1)) % T) * B + rows
            return last, out.reshape(T * B, -1).index_select(0, index.view(-1)).view(B, T, -1), \
                [h_n, c_n]
        out = out.transpose(0, 1)                                  # [B, T, H], 0 past length
        if not self.zero_output_for_mask:
            valid = (steps < lengths.unsqueeze(1)).unsqueeze(2)
            out = torch.where(valid, out, last.unsqueeze(1))
        return last, out, [h_n, c_n]



@keras.saving.register_keras_serializable(package="fastlstm")
class Bidirectional(keras.layers.Bidirectional):
    """keras.layers.Bidirectional (same arguments, config and outputs) that runs both directions
    in one bidirectional fastlstm op when both of its layers are fastlstm.keras.LSTM; see the
    module's documentation. ``keras.layers.Bidirectional(fastlstm.keras.LSTM(...))`` works
    too, with one fastlstm op per direction."""

    def call(self, sequences, initial_state=None, mask=None, training=None):
        fused = self._fused_inputs(sequences, initial_state, mask, training)
        if fused is None:
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)
        return self._call_fused(sequences, *fused)

    def _fused_inputs(self, x, initial_state, mask, training):
        """(h0 [2, B, H], c0, lengths, masked) when one fastlstm op gives both layers' exact
        results, else None: Keras's Bidirectional.call then runs each layer (fastlstm's
        LSTM runs fastlstm per direction, or Keras's loop with its warning)."""
        fwd, bwd = self.forward_layer, self.backward_layer
        if type(fwd) is not LSTM or type(bwd) is not LSTM or self.stateful:
            return None
        if fwd.go_backwards or not bwd.go_backwards:
            return None
        if fwd._config_reason() is not None or bwd._config_reason() is not None:
            return None
        cf, cb = fwd.cell, bwd.cell
        if cf.units != cb.units or cf.use_bias != cb.use_bias:
            return None                          # one op: both directions shaped alike
        if training and (cf.dropout or cb.dropout):
            return None                          # one op: one input, not one per direction
        if fwd.activity_regularizer is not None or bwd.activity_regularizer is not None:
            return None                          # (applied by each layer's __call__)
        if not fwd.dtype_policy.name == bwd.dtype_policy.name == self.dtype_policy.name:
            return None                          # (each layer's __call__ would autocast)
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            return None
        B, H = x.shape[0], cf.units
        if initial_state is None:                # (zeros: cast to the kernel's dtype later)
            zeros = torch.zeros(2, B, H, dtype=x.dtype, device=x.device)
            h0 = c0 = zeros
            states = [[zeros[0], zeros[0]], [zeros[1], zeros[1]]]
        elif len(initial_state) == 4:
            states = [list(initial_state[:2]), list(initial_state[2:])]
            if bwd._lengths(x, states[1], None)[0] is None:
                return None                      # (Keras's errors, from Keras's own path)
            h0 = torch.stack([states[0][0], states[1][0]])
            c0 = torch.stack([states[0][1], states[1][1]])
        else:
            return None
        if keras.tree.is_nested(mask):
            mask = mask[0]
        lengths, reason = fwd._lengths(x, states[0], mask)          # Keras's errors, warnings
        if lengths is None or reason is not None:
            return None
        # Each layer's call draws its dropout mask (inference: unused) from its cell's seed
        # generator: drawn here too, so that later draws stay Keras's.
        for layer, state in zip((fwd, bwd), states):
            if layer.cell.dropout:
                layer._maybe_config_dropout_masks(layer.cell, x[:, 0, :], state)
                layer._maybe_reset_dropout_masks(layer.cell)
        return h0, c0, lengths, mask is not None

    def _call_fused(self, x, h0, c0, lengths, masked):
        fwd, bwd = self.forward_layer, self.backward_layer
        weights = fwd._op_weights() + bwd._op_weights()
        dtype = weights[0].dtype                 # the kernel's: autocast's compute dtype
        B, T, _ = x.shape
        H = fwd.cell.units
        # fastlstm's reverse direction runs each sequence from its own end, outputs in input
        # order, 0 past each length: the backward layer's outputs (go_backwards: padding first,
        # output 0) as Bidirectional flips them back. (lengths on the CPU: see LSTM.)
        out, h_n, c_n = _fastlstm(x.to(dtype).transpose(0, 1), lengths.cpu(), h0.to(dtype),
                                  c0.to(dtype), weights, 1, fwd.cell.use_bias, True, False)
        out = out.transpose(0, 1)                                   # [B, T, 2H]
        both = None                                                 # concat of the two
        if self.return_sequences:
            y, y_rev = out[..., :H], out[..., H:]
            if masked and not fwd.zero_output_for_mask:             # carried past the length
                valid = (torch.arange(T, device=x.device) < lengths.unsqueeze(1)).unsqueeze(2)
                y = torch.where(valid, y, fwd._last_output(h_n[0], lengths, T).unsqueeze(1))
            else:
                both = out
        elif masked:
            y, y_rev = fwd._last_output(h_n[0], lengths, T), bwd._last_output(h_n[1], lengths, T)
        else:
            y, y_rev = h_n[0], h_n[1]
        if self.merge_mode == "concat" and both is not None:
            output = keras.ops.cast(both, self.compute_dtype)
        else:
            y = keras.ops.cast(y, self.compute_dtype)
            y_rev = keras.ops.cast(y_rev, self.compute_dtype)
        if self.merge_mode == "concat":
            if both is None:
                output = keras.ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = (y, y_rev)
        if not self.return_state:
            return output
        states = tuple(keras.ops.cast(s, self.compute_dtype)
                       for s in (h_n[0], c_n[0], h_n[1], c_n[1]))
        return output + states if self.merge_mode is None else (output,) + states

def _name(fn):
    return getattr(fn, "__name__", type(fn).__name__)
