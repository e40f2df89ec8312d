"""fastlstm.LSTM: torch.nn.LSTM's constructor, parameters and state_dict, plus `lengths=`."""

import math
import numbers
import warnings
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import functional
from .functional import packed_layout
from ._inputs import (DeviceError, DTypeError, LengthsLike, ShapeError, as_lengths,
                      initial_state)


class LSTM(nn.Module):
    """Drop-in replacement for :class:`torch.nn.LSTM` with per-sequence lengths.

    ``forward(input, hx=None, lengths=None)`` returns ``(output, (h_n, c_n))`` exactly as
    ``nn.LSTM`` does on ``pack_padded_sequence(input, lengths, enforce_sorted=False)``
    unpacked with ``total_length=T``: outputs are 0 past each length, ``h_n``/``c_n`` come from
    each sequence's own last step, and the reverse direction starts at each sequence's end.
    ``input`` may be ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, unbatched ``(T, I)``, or a
    PackedSequence (then the output is a PackedSequence too, and ``lengths`` must be None).
    ``lengths`` may be a list, a tuple, or an integer tensor on the CPU or the input's device,
    in any order; zero-length sequences give zero outputs and ``h_n, c_n = h_0, c_0``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        # Same checks, in the same order, with the same messages and exception types as
        # nn.RNNBase.__init__ (float(dropout) first, as there: it raises for None or a list).
        self.dropout = float(dropout)
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or \
                not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             f"probability of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: "
                            f"{type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError(f"input_size must be greater than zero, got {input_size}")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be greater than zero, got {hidden_size}")
        if num_layers <= 0:
            raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             f"projections, got {proj_size}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size ({hidden_size}), got "
                             f"{proj_size}")

        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        out_size = proj_size if proj_size > 0 else hidden_size

        # Registration order = nn.LSTM's, so that the same seed gives the same weights.
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else out_size * num_directions
                shapes = [("weight_ih", (4 * hidden_size, layer_input)),
                          ("weight_hh", (4 * hidden_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))]
                if proj_size > 0:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                suffix = "_reverse" if direction == 1 else ""
                names = []
                for kind, shape in shapes:
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling it; without it the
        # script compiler fails deep inside this class with a message that names none of the
        # ways that work.
        raise TorchScriptNotSupportedError(
            "fastlstm.LSTM does not support TorchScript: torch.jit.script expected a module "
            "it can compile, got fastlstm.LSTM (its forward takes lengths of several types and "
            "calls custom ops through Python). Use torch.compile(model) (fullgraph=True works), "
            "torch.jit.trace(model, example_inputs) or torch.export.export(model, "
            "example_inputs) instead; or fastlstm.revert(model) to script a model on "
            "torch.nn.LSTM.")

    def flatten_parameters(self) -> None:
        """No-op, kept so that code written for nn.LSTM (cuDNN) runs unchanged."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def forward(self, input: Union[Tensor, PackedSequence],
                hx: Optional[Tuple[Tensor, Tensor]] = None,
                lengths: Optional[LengthsLike] = None
                ) -> Tuple[Union[Tensor, PackedSequence], Tuple[Tensor, Tensor]]:
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (its "
                                 "batch_sizes already give them), got lengths too")
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got "
                            f"{type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead "
                             f"(shape {tuple(input.shape)})")
        batched = input.dim() == 3
        if not batched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        output, state = self._forward_time_major(x, hx, lengths, batched)
        if not batched:
            output = output.squeeze(1)
            state = (state[0].squeeze(1), state[1].squeeze(1))
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, state

    def _check_input(self, x: Tensor) -> None:
        # nn.LSTM raises ValueError for an input dtype that is not the weights' (integer input
        # included) and RuntimeError for weights that disagree; DTypeError is both, and a
        # TypeError. Device errors are ValueError and RuntimeError (nn.LSTM's type).
        first = self.weight_ih_l0
        for name in self._flat_weights_names[1:]:
            w = getattr(self, name)
            if w.dtype != first.dtype:
                raise DTypeError(f"{name} must have weight_ih_l0's dtype {first.dtype}, got "
                                 f"{w.dtype}")
            if w.device != first.device:
                raise DeviceError(f"{name} must be on weight_ih_l0's device {first.device}, "
                                  f"got {w.device}")
        if not x.is_floating_point():
            raise DTypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        if x.dtype != first.dtype:
            raise DTypeError(f"input must have the weights' dtype {first.dtype}, got {x.dtype} "
                             f"(RNN input dtype ({x.dtype}) does not match weight dtype "
                             f"({first.dtype}). Convert input: input.to({first.dtype}), or "
                             f"convert model: model.to({x.dtype}))")
        if x.device != first.device:
            raise DeviceError(f"input must be on the weights' device {first.device}, got "
                              f"{x.device}")

    def _forward_time_major(self, x: Tensor, hx, lengths, batched: bool,
                            tokens: Optional[Tensor] = None):
        """x [T, B, I] -> output [T, B, D*Hout], (h_n, c_n) [L*D, B, *]."""
        weights = self._flat_weights
        autocast_dtype = _autocast_dtype(x)
        if autocast_dtype is not None:
            # Under torch.autocast("cuda") or torch.autocast("cpu"), input, state and weights
            # run in the autocast dtype. CUDA: float16 by default, as nn.LSTM; bfloat16 when
            # asked (nn.LSTM stays in float16). CPU: bfloat16 by default, as nn.LSTM (oneDNN's
            # bfloat16 kernel); float16 when asked. Cell state and sums stay in float32.
            x = x.to(autocast_dtype)
            weights = [w.to(autocast_dtype) for w in weights]
            if hx is not None and isinstance(hx, (tuple, list)):
                hx = tuple(h.to(autocast_dtype) if isinstance(h, Tensor) else h for h in hx)
        else:
            self._check_input(x)
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {x.shape[-1]}")
        steps, batch = x.shape[0], x.shape[1]
        lengths_t = as_lengths(lengths, batch, steps, x.device)
        num_directions = 2 if self.bidirectional else 1
        out_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        h0, c0 = initial_state(hx, self.num_layers * num_directions, batch, self.hidden_size,
                               out_size, batched, x)
        output, h_n, c_n = functional.lstm(
            x, lengths_t, h0, c0, weights, self.num_layers, self.bias,
            self.bidirectional, self.proj_size > 0, self.dropout, self.training,
            tokens=tokens, token_dropout=lengths is not None)
        return output, (h_n, c_n)

    def _forward_packed(self, packed: PackedSequence, hx):
        # No pad_packed_sequence / repacking: one index_copy scatters the packed rows into a
        # padded [T, B, I] tensor in batch order, one index_select gathers the packed output
        # rows back. Every index has a static shape (N, T or B), so torch.compile traces it
        # without a graph break. hx and (h_n, c_n) are in batch order, as with nn.LSTM.
        data, batch_sizes = packed.data, packed.batch_sizes
        batch = _packed_batch_size(packed, hx)
        tokens, lengths = packed_layout(batch_sizes, packed.sorted_indices, batch,
                                        data.shape[0])
        tokens = tokens.to(data.device)
        steps = batch_sizes.shape[0]
        padded = data.new_zeros(steps * batch, data.shape[1]).index_copy(0, tokens, data)
        output, state = self._forward_time_major(padded.view(steps, batch, -1), hx, lengths,
                                                 batched=True, tokens=tokens)
        data_out = output.reshape(steps * batch, -1).index_select(0, tokens)
        return PackedSequence(data_out, batch_sizes, packed.sorted_indices,
                              packed.unsorted_indices), state


class TorchScriptNotSupportedError(RuntimeError):
    """torch.jit.script was called on a model holding a fastlstm.LSTM."""


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype torch.autocast asks for on x's device (CUDA or CPU), when it is on there and
    x is a float32 or half-precision tensor."""
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return None
    device = "cuda" if x.is_cuda else "cpu" if x.device.type == "cpu" else None
    if device is not None and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _packed_batch_size(packed: PackedSequence, hx) -> int:
    """B of a PackedSequence. Eagerly batch_sizes[0] (a CPU tensor: no sync); under
    torch.compile, from a static shape where there is one (sorted_indices, else hx, checked
    against batch_sizes[0] at run time), so that reading a tensor value does not graph-break."""
    if packed.sorted_indices is not None:
        return packed.sorted_indices.shape[0]
    if not torch.compiler.is_compiling() or packed.batch_sizes.numel() == 0:
        return int(packed.batch_sizes[0]) if packed.batch_sizes.numel() else 0
    if isinstance(hx, (tuple, list)) and len(hx) == 2 and isinstance(hx[0], Tensor) and \
            hx[0].dim() == 3:
        batch = hx[0].shape[1]
        torch._assert_async(packed.batch_sizes[0] == batch,
                            "hx: h_0 and c_0 must have the packed input's batch size "
                            "batch_sizes[0] in dim 1")
        return batch
    # enforce_sorted=True without hx: B is the data value batch_sizes[0] (nn.LSTM reads it
    # with int() too); fullgraph needs torch._dynamo.config.capture_scalar_outputs = True.
    return int(packed.batch_sizes[0])


