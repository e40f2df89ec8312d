"""fastlstm: a drop-in torch.nn.LSTM with per-sequence lengths on fused CPU and CUDA kernels."""

__version__ = "0.1.0"

from ._cuda_check import check_torch_cuda as _check_torch_cuda

# Before the library loads: a +cu12 / +cu13 build links that CUDA major's runtime and cuBLAS,
# which only a torch built for the same major brings (else a loader error would name a .so).
_check_torch_cuda()

from . import _ops  # noqa: F401  (registers the native ops, their fake and autograd rules)
from .convert import convert, revert
from .functional import lstm
from .lengths import lengths_from_mask, lengths_from_padding, pad_with_lengths
from .modules import LSTM
from .onnx import export_onnx, onnx_translation_table

__all__ = ["LSTM", "lstm", "convert", "revert", "lengths_from_mask", "lengths_from_padding",
           "pad_with_lengths", "export_onnx", "onnx_translation_table"]
