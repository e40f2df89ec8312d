"""ONNX export: fastlstm.LSTM becomes the standard ONNX ``LSTM`` operator.

Exporter path: ``torch.onnx.export(..., dynamo=True)`` (torch.export, then onnxscript) with a
``custom_translation_table`` that maps ``torch.ops.fastlstm.lstm_layer_forward`` (one op per
layer) to one ONNX ``LSTM`` node per layer. The legacy TorchScript exporter is not used: it
is deprecated, and torch.export already sees the custom op as a single node (it has a fake
kernel), so no tracing of the native code is involved.

Per layer, the translation emits:

- ``W = [W_ih]``, ``R = [W_hh]`` and ``B = [b_ih, b_hh]`` stacked over directions, with the
  gate blocks reordered from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c) by a ``Gather``
  on constant indices (the exporter's optimizer folds it into the initializers);
- ``sequence_lens = Cast(lengths, int32)``: per-sequence lengths, so outputs past a
  sequence's end are 0, ``Y_h``/``Y_c`` come from its own last step, and the reverse
  direction starts at its end (as fastlstm, and nn.LSTM over a packed batch);
- ``direction="bidirectional"`` for bidirectional layers, ``initial_h``/``initial_c`` from
  ``hx`` (or zeros);
- ``Y [T, D, B, H]`` transposed and reshaped to fastlstm's ``[T, B, D*H]``;
- ``Y_h``/``Y_c`` of zero-length sequences replaced by ``initial_h``/``initial_c`` (a
  ``Where``): ONNX leaves them unspecified and onnxruntime returns 0, while fastlstm (like
  nn.LSTM on the sequences that remain) passes the initial state through.

``proj_size > 0`` has no ONNX equivalent (the ONNX LSTM has no projection): export raises a
``ValueError``. The ``reserve`` output (the training workspace) is exported as an empty uint8
tensor: inference graphs never read it.

Use :func:`export_onnx` (a thin wrapper of ``torch.onnx.export``), or pass
:func:`onnx_translation_table` as ``custom_translation_table=`` yourself. Needs the ``onnx``
and ``onnxscript`` packages; ``onnxruntime`` runs the result. Lengths are a graph input when
the model takes them as a tensor argument (see ``tests/test_onnx.py``); a Python list of
lengths would be baked into the graph as a constant. ``dynamic_shapes`` for the batch and
time dimensions work. float32 is what onnxruntime runs: a float64 model exports to valid
ONNX, but onnxruntime's LSTM kernel refuses double ("does not support double yet").
"""

from typing import Any, Callable, Dict

import torch
from torch import nn

__all__ = ["export_onnx", "onnx_translation_table"]

# Rows of PyTorch's [i, f, g, o] blocks taken in ONNX's [i, o, f, c] order.
_GATE_ORDER = (0, 3, 1, 2)
_PROJ_ERROR = ("fastlstm ONNX export: proj_size > 0 (LSTM with projections) has no ONNX "
               "equivalent: the ONNX LSTM operator has no projection. Expected proj_size=0, "
               "got {}")


def _check_exportable(model: Any) -> None:
    """Raises ValueError naming the module when a fastlstm.LSTM has proj_size > 0."""
    from .modules import LSTM

    if not isinstance(model, nn.Module):
        return
    for name, module in model.named_modules():
        if isinstance(module, LSTM) and module.proj_size > 0:
            where = f"module '{name}'" if name else "the model"
            raise ValueError(_PROJ_ERROR.format(f"proj_size={module.proj_size} in {where}"))


def _lstm_layer_forward(input, lengths, h0, c0, weights, has_biases: bool,
                        has_projections: bool, bidirectional: bool, padded_reserve: bool = False):
    """onnxscript translation of fastlstm::lstm_layer_forward (traced by the exporter)."""
    import numpy as np
    from onnxscript import opset18 as op

    if has_projections:
        raise ValueError(_PROJ_ERROR.format("a layer with projections (weight_hr)"))
    D = 2 if bidirectional else 1
    per_dir = 4 if has_biases else 2
    w_hh = weights[1]
    H = w_hh.shape[0] // 4 if w_hh.shape is not None else None
    if not isinstance(H, int):
        raise ValueError("fastlstm ONNX export: weight_hh must have a static shape "
                         f"[4*H, H], got {w_hh.shape}")
    rows = np.concatenate([np.arange(g * H, (g + 1) * H) for g in _GATE_ORDER]).astype(np.int64)
    order = op.Constant(value=_tensor(rows, "fastlstm_gate_order"))
    zero_axis = op.Constant(value=_tensor(np.array([0], dtype=np.int64), "fastlstm_axis0"))

    def stacked(index_in_dir):
        # [D, rows, cols] (or [D, rows] for biases) in ONNX gate order.
        parts = [op.Unsqueeze(op.Gather(weights[d * per_dir + index_in_dir], order, axis=0),
                              zero_axis) for d in range(D)]
        return parts[0] if D == 1 else op.Concat(*parts, axis=0)

    W = stacked(0)
    R = stacked(1)
    B = op.Concat(stacked(2), stacked(3), axis=1) if has_biases else None
    seq_lens = op.Cast(lengths, to=6)  # INT32
    Y, Y_h, Y_c = op.LSTM(input, W, R, B, seq_lens, h0, c0,
                          direction="bidirectional" if bidirectional else "forward",
                          hidden_size=H)
    # Y [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H]
    out_shape = op.Constant(value=_tensor(np.array([0, 0, -1], dtype=np.int64),
                                          "fastlstm_out_shape"))
    output = op.Reshape(op.Transpose(Y, perm=[0, 2, 1, 3]), out_shape)
    # ONNX leaves Y_h/Y_c of a zero-length sequence undefined (onnxruntime gives 0);
    # fastlstm and nn.LSTM semantics: they are its initial state.
    empty = op.Unsqueeze(op.Equal(lengths, op.Constant(value=_tensor(
        np.array(0, dtype=np.int64), "fastlstm_zero"))), op.Constant(value=_tensor(
            np.array([0, 2], dtype=np.int64), "fastlstm_axes02")))
    Y_h = op.Where(empty, h0, Y_h)
    Y_c = op.Where(empty, c0, Y_c)
    reserve = op.Constant(value=_tensor(np.zeros((0,), dtype=np.uint8), "fastlstm_reserve"))
    return output, Y_h, Y_c, reserve


def _lstm_layer_inference(input, lengths, h0, c0, weights, has_biases: bool,
                          has_projections: bool, bidirectional: bool):
    """fastlstm::lstm_layer_inference (the op a model whose weights need no gradient exports
    with): the same ONNX LSTM, without the reserve."""
    output, Y_h, Y_c, _ = _lstm_layer_forward(input, lengths, h0, c0, weights, has_biases,
                                              has_projections, bidirectional)
    return output, Y_h, Y_c


def _tensor(array, name):
    import onnx_ir as ir

    return ir.tensor(array, name=name)


def onnx_translation_table() -> Dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    return {torch.ops.fastlstm.lstm_layer_forward.default: _lstm_layer_forward,
            torch.ops.fastlstm.lstm_layer_inference.default: _lstm_layer_inference}


def export_onnx(model: nn.Module, args=(), f=None, **kwargs):
    """``torch.onnx.export(model, args, f, dynamo=True, ...)`` with fastlstm's translation.

    Every keyword of ``torch.onnx.export`` is passed on (``kwargs=``, ``input_names``,
    ``output_names``, ``dynamic_shapes``, ``opset_version``...). A ``custom_translation_table``
    you pass is merged with fastlstm's. Raises ``ValueError`` before exporting when a
    fastlstm.LSTM in ``model`` has ``proj_size > 0``. Returns the ``torch.onnx.ONNXProgram``.
    """
    _check_exportable(model)
    if kwargs.get("dynamo", True) is not True:
        raise ValueError("fastlstm ONNX export needs the dynamo exporter: expected dynamo=True, "
                         f"got dynamo={kwargs['dynamo']!r}")
    kwargs["dynamo"] = True
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table.update(onnx_translation_table())
    return torch.onnx.export(model, args, f, custom_translation_table=table, **kwargs)
