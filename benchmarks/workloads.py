"""One benchmark workload: model shape, batch, length distribution and dtype."""

from dataclasses import asdict, dataclass

import torch

from . import lengths as length_dists

DTYPE_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Workload:
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch: int
    max_len: int          # cap on the lengths; the batch is padded to its own longest
    lengths: str          # a distribution of benchmarks/lengths.py
    dtype: str = "float32"
    cuda_path: str = "auto"  # a CUDA path while fastlstm runs (config.CUDA_PATHS, run.cuda_path)

    @property
    def name(self) -> str:
        kind = "bi" if self.bidirectional else "uni"
        inp = "" if self.input_size == self.hidden_size else f"-I{self.input_size}"
        path = "" if self.cuda_path == "auto" else f"-{self.cuda_path}"
        return (f"{kind}{self.num_layers}-H{self.hidden_size}{inp}-B{self.batch}-T{self.max_len}"
                f"-{self.lengths}-{DTYPE_SHORT.get(self.dtype, self.dtype)}{path}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def draw_lengths(self, seed: int = 0) -> torch.Tensor:
        return length_dists.draw(self.lengths, self.batch, self.max_len, seed)

    def as_dict(self):
        return dict(asdict(self), name=self.name)
