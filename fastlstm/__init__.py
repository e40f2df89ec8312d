"""fastlstm: a drop-in torch.nn.LSTM with per-sequence lengths on fused CPU and CUDA kernels."""

from . import _ops  # noqa: F401  (registers the native ops, their fake and autograd rules)
from .convert import convert, revert
from .functional import lstm
from .lengths import lengths_from_mask, lengths_from_padding, pad_with_lengths
from .modules import LSTM
from .onnx import export_onnx, onnx_translation_table

__all__ = ["LSTM", "lstm", "convert", "revert", "lengths_from_mask", "lengths_from_padding",
           "pad_with_lengths", "export_onnx", "onnx_translation_table"]
__version__ = "0.1.0"
