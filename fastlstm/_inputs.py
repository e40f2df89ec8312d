"""Checks and normalises what users pass to fastlstm.LSTM: lengths and the initial state.

Every error names the argument, what was expected and what was received.
"""

import numbers
import sys
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

LengthsLike = Union[Sequence[int], Tensor, "numpy.ndarray"]


# nn.LSTM raises RuntimeError for wrong shapes and devices of input and hx, ValueError for an
# input dtype that is not the weights', RuntimeError for other dtype mismatches. Our errors
# subclass those types as well as the ValueError / TypeError we have always raised, so that
# code catching either keeps working. See README, "Differences from nn.LSTM".
class ShapeError(ValueError, RuntimeError):
    """A tensor has the wrong number of dimensions or the wrong shape."""


class DeviceError(ValueError, RuntimeError):
    """A tensor is on the wrong device."""


class DTypeError(TypeError, ValueError, RuntimeError):
    """A tensor has the wrong dtype."""


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def as_lengths(lengths: Optional[LengthsLike], batch: int, steps: int,
               device: torch.device) -> Tensor:
    """lengths -> int64 tensor [batch], on the CPU or on `device`.

    None means every sequence is `steps` long. Lengths made here stay on the CPU, where the
    op reads them without a device-to-host copy. Values are checked here unless they live on
    a GPU (reading them would cost that copy) or we are being traced by torch.compile; the
    native op checks them in either case.
    """
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.int64)
    np = sys.modules.get("numpy")  # only if already imported: a numpy array implies it is
    if np is not None and isinstance(lengths, np.ndarray):
        # As pack_padded_sequence: any 1-D integer array (copied, so later edits don't matter).
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths must hold integers, got a numpy array of dtype "
                            f"{lengths.dtype}")
        if lengths.ndim != 1:
            raise ValueError(f"lengths must be 1-D with one entry per sequence, got a numpy "
                             f"array of shape {lengths.shape}")
        if lengths.dtype == np.uint64 and lengths.size and int(lengths.max()) >= 2**63:
            index = int(lengths.argmax())
            raise ValueError(f"lengths must lie in [0, T={steps}], got lengths[{index}] = "
                             f"{int(lengths[index])}")
        lengths = torch.tensor(lengths.astype(np.int64))
    if isinstance(lengths, Tensor):
        if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
            raise TypeError(f"lengths must hold integers, got a tensor of dtype {lengths.dtype}")
        if lengths.dim() != 1:
            raise ValueError(f"lengths must be 1-D with one entry per sequence, got shape "
                             f"{tuple(lengths.shape)}")
        if lengths.device.type != "cpu" and lengths.device != device:
            raise ValueError(f"lengths must be on the CPU or on the input's device {device}, "
                             f"got {lengths.device}")
        out = lengths.to(torch.int64)
    elif isinstance(lengths, (list, tuple)):
        for i, v in enumerate(lengths):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"lengths must hold integers, got lengths[{i}] = {v!r} of type "
                                f"{type(v).__name__}")
            if not -2**63 <= int(v) < 2**63:
                raise ValueError(f"lengths must lie in [0, T={steps}], got lengths[{i}] = {v}")
        out = torch.tensor([int(v) for v in lengths], dtype=torch.int64)
    else:
        raise TypeError(f"lengths must be a list, tuple or integer tensor (or a 1-D integer "
                        f"numpy array), got "
                        f"{type(lengths).__name__}")
    if out.shape[0] != batch:
        raise ValueError(f"lengths must have one entry per sequence ({batch}), got {out.shape[0]}")
    if out.device.type == "cpu" and not _compiling() and out.numel() > 0:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi > steps:
            bad = lo if lo < 0 else hi
            index = int((out == bad).nonzero()[0, 0])
            raise ValueError(f"lengths must lie in [0, T={steps}], got lengths[{index}] = {bad}")
    return out


def initial_state(hx: Optional[Tuple[Tensor, Tensor]], layers_x_dirs: int, batch: int,
                  hidden: int, out_size: int, batched: bool, like: Tensor) -> Tuple[Tensor, Tensor]:
    """hx -> (h0 [L*D, B, Hout], c0 [L*D, B, H]) as 3-D tensors; zeros when hx is None."""
    h_shape = (layers_x_dirs, batch, out_size)
    c_shape = (layers_x_dirs, batch, hidden)
    if hx is None:
        return (torch.zeros(h_shape, dtype=like.dtype, device=like.device),
                torch.zeros(c_shape, dtype=like.dtype, device=like.device))
    if not isinstance(hx, (tuple, list)) or len(hx) != 2 or \
            not all(isinstance(t, Tensor) for t in hx):
        got = (f"a {type(hx).__name__} of {len(hx)}: ("
               + ", ".join(type(t).__name__ for t in hx) + ")"
               if isinstance(hx, (tuple, list)) else type(hx).__name__)
        raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors, got {got}")
    h0, c0 = hx
    want_dim = 3 if batched else 2
    for index, (name, t, shape) in enumerate((("h_0", h0, h_shape), ("c_0", c0, c_shape))):
        if t.dim() != want_dim:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise ShapeError(f"hx: for {kind} input, {name} must be {want_dim}-D, got "
                             f"{t.dim()}-D with shape {tuple(t.shape)}")
        expected = shape if batched else (shape[0], shape[2])
        if tuple(t.shape) != expected:
            # nn.LSTM's own words first (code and tests match on them; it states unbatched
            # shapes with the batch of 1 it inserts), then fastlstm's detail.
            got_3d = tuple(t.shape) if batched else (t.shape[0], 1, t.shape[1])
            want_3d = shape if batched else (shape[0], 1, shape[2])
            raise ShapeError(f"Expected hidden[{index}] size {want_3d}, got {list(got_3d)}; "
                             f"fastlstm: hx: {name} must have shape {expected}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != like.dtype:
            raise DTypeError(f"hx: {name} must have the input's dtype {like.dtype}, got {t.dtype}")
        if t.device != like.device:
            raise DeviceError(f"hx: {name} must be on the input's device {like.device}, got "
                             f"{t.device}")
    if not batched:
        h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    return h0, c0
