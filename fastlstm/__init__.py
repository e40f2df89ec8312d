"""fastlstm: a drop-in torch.nn.LSTM with per-sequence lengths on fused CPU and CUDA kernels."""

from . import _ops  # noqa: F401  (registers the native ops, their fake and autograd rules)
from .functional import lstm
from .modules import LSTM

__all__ = ["LSTM", "lstm"]
__version__ = "0.1.0"
