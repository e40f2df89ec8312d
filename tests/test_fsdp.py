"""fastlstm.LSTM under FSDP2 (torch.distributed.fsdp.fully_shard).

Each test starts 2 CPU processes (this file run as a script) with the gloo backend on
127.0.0.1 and a free port. fully_shard is applied to the LSTM and to the root model, so every
parameter (the LSTM's included) is a DTensor sharded over the 2 ranks and is all-gathered for
the forward. Each rank trains a bidirectional 2-layer fastlstm model with a Linear head on its
half of every batch (variable lengths, a zero length included) for a few SGD steps. The full
gradients of every step (DTensor.full_tensor()) and the final parameters must equal a
single-process run of the same model with nn.LSTM over packed sequences (the judge) on the
concatenated batch, from the same initial weights (loaded through state_dict).

test_fsdp_float32: float32 throughout, float32 tolerances.
test_fsdp_mixed_precision_bf16: MixedPrecisionPolicy(param_dtype=bfloat16,
reduce_dtype=float32): the forward and backward run in bfloat16 (fastlstm's bfloat16 CPU
kernel), gradients are reduced and parameters kept in float32. Judged against nn.LSTM trained
in float64, with tolerances measured on nn.LSTM's own bfloat16 error (see BF16_TOLERANCE).
"""

import os
import sys

import pytest
import torch
from torch import nn

import fastlstm
from distributed_launch import init_gloo, run_workers, step_batch
from helpers import assert_close, reference_forward
from once_per_run import mark_done, shared_folder, wait_done

WORLD = 2
STEPS = 3
B, T, I, H = 8, 10, 8, 16   # global batch B, split in WORLD equal halves
LAYERS, DIRS = 2, 2
LR, MOMENTUM = 0.1, 0.9
MODES = ("float32", "bf16")

# Mixed precision tolerances, per tensor |diff| <= scaled_atol * max|expected| + rtol * |expected|,
# against nn.LSTM trained in float64. Measured (this file's model, data and 3 SGD steps): nn.LSTM
# itself, trained single-process the way the policy trains (float32 parameters, a bfloat16 copy
# for the forward and backward, bfloat16 inputs, bfloat16 gradients cast to float32 for SGD), is
# off from the float64 run by up to scaled_atol 1.08e-2 on the gradients and 1.79e-3 on the final
# parameters (with rtol 1e-2; 1.3e-2 and 5.5e-3 with rtol 0). fastlstm under FSDP: 7.1e-3 and
# 2.6e-4 (float32: 1.2e-8 and 0). The tolerances allow ~2.8x nn.LSTM's own bfloat16 error, and
# nn.LSTM's bfloat16 run is checked against them too.
BF16_TOLERANCE = {"grad": dict(scaled_atol=3e-2, rtol=1e-2),
                  "param": dict(scaled_atol=5e-3, rtol=1e-2)}


class Net(nn.Module):
    def __init__(self, rnn_type, dtype=torch.float32):
        super().__init__()
        self.rnn = rnn_type(I, H, num_layers=LAYERS, bidirectional=DIRS == 2, batch_first=True,
                            dtype=dtype)
        self.head = nn.Linear(DIRS * H, 1, dtype=dtype)

    def forward(self, x, lengths):
        if isinstance(self.rnn, fastlstm.LSTM):
            out, (h, _) = self.rnn(x, lengths=lengths)
        else:   # nn.LSTM, the judge: packed, enforce_sorted=False, empty sequences put back
            out, h, _ = reference_forward(self.rnn, x, lengths)
        return self.head(out), h


def make_model(rnn_type, dtype=torch.float32):
    torch.manual_seed(0)
    fast = Net(fastlstm.LSTM)                # the same initial weights for every run and rank
    if rnn_type is fastlstm.LSTM:
        return fast
    judge = Net(nn.LSTM, dtype)
    judge.load_state_dict(fast.state_dict())  # fastlstm.LSTM has nn.LSTM's parameter names
    return judge


def batch(step, dtype=torch.float32):
    x, lengths, target = step_batch(step, B, T, I)
    return x.to(dtype), lengths, target.to(dtype)


def loss_fn(model, x, lengths, target):
    """The mean over the sequences of the batch of (the squared error summed over its valid
    tokens + |h_n|^2). FSDP averages the gradients over the ranks' equal halves: the mean of
    the halves' means is the mean over the concatenated batch, the single-process loss."""
    pred, h = model(x, lengths)
    pred, h = pred[..., 0].to(target.dtype), h.to(target.dtype)   # float32 under bf16 params
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    per_seq = ((pred - target) ** 2 * valid).sum(1) + (h ** 2).sum((0, 2))
    return per_seq.mean()


def full(t):
    """A DTensor (FSDP's sharded parameter or gradient) all-gathered, or a plain tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(model, shard=None, dtype=torch.float32, compute_dtype=None):
    """STEPS SGD steps; returns the gradients of every step and the final parameters (full).
    compute_dtype: run forward and backward on a copy of the model in that dtype (what a
    mixed precision policy does) and step the `dtype` parameters with its gradients."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    grads = []
    for step in range(STEPS):
        x, lengths, target = batch(step, dtype)
        if shard is not None:
            x, lengths, target = x[shard], lengths[shard], target[shard]
        opt.zero_grad()
        if compute_dtype is None:
            loss_fn(model, x, lengths, target).backward()
        else:
            low = Net(type(model.rnn), compute_dtype)
            low.load_state_dict(model.state_dict())
            loss_fn(low, x.to(compute_dtype), lengths, target).backward()
            for p, q in zip(model.parameters(), low.parameters()):
                p.grad = q.grad.to(dtype)
        grads.append({n: full(p.grad).clone() for n, p in model.named_parameters()})
        opt.step()
    params = {n: full(p.detach()).clone() for n, p in model.named_parameters()}
    return grads, params


def worker(rank, port, out_dir):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor

    init_gloo(rank, port, WORLD)
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        half = B // WORLD
        shard = slice(rank * half, (rank + 1) * half)
        for mode in MODES:      # one launch for both tests: most of the time is imports
            kwargs = dict(mesh=mesh)
            if mode == "bf16":
                kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                           reduce_dtype=torch.float32)
            model = make_model(fastlstm.LSTM)
            fully_shard(model.rnn, **kwargs)
            fully_shard(model, **kwargs)
            # Every parameter, the LSTM's included, is a DTensor sharded on dim 0.
            for n, p in model.named_parameters():
                assert isinstance(p, DTensor), f"{n} is not a DTensor: {type(p).__name__}"
                assert p.to_local().shape[0] == p.shape[0] // WORLD or p.shape[0] == 1, \
                    (n, p.to_local().shape)
            # In the forward, fastlstm gets all-gathered plain tensors in the policy's dtype.
            seen = []

            def check_weights(module, args):
                w = module.weight_hh_l0
                seen.append((isinstance(w, DTensor), tuple(w.shape), w.dtype, args[0].dtype))
            model.rnn.register_forward_pre_hook(check_weights)
            grads, params = train(model, shard)
            want = torch.bfloat16 if mode == "bf16" else torch.float32
            assert seen == [(False, (4 * H, H), want, want)] * STEPS, seen
            assert all(type(p.grad) is DTensor and p.grad.dtype == torch.float32
                       for p in model.parameters())
            torch.save({"grads": grads, "params": params},
                       os.path.join(out_dir, f"{mode}.{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def check(ranks, judge, tolerance=None):
    """Every rank's full gradients and final parameters against the judge's."""
    names = list(judge[1])
    assert len(names) == LAYERS * DIRS * 4 + 2
    for r, result in enumerate(ranks):
        for step in range(STEPS):
            assert list(result["grads"][step]) == names
            for n in names:
                want = judge[0][step][n].float()
                assert want.abs().max() > 0, f"step {step}: no gradient reaches {n}"
                assert_close(f"grad.{n} r{r} s{step}", result["grads"][step][n], want,
                             tolerance=tolerance and tolerance("grad", want))
        for n in names:
            want = judge[1][n].float()
            assert_close(f"param {n} r{r}", result["params"][n], want,
                         tolerance=tolerance and tolerance("param", want))
    # The runs did train: the parameters moved away from the initial ones.
    initial = dict(make_model(fastlstm.LSTM).named_parameters())
    assert all(not torch.equal(ranks[0]["params"][n], initial[n]) for n in names)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    """{mode: [rank 0's results, rank 1's]}, from one launch of the 2 workers per pytest run
    (tests/once_per_run.py)."""
    out_dir, owner = shared_folder(tmp_path_factory, "fsdp")
    if owner:
        try:
            run_workers(__file__, str(out_dir), WORLD, "FSDP")
        finally:
            mark_done(out_dir, "ranks")   # a failed launch fails the other worker's load too
    else:
        wait_done(out_dir, "ranks", timeout_s=300)
    return {mode: [torch.load(out_dir / f"{mode}.{r}.pt") for r in range(WORLD)]
            for mode in MODES}


@pytest.mark.slow
def test_fsdp_float32(fsdp_runs):
    check(fsdp_runs["float32"], train(make_model(nn.LSTM)))


def bf16_tolerance(kind, expected):
    t = BF16_TOLERANCE[kind]
    return dict(atol=t["scaled_atol"] * expected.abs().max().item(), rtol=t["rtol"])


def test_fsdp_mixed_precision_bf16(fsdp_runs):
    ranks = fsdp_runs["bf16"]
    exact = train(make_model(nn.LSTM, torch.float64), dtype=torch.float64)
    check(ranks, exact, bf16_tolerance)
    # The tolerances hold nn.LSTM's own bfloat16 training (single process, the policy's dtypes).
    nn_bf16 = train(make_model(nn.LSTM), compute_dtype=torch.bfloat16)
    check([{"grads": nn_bf16[0], "params": nn_bf16[1]}], exact, bf16_tolerance)
    # FSDP did compute in bfloat16: far from the float32 run, at bfloat16 rounding distance.
    fp32 = train(make_model(nn.LSTM))
    off = max((ranks[0]["grads"][0][n] - fp32[0][0][n]).abs().max().item() for n in fp32[1])
    assert off > 1e-4, f"mixed precision run is within {off:.1e} of float32: no bfloat16 used"


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
