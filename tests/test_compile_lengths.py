"""torch.compile and new lengths on every call: how many compiles.

Dynamo specialises on every Python int it is given. A list of lengths is B ints, each its own
guard: the first call compiles for those values, and automatic dynamic shapes makes an entry
symbolic only after it has changed once. Lists in which every entry changes cost 1 or 2
recompiles; lists in which one entry at a time changes cost a compile per entry, and past
torch._dynamo.config.recompile_limit (8) Dynamo gives up (FailOnRecompileLimitHit under
fullgraph=True). The fix, documented in the README ("torch.compile and lengths"): pass lengths
as a tensor (its values are data, not guards: no recompile), or compile with dynamic=True
(every int symbolic from the start: no recompile). These tests pin all three behaviours.
"""

import random

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import fastlstm

B, T = 12, 6


def _lengths_one_entry_at_a_time(calls):
    rng = random.Random(0)
    lengths = [T] * B
    out = []
    for i in range(calls):
        lengths = list(lengths)
        lengths[i % B] = rng.randint(0, T - 1)
        out.append(lengths)
    return out


def _lengths_all_entries(calls):
    rng = random.Random(1)
    return [[rng.randint(0, T) for _ in range(B)] for _ in range(calls)]


def _run(as_tensor, dynamic, length_lists, fullgraph=True):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = fastlstm.LSTM(3, 4, bidirectional=True)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=fullgraph, dynamic=dynamic)
    x = torch.randn(T, B, 3, requires_grad=True)
    first = None
    for lengths in length_lists:
        arg = torch.tensor(lengths) if as_tensor else lengths
        out, (h, c) = compiled(x, lengths=arg)
        want, (h_want, c_want) = model(x, lengths=lengths)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(h, h_want)
        g, = torch.autograd.grad(out.sum() + h.sum(), x)
        g_want, = torch.autograd.grad(want.sum() + h_want.sum(), x)
        torch.testing.assert_close(g, g_want)
        first = counter.frame_count if first is None else first
    return counter.frame_count - first   # compiles after the first call


def test_first_call_compiles():
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fastlstm.LSTM(3, 4), backend=counter, fullgraph=True)
    compiled(torch.randn(T, B, 3), lengths=[T] * B)
    assert counter.frame_count >= 1


@pytest.mark.parametrize("pattern", [_lengths_one_entry_at_a_time, _lengths_all_entries])
def test_tensor_lengths_compile_once(pattern):
    assert _run(as_tensor=True, dynamic=None, length_lists=pattern(10)) == 0


@pytest.mark.parametrize("pattern", [_lengths_one_entry_at_a_time, _lengths_all_entries])
def test_list_lengths_with_dynamic_true_compile_once(pattern):
    assert _run(as_tensor=False, dynamic=True, length_lists=pattern(10)) == 0


def test_list_lengths_all_entries_changing_compile_few_times():
    assert _run(as_tensor=False, dynamic=None, length_lists=_lengths_all_entries(10)) <= 2


def test_list_lengths_one_entry_at_a_time_hit_the_recompile_limit():
    # The documented limitation: a compile per entry that changes, until the limit.
    with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
        _run(as_tensor=False, dynamic=None, length_lists=_lengths_one_entry_at_a_time(10))


def test_tensor_lengths_inside_a_compiled_model():
    # The usual shape: the model builds the lengths tensor from its own input (a mask).
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = fastlstm.LSTM(3, 4, batch_first=True)

        def forward(self, x, mask):
            return self.rnn(x, lengths=fastlstm.lengths_from_mask(mask, check=False))[0]

    torch._dynamo.reset()
    model = Tagger()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x = torch.randn(B, T, 3)
    counts = []
    for lengths in _lengths_one_entry_at_a_time(10):
        mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        torch.testing.assert_close(compiled(x, mask), model(x, mask))
        counts.append(counter.frame_count)
    assert counts[-1] == counts[0] >= 1
