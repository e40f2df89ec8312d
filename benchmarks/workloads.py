"""Workloads: model shape, batch, and how sequence lengths are drawn."""

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Workload:
    name: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch: int
    max_len: int
    lengths: str          # "equal" | "uniform" (lengths uniform in [min_len, max_len])
    min_len: int = 1
    dtype: str = "float32"

    def draw_lengths(self, seed: int = 0) -> torch.Tensor:
        """Lengths [batch] int64 on the CPU, unsorted; the longest is max_len so that every
        contender pads to the same T."""
        g = torch.Generator().manual_seed(seed)
        if self.lengths == "equal":
            out = torch.full((self.batch,), self.max_len, dtype=torch.int64)
        elif self.lengths == "uniform":
            out = torch.randint(self.min_len, self.max_len + 1, (self.batch,), generator=g)
        else:
            raise ValueError(f"lengths must be 'equal' or 'uniform', got {self.lengths!r}")
        out[torch.randint(0, self.batch, (1,), generator=g)] = self.max_len
        return out

    def tokens(self, lengths: torch.Tensor) -> int:
        return int(lengths.sum())

    def as_dict(self):
        return asdict(self)


# The default run: the core issue's target workload, varied and equal lengths, plus a smaller
# unidirectional model. Finishes in a couple of minutes on a 2-core CPU.
DEFAULT = [
    Workload("bi2-H256-B64-T200-uniform", 128, 256, 2, True, 64, 200, "uniform", min_len=20),
    Workload("bi2-H256-B64-T200-equal", 128, 256, 2, True, 64, 200, "equal"),
    Workload("uni1-H128-B32-T100-uniform", 64, 128, 1, False, 32, 100, "uniform", min_len=10),
]
