"""Lengths for ``fastlstm.LSTM(..., lengths=)`` from the shapes people already have.

- :func:`lengths_from_mask`: a boolean (or 0/1) mask, True at valid steps, like Keras masks
  and Hugging Face ``attention_mask``;
- :func:`lengths_from_padding`: token ids with a padding id, like Keras's
  ``Embedding(mask_zero=True)`` (padding id 0) or ``nn.Embedding(padding_idx=...)``;
- :func:`pad_with_lengths`: a list of tensors of unequal lengths, giving the padded batch
  and the lengths.

The mask and the ids are ``[B, T]`` by default (``batch_first=True``, as Keras and attention
masks are); pass ``batch_first=False`` for ``[T, B]``. A 1-D ``[T]`` mask (one unbatched
sequence) gives lengths of shape ``[1]``. Valid steps must form a prefix of each sequence
(right padding): a mask with holes, i.e. a valid step after a padding step, raises a
``ValueError`` naming the argument, the position and what was expected, instead of silently
giving lengths that do not describe the data. Left-padded batches (Keras's
``pad_sequences`` default, ``padding="pre"``) must be right-padded first.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

__all__ = ["lengths_from_mask", "lengths_from_padding", "pad_with_lengths"]


def lengths_from_mask(mask, batch_first: bool = True, *, check: bool = True) -> Tensor:
    """Lengths (int64, on the mask's device) from a mask that is True at valid steps.

    ``mask`` is a bool tensor, or an integer tensor of 0/1 (array-likes are converted with
    ``torch.as_tensor``), shaped ``[B, T]`` (``batch_first=True``, the default), ``[T, B]``
    (``batch_first=False``), or ``[T]``. ``check=False`` skips the hole check (it reads the
    mask, a device-to-host sync on a GPU).
    """
    mask = _as_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be a bool tensor (True at valid steps) or an integer "
                            f"tensor of 0 and 1, got dtype {mask.dtype}")
        if check and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
            bad = ((mask != 0) & (mask != 1)).nonzero()[0].tolist()
            raise ValueError(f"mask must hold only 0 and 1 (or True and False), got "
                             f"mask[{', '.join(map(str, bad))}] = {mask[tuple(bad)].item()}")
        mask = mask != 0
    valid = _rows(mask, "mask", batch_first)
    return _prefix_lengths(valid, check,
                           lambda b, first, t: _describe_mask(mask, b, first, t, batch_first))


def lengths_from_padding(ids, padding_idx: int = 0, batch_first: bool = True, *,
                         check: bool = True) -> Tensor:
    """Lengths (int64, on the ids' device) from token ids padded with ``padding_idx``.

    Keras's ``Embedding(mask_zero=True)`` is ``padding_idx=0`` (the default). ``ids`` is an
    integer tensor (array-likes are converted) shaped ``[B, T]`` (``batch_first=True``, the
    default), ``[T, B]`` or ``[T]``. Padding must come only at the end of each sequence: a
    token after a padding id raises a ValueError (so does ``padding_idx`` used as a real token
    inside a sequence). ``check=False`` skips that check.
    """
    ids = _as_tensor(ids, "ids")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"ids must be an integer tensor of token ids, got dtype {ids.dtype}")
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
        raise TypeError(f"padding_idx must be an int, got {padding_idx!r} of type "
                        f"{type(padding_idx).__name__}")
    valid = _rows(ids != padding_idx, "ids", batch_first)

    def describe(b: int, first: int, t: int) -> str:
        bf = None if ids.dim() == 1 else batch_first
        return (f"ids must hold padding (padding_idx={padding_idx}) only at the end of each "
                f"sequence, with no token after it; got {_index('ids', b, t, bf)} = "
                f"{int(_at(ids, b, t, batch_first))} after {_index('ids', b, first, bf)} = "
                f"{padding_idx} (padding), in sequence {b}{_LEFT_PAD_HINT}")

    return _prefix_lengths(valid, check, describe)


def pad_with_lengths(sequences: Sequence[Union[Tensor, Sequence]], batch_first: bool = True,
                     padding_value: float = 0.0, total_length: Optional[int] = None
                     ) -> Tuple[Tensor, Tensor]:
    """``(padded, lengths)`` from a list of tensors ``[L_i, *]`` of unequal lengths.

    ``padded`` is ``[B, T, *]`` (``batch_first=True``, the default) or ``[T, B, *]``, with
    ``T = max(L_i)`` or ``total_length``, filled with ``padding_value`` past each sequence;
    ``lengths`` is an int64 CPU tensor ``[B]`` (fastlstm reads CPU lengths without a device
    sync). Elements may also be lists or arrays (converted with ``torch.as_tensor``).
    Zero-length sequences are allowed. All elements must share the trailing shape, dtype and
    device.
    """
    if isinstance(sequences, Tensor) or not isinstance(sequences, (list, tuple)):
        raise TypeError(f"sequences must be a list or tuple of tensors, got "
                        f"{type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("sequences must hold at least one sequence, got an empty "
                         f"{type(sequences).__name__}")
    tensors: List[Tensor] = [_as_tensor(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
    # An empty list (not a tensor) has no dtype or trailing shape of its own: it takes them
    # from the first element that has.
    given = [isinstance(s, Tensor) or t.numel() > 0 for s, t in zip(sequences, tensors)]
    k = given.index(True) if any(given) else 0
    first = tensors[k]
    tensors = [t if g else t.new_zeros((0,) + tuple(first.shape[1:]), dtype=first.dtype,
                                       device=first.device)
               for t, g in zip(tensors, given)]
    for i, t in enumerate(tensors):
        if t.dim() == 0:
            raise ValueError(f"sequences[{i}] must have a time dimension [L, *], got a 0-d "
                             f"tensor")
        if t.shape[1:] != first.shape[1:]:
            raise ValueError(f"sequences[{i}] must have the trailing shape "
                             f"{tuple(first.shape[1:])} of sequences[{k}] (shape [L, *]), got "
                             f"shape {tuple(t.shape)}")
        if t.dtype != first.dtype:
            raise TypeError(f"sequences[{i}] must have the dtype {first.dtype} of "
                            f"sequences[{k}], got {t.dtype}")
        if t.device != first.device:
            raise ValueError(f"sequences[{i}] must be on the device {first.device} of "
                             f"sequences[{k}], got {t.device}")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    longest = int(lengths.max())
    if total_length is not None:
        if isinstance(total_length, bool) or not isinstance(total_length, int) or \
                total_length < longest:
            raise ValueError(f"total_length must be an int >= the longest sequence "
                             f"({longest}), got {total_length!r}")
    T = longest if total_length is None else total_length
    padded = first.new_full((len(tensors), T) + tuple(first.shape[1:]), padding_value)
    if longest > 0:
        body = pad_sequence(tensors, batch_first=True, padding_value=padding_value)
        padded[:, :longest] = body
    if not batch_first:
        padded = padded.transpose(0, 1).contiguous()
    return padded, lengths


_LEFT_PAD_HINT = ("; a left-padded batch (Keras's pad_sequences default, padding='pre') must "
                  "be padded on the right instead (padding='post')")


def _as_tensor(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor (or convertible by torch.as_tensor), got "
                        f"{type(value).__name__}: {e}") from None


def _rows(valid: Tensor, name: str, batch_first: bool) -> Tensor:
    """valid [B, T] / [T, B] / [T] -> [B, T] bool (a view)."""
    if valid.dim() == 1:
        return valid.unsqueeze(0)
    if valid.dim() != 2:
        layout = "[B, T]" if batch_first else "[T, B]"
        raise ValueError(f"{name} must be 2-D {layout} (batch_first={batch_first}) or 1-D [T], "
                         f"got {valid.dim()}-D with shape {tuple(valid.shape)}")
    return valid if batch_first else valid.t()


def _prefix_lengths(valid: Tensor, check: bool, describe) -> Tensor:
    """valid [B, T] bool -> lengths [B] int64. At the first row with a hole, raises
    ValueError(describe(row, first invalid step, first valid step after it))."""
    lengths = valid.sum(1, dtype=torch.int64)
    if check and valid.numel():
        # A row is a prefix iff it has no valid step at or after its count of valid steps.
        steps = torch.arange(valid.shape[1], device=valid.device)
        holes = valid & (steps[None, :] >= lengths[:, None])
        if bool(holes.any()):
            b = int(holes.nonzero()[0, 0])
            row = valid[b].cpu()
            gap = int((~row).nonzero()[0, 0])
            after = int(row[gap:].nonzero()[0, 0]) + gap
            raise ValueError(describe(b, gap, after))
    return lengths


def _index(name: str, b: int, t: int, batch_first: Optional[bool]) -> str:
    if batch_first is None:  # 1-D
        return f"{name}[{t}]"
    return f"{name}[{b}, {t}]" if batch_first else f"{name}[{t}, {b}]"


def _at(x: Tensor, b: int, t: int, batch_first: bool):
    if x.dim() == 1:
        return x[t]
    return x[b, t] if batch_first else x[t, b]


def _describe_mask(mask: Tensor, b: int, first: int, t: int, batch_first: bool) -> str:
    bf = None if mask.dim() == 1 else batch_first
    return (f"mask must be True on a prefix of each sequence and False after it (right "
            f"padding, no True after a False); got {_index('mask', b, t, bf)} = True after "
            f"{_index('mask', b, first, bf)} = False, in sequence {b}{_LEFT_PAD_HINT}; a "
            f"mask that is True at padding (like nn.Transformer's key_padding_mask) must be "
            f"inverted (~mask)")
