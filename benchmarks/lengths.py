"""Per-sequence length distributions of the benchmark's batches.

Every draw is capped at the workload's max_len (longer sequences are truncated, as a
tokenizer's max_length does), and the batch is padded to its own longest sequence, as a collate
function does. Distributions:

  equal      every sequence is max_len long: no padding at all, the best case for nn.LSTM.
  uniform    uniform on max_len/10..max_len (the issues' "uniform in [T/10, T]").
  nearfull   uniform on 4 max_len/5..max_len: nearly full batches (mean fill about 0.9), where
             padding costs nn.LSTM little.
  lognormal  long-tailed: log-normal with median max_len / 8 and sigma 1.0, so most sequences
             are short and a few reach max_len (coefficient of variation ~1.3 before the cap).
  sentence   English sentence lengths in tokens: log-normal with mean 22.1 tokens and sigma 0.5.
             The mean is the Penn Treebank language-modelling training set's (ptb.train.txt:
             929,589 tokens, end-of-sentence markers included, in 42,068 sentences). Sentence
             lengths in prose are close to log-normal (Williams 1940; Sichel 1974 surveys the
             fits); sigma 0.5 (coefficient of variation 0.53) is our assumption, not a fit.
  skewed     one sequence max_len long, every other of length 1 (the issue "CPU inference that
             never loses": 99 x 1 and 1 x 5,000): memory and time must follow the valid tokens.
"""

import math

import torch

SENTENCE_MEAN_TOKENS = 929_589 / 42_068
SENTENCE_SIGMA = 0.5
LOGNORMAL_SIGMA = 1.0
LOGNORMAL_MEDIAN_FRACTION = 1 / 8

DISTRIBUTIONS = ("equal", "uniform", "nearfull", "lognormal", "sentence", "skewed")


def _lognormal(g, n, median, sigma):
    return torch.exp(math.log(median) + sigma * torch.randn(n, generator=g, dtype=torch.float64))


def draw(kind: str, batch: int, max_len: int, seed: int = 0) -> torch.Tensor:
    """Lengths [batch], int64 on the CPU, unsorted, each in 1..max_len."""
    g = torch.Generator().manual_seed(seed)
    if kind == "equal":
        raw = torch.full((batch,), float(max_len), dtype=torch.float64)
    elif kind == "uniform":
        raw = torch.randint(max(1, max_len // 10), max_len + 1, (batch,), generator=g).double()
    elif kind == "nearfull":
        raw = torch.randint(max(1, 4 * max_len // 5), max_len + 1, (batch,), generator=g).double()
    elif kind == "lognormal":
        raw = _lognormal(g, batch, max_len * LOGNORMAL_MEDIAN_FRACTION, LOGNORMAL_SIGMA)
    elif kind == "sentence":
        # mean = median * exp(sigma^2 / 2) for a log-normal.
        median = SENTENCE_MEAN_TOKENS * math.exp(-SENTENCE_SIGMA ** 2 / 2)
        raw = _lognormal(g, batch, median, SENTENCE_SIGMA)
    elif kind == "skewed":
        raw = torch.ones(batch, dtype=torch.float64)
        raw[int(torch.randint(0, batch, (1,), generator=g))] = max_len
    else:
        raise ValueError(f"lengths must be one of {', '.join(DISTRIBUTIONS)}; got {kind!r}")
    return raw.round().clamp(1, max_len).to(torch.int64)


def variation(lengths: torch.Tensor) -> float:
    """Coefficient of variation (std / mean) of a batch's lengths: 0 when all are equal."""
    x = lengths.double()
    return float(x.std(unbiased=False) / x.mean())
