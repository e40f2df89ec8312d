"""CPU layer calls on contended cores (csrc/cpu/contention.h).

Each parallel layer call measures the time its threads lost to other processes; a call that
lost much opens a window in which layer calls of under 2^29 multiply-adds (their forward's) run
on the calling thread alone: one group per direction, nested loops inline, MKL on one thread.
FASTLSTM_CPU_CONTENTION (read at every call): auto, off (tests/conftest.py's default, so that
the rest of the suite does not depend on timing) or on (always contended).

nn.LSTM over packed input is the judge of the serial calls, training and inference;
_cpu_last_row_groups() shows whether a call ran serially (one group per direction) or split
its rows over the threads.
"""

import pytest
import torch

from helpers import assert_close, check_parity, make_pair, random_lengths, reference_forward

F32 = torch.float32


def small_case(bidirectional, seed=0):
    """A layer of about 14 M multiply-adds a direction: above the size that always runs on one
    thread (4 M), below the contended limit (2^29)."""
    ref, fast = make_pair(32, 64, dtype=F32, bidirectional=bidirectional, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths("has_zero", 16, 60, gen)
    x = torch.randn(60, 16, 32, generator=gen)
    return ref, fast, x, lengths


def inference_matches(ref, fast, x, lengths, before_fast=lambda: None):
    """fastlstm's inference against nn.LSTM's; before_fast() runs just before fastlstm's call
    (after nn.LSTM's, so that the time nn.LSTM takes cannot close a window it opens)."""
    with torch.no_grad():
        expected = reference_forward(ref, x, lengths, None)
        before_fast()
        out, (h, c) = fast(x, lengths=torch.tensor(lengths))
    for name, a, e in zip(("output", "h_n", "c_n"), (out, h, c), expected):
        assert_close(name, a, e, F32)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_contended_small_layer_runs_serially_and_matches_nn_lstm(monkeypatch, threads,
                                                                 bidirectional, mode):
    threads(4)  # parallel: 4 groups (2 a direction when bidirectional); serial: 1 a direction
    ref, fast, x, lengths = small_case(bidirectional)
    D = 2 if bidirectional else 1
    for setting, groups in (("on", D), ("off", 4)):
        monkeypatch.setenv("FASTLSTM_CPU_CONTENTION", setting)
        if mode == "training":
            check_parity(ref, fast, x, lengths)
        else:
            inference_matches(ref, fast, x, lengths)
        got = torch.ops.fastlstm._cpu_last_row_groups()
        assert got == groups, f"FASTLSTM_CPU_CONTENTION={setting}: {got} groups, not {groups}"


def test_contended_large_layer_stays_parallel(monkeypatch, threads):
    # 32 x 100 tokens x 4 x 256 x 512: 1.7 G multiply-adds, where two threads stay faster.
    threads(2)
    monkeypatch.setenv("FASTLSTM_CPU_CONTENTION", "on")
    ref, fast = make_pair(256, 256, dtype=F32, seed=1)
    gen = torch.Generator().manual_seed(1)
    lengths = [100] * 32
    inference_matches(ref, fast, torch.randn(100, 32, 256, generator=gen), lengths)
    assert torch.ops.fastlstm._cpu_last_row_groups() == 2


def test_window_opens_after_a_contended_call_and_closes_after_a_clean_one(monkeypatch, threads):
    threads(2)
    monkeypatch.setenv("FASTLSTM_CPU_CONTENTION", "auto")
    ref, fast, x, lengths = small_case(False, seed=2)
    inference_matches(ref, fast, x, lengths)  # warm: weights, kernels
    opened = []

    def open_window():
        torch.ops.fastlstm._cpu_report_contention(True)
        opened.append(torch.ops.fastlstm._cpu_contention_window_open())

    inference_matches(ref, fast, x, lengths, before_fast=open_window)  # within its 50 ms
    assert opened == [True]
    assert torch.ops.fastlstm._cpu_last_row_groups() == 1
    torch.ops.fastlstm._cpu_report_contention(False)
    assert not torch.ops.fastlstm._cpu_contention_window_open()
    # Outside a window the call runs parallel (and judges itself again).
    inference_matches(ref, fast, x, lengths)
    assert torch.ops.fastlstm._cpu_last_row_groups() == 2
    torch.ops.fastlstm._cpu_report_contention(False)


def test_two_calls_held_before_the_join_in_a_row_open_a_window(monkeypatch, threads):
    # Each task sleeps 20 ms after its own measured end (_cpu_delay_task_ends), as a thread
    # descheduled before the parallel region's join would: only the region's end shows it. One
    # such call alone opens no window (an idle machine's hiccup); two in a row do. The state is
    # read, not the 50 ms window, which the rest of a call can outlast under pytest-xdist.
    threads(2)
    monkeypatch.setenv("FASTLSTM_CPU_CONTENTION", "auto")
    ref, fast, x, lengths = small_case(False, seed=3)
    inference_matches(ref, fast, x, lengths)  # warm: weights, kernels
    torch.ops.fastlstm._cpu_report_contention(False)
    try:
        torch.ops.fastlstm._cpu_delay_task_ends(20_000)
        states = []
        for _ in range(2):
            inference_matches(ref, fast, x, lengths)
            assert torch.ops.fastlstm._cpu_last_row_groups() == 2  # it ran parallel
            states.append(torch.ops.fastlstm._cpu_contention_state())
        assert states == [1, 2]
        torch.ops.fastlstm._cpu_delay_task_ends(0)
        torch.ops.fastlstm._cpu_report_contention(False)
        assert torch.ops.fastlstm._cpu_contention_state() == 0
    finally:
        torch.ops.fastlstm._cpu_delay_task_ends(0)
        torch.ops.fastlstm._cpu_report_contention(False)
