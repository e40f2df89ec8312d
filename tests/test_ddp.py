"""fastlstm.LSTM under torch.nn.parallel.DistributedDataParallel.

The test starts 2 CPU processes (this file run as a script) with the gloo backend on
127.0.0.1 and a free port. Each trains a bidirectional 2-layer fastlstm model on its half of
every batch (variable lengths, a zero length included) for a few SGD steps. Their gradients
at every step and their final parameters must equal a single-process run on the concatenated
batch, both with fastlstm and with nn.LSTM over packed sequences (the judge).
"""

import os
import sys
import tempfile

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm
from distributed_launch import init_gloo, run_workers, step_batch

WORLD = 2
STEPS = 3
B, T, I, H = 6, 7, 3, 4     # global batch B, split in WORLD equal halves
LR, MOMENTUM = 0.1, 0.9


class Net(nn.Module):
    def __init__(self, rnn_type):
        super().__init__()
        self.rnn = rnn_type(I, H, num_layers=2, bidirectional=True, batch_first=True,
                            dtype=torch.float64)
        self.head = nn.Linear(2 * H, 1, dtype=torch.float64)

    def forward(self, x, lengths):
        if isinstance(self.rnn, fastlstm.LSTM):
            out, (h, _) = self.rnn(x, lengths=lengths)
        else:   # nn.LSTM, the judge: pack the non-empty sequences, zero state for the empty
            out = x.new_zeros(x.shape[0], x.shape[1], 2 * H)
            h = x.new_zeros(4, x.shape[0], H)
            nz = (lengths > 0).nonzero()[:, 0]
            packed = pack_padded_sequence(x[nz], lengths[nz], batch_first=True,
                                          enforce_sorted=False)
            out_nz, (h_nz, _) = self.rnn(packed)
            out_nz, _ = pad_packed_sequence(out_nz, batch_first=True, total_length=x.shape[1])
            out = out.index_copy(0, nz, out_nz)
            h = h.index_copy(1, nz, h_nz)
        return self.head(out).squeeze(-1), h


def batch(step):
    return step_batch(step, B, T, I)


def local_loss(model, x, lengths, target, scale):
    """sum over valid tokens of the squared error, plus a term on h_n, times `scale`: linear
    in the per-sequence terms, so halves summed over ranks give the full batch's loss."""
    pred, h = model(x, lengths)
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return (((pred - target) ** 2)[valid].sum() + (h ** 2).sum()) * scale


def make_model(rnn_type):
    torch.manual_seed(0)
    net = Net(fastlstm.LSTM)      # the same initial weights for every run and rank
    if rnn_type is nn.LSTM:
        net = fastlstm.revert(net)
    return net


def train(model, shard=None, world=1, wrap=lambda m: m):
    """STEPS SGD steps; returns the gradients of every step and the final parameters."""
    ddp = wrap(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)
    grads = []
    for step in range(STEPS):
        x, lengths, target = batch(step)
        if shard is not None:
            x, lengths, target = x[shard], lengths[shard], target[shard]
        opt.zero_grad()
        # DDP averages gradients over ranks: scale by world / B so that they sum to the
        # gradient of the full batch's loss / B.
        local_loss(ddp, x, lengths, target, world / B).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return grads, params


def worker(rank, port, out_dir):
    init_gloo(rank, port, WORLD)
    try:
        half = B // WORLD
        shard = slice(rank * half, (rank + 1) * half)
        model = make_model(fastlstm.LSTM)
        grads, params = train(model, shard, WORLD,
                              lambda m: nn.parallel.DistributedDataParallel(m))
        torch.save({"grads": grads, "params": params}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_matches_single_process_on_concatenated_batch():
    from helpers import assert_close

    with tempfile.TemporaryDirectory() as out_dir:
        run_workers(__file__, out_dir, WORLD, "DDP")
        ranks = [torch.load(os.path.join(out_dir, f"{r}.pt")) for r in range(WORLD)]

    single = train(make_model(fastlstm.LSTM))
    judge = train(make_model(nn.LSTM))
    names = list(judge[1])
    assert len(names) == 2 * 2 * 4 + 2
    for r, result in enumerate(ranks):
        for step in range(STEPS):
            assert list(result["grads"][step]) == names
            for n in names:
                want = judge[0][step][n]
                assert want.abs().max() > 0, f"step {step}: no gradient reaches {n}"
                assert_close(f"grad.{n} r{r} s{step} vs nn.LSTM", result["grads"][step][n], want)
                assert_close(f"grad.{n} r{r} s{step} vs 1 proc", result["grads"][step][n],
                             single[0][step][n])
        for n in names:
            assert_close(f"param {n} r{r} vs nn.LSTM", result["params"][n], judge[1][n])
            assert_close(f"param {n} r{r} vs 1 proc", result["params"][n], single[1][n])
    # The runs did train: the parameters moved away from the initial ones.
    initial = dict(make_model(fastlstm.LSTM).named_parameters())
    assert all(not torch.equal(ranks[0]["params"][n], initial[n]) for n in names)


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
