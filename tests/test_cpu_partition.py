"""The CPU spreads each layer over torch's threads once per call (csrc/cpu/partition.h).

"rows": the layer's sorted rows are cut into groups, directions first, one group per thread,
each run through every step with no synchronisation with the others. "steps": one group per
direction, its thread leading a step team of the threads left over, which split each step's
work and meet at a barrier that blocks instead of spinning (csrc/cpu/step_team.h). The default
is rows, and steps for float32 where a direction's W_hh exceeds one core's L2 and each thread
would own at most 2 active rows. FASTLSTM_CPU_PARTITION forces either (read at every call).

nn.LSTM over packed input is the judge, for each partition, thread count (one thread, more
threads than sequences), direction count, projection, and lengths with zeros and uneven
groups; the training forward and backward, and the inference forward, whose input projection
runs per group in chunks. torch.ops.fastlstm._cpu_last_row_groups() shows how many groups the
last layer call ran, so a partition that silently fell back to one group fails here.
"""

import itertools

import pytest
import torch

import fastlstm
from helpers import assert_close, check_parity, make_pair, random_lengths, reference_forward

STEP_ROWS = 1.5  # kStepHalfRows / 2 in csrc/cpu/partition.h: a step's cost beside its rows


def planned(lengths, directions, threads, partition, tile_rows=0):
    """The groups for sorted lengths: [(dir, r0, r1), ...]."""
    t = torch.ops.fastlstm._cpu_row_groups(torch.tensor(lengths, dtype=torch.long), directions,
                                           threads, partition, tile_rows)
    return [tuple(row) for row in t.tolist()]


def step_cost(n, tile_rows):
    """A step of n active rows, in rows: STEP_ROWS beside them, and with tiles of rows, a
    partial last tile's extra (1.5 rows under half a tile, else 0.5; StepCost in partition.h)."""
    if n == 0:
        return 0
    m = n % tile_rows if tile_rows else 0
    return STEP_ROWS + n + (0 if m == 0 else 1.5 if 2 * m < tile_rows else 0.5)


def cost(lengths, a, b, tile_rows=0):
    """Sorted rows [a, b) run step by step: each step costs step_cost of its active rows."""
    steps = lengths[a] if a < b else 0
    return sum(step_cost(sum(1 for n in lengths[a:b] if n > t), tile_rows) for t in range(steps))


def best_max_cost(lengths, groups, tile_rows=0):
    """The smallest largest-group cost over every cut of lengths into <= groups contiguous
    groups of at least one row (brute force)."""
    B = len(lengths)
    best = None
    for k in range(1, min(groups, B) + 1):
        for cuts in itertools.combinations(range(1, B), k - 1):
            bounds = (0,) + cuts + (B,)
            worst = max(cost(lengths, a, b, tile_rows) for a, b in zip(bounds, bounds[1:]))
            best = worst if best is None else min(best, worst)
    return best


@pytest.mark.parametrize("tile_rows", [0, 3, 4, 8])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("n_threads", [1, 2, 3, 4, 7])
def test_rows_groups_cover_every_active_row_once_and_balance(n_threads, directions, seed,
                                                              tile_rows):
    gen = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 13, (1,), generator=gen))
    lengths = sorted(torch.randint(0, 30, (B,), generator=gen).tolist(), reverse=True)
    lengths[0] = max(lengths[0], 1)
    active = sum(1 for n in lengths if n > 0)
    groups = planned(lengths, directions, n_threads, "rows", tile_rows)
    per_dir = min(max(n_threads // directions, 1), active)
    assert len(groups) == directions * per_dir
    for d in range(directions):
        mine = [(a, b) for dd, a, b in groups if dd == d]
        assert mine[0][0] == 0 and mine[-1][1] == active
        assert all(a < b for a, b in mine)  # every group has a row
        assert all(b == a2 for (_, b), (a2, _) in zip(mine, mine[1:]))  # contiguous
        worst = max(cost(lengths, a, b, tile_rows) for a, b in mine)
        assert worst == best_max_cost(lengths[:active], per_dir, tile_rows), (lengths, mine)


def test_groups_of_nearly_full_rows_end_on_whole_tiles():
    """32 rows of lengths 90-100 on 2 threads: with tiles of 8 rows the cut is 16 + 16 (two
    full tiles each), where rows alike cut 15 + 17 (17 = 8 + 8 + 1, 1.05x slower on the Xeon)."""
    gen = torch.Generator().manual_seed(0)
    lengths = sorted(torch.randint(90, 101, (32,), generator=gen).tolist(), reverse=True)
    assert planned(lengths, 1, 2, "rows", 0) == [(0, 0, 15), (0, 15, 32)]
    assert planned(lengths, 1, 2, "rows", 8) == [(0, 0, 16), (0, 16, 32)]
    assert torch.ops.fastlstm._cpu_step_gemm_tile_rows() in (4, 6, 12)


@pytest.mark.parametrize("directions", [1, 2])
def test_steps_is_one_group_per_direction(directions):
    lengths = [9, 7, 7, 3, 0]
    assert planned(lengths, directions, 4, "steps") == [(d, 0, 4) for d in range(directions)]


def test_row_groups_checks_its_arguments():
    lengths = torch.tensor([3, 2], dtype=torch.long)
    with pytest.raises(ValueError, match="partition must be 'rows' or 'steps', got 'cols'"):
        torch.ops.fastlstm._cpu_row_groups(lengths, 1, 2, "cols")
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        torch.ops.fastlstm._cpu_row_groups(lengths, 1, 0, "rows")
    with pytest.raises(ValueError, match="descending"):
        torch.ops.fastlstm._cpu_row_groups(torch.tensor([2, 3]), 1, 2, "rows")


def expected_group_count(lengths, directions, n_threads, partition):
    active = sum(1 for n in lengths if n > 0)
    per_dir = min(max(n_threads // directions, 1), max(active, 1))
    return directions * (per_dir if partition == "rows" else 1)


CASES = [
    # (num_layers, bidirectional, proj_size, kind, B)
    (1, False, 0, "random", 7),
    (1, False, 0, "has_zero", 6),
    (2, False, 0, "has_one", 5),
    (1, True, 0, "random", 7),
    (1, False, 3, "has_zero", 7),
    (1, True, 3, "random", 3),
    (1, False, 0, "all_zero", 4),
    (1, False, 0, "full", 2),
]


@pytest.mark.parametrize("n_threads", [1, 3, 5])
@pytest.mark.parametrize("partition", ["rows", "steps"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_training_parity_per_partition(case, partition, n_threads, threads, monkeypatch):
    num_layers, bidirectional, proj_size, kind, B = case
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", partition)
    threads(n_threads)
    ref, fast = make_pair(4, 6, num_layers=num_layers, bidirectional=bidirectional,
                          proj_size=proj_size, seed=B)
    gen = torch.Generator().manual_seed(B + n_threads)
    lengths = random_lengths(kind, B, 11, gen)
    x = torch.randn(11, B, 4, dtype=torch.float64, generator=gen)
    D = 2 if bidirectional else 1
    hx = (torch.randn(num_layers * D, B, proj_size or 6, dtype=torch.float64, generator=gen),
          torch.randn(num_layers * D, B, 6, dtype=torch.float64, generator=gen))
    check_parity(ref, fast, x, lengths, hx=hx)
    # The last layer call was the first layer's backward, on the same lengths.
    assert torch.ops.fastlstm._cpu_last_row_groups() == expected_group_count(
        lengths, D, n_threads, partition)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n_threads", [4, 5])
def test_backward_weight_gradients_repeat_bit_for_bit(n_threads, dtype, threads, monkeypatch):
    """In the backward's time loop each group gathers its tokens' previous h (for dW_hh) into
    an uninitialised buffer and sums its dgates (for the bias gradient); the groups' sums are
    added in the order of their rows, not in the order their threads finish
    (csrc/group_sums.h). Identical calls give identical gradients. (A gathered row left
    unwritten fails this: the buffer's garbage differs from call to call. The finishing order
    of this call's groups barely varies, so the order of the sums is checked only as far as it
    does.)"""
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    threads(n_threads)
    torch.manual_seed(0)
    lstm = fastlstm.LSTM(16, 32, bidirectional=True, dtype=dtype)
    x = torch.randn(60, 9, 16, dtype=dtype)
    lengths = torch.tensor([60, 3, 41, 0, 17, 60, 1, 29, 8])

    def grads():
        lstm.zero_grad(set_to_none=True)
        out, _ = lstm(x, lengths=lengths)
        out.float().pow(2).sum().backward()
        return [p.grad.clone() for p in lstm.parameters()]

    first = grads()
    assert torch.ops.fastlstm._cpu_last_row_groups() > 2  # several groups per direction
    for _ in range(6):
        for (name, _), a, b in zip(lstm.named_parameters(), first, grads()):
            assert torch.equal(a, b), f"{name}.grad differs between identical calls"


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
@pytest.mark.parametrize("partition", ["rows", "steps"])
@pytest.mark.parametrize("bidirectional,proj_size", [(False, 0), (True, 0), (False, 5)])
def test_inference_parity_per_partition(bidirectional, proj_size, partition, n_threads,
                                        threads, monkeypatch):
    # H = 64 in float64: a chunk of the inference's input projection holds 128 rows, so each
    # group of this batch (about 500 tokens) projects its rows in several chunks.
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", partition)
    threads(n_threads)
    T, B = 90, 9
    ref, fast = make_pair(8, 64, bidirectional=bidirectional, proj_size=proj_size, seed=1)
    gen = torch.Generator().manual_seed(n_threads)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[2], lengths[5], lengths[7] = T, 0, 1
    x = torch.randn(T, B, 8, dtype=torch.float64, generator=gen)
    D = 2 if bidirectional else 1
    hout = proj_size or 64
    h0 = torch.randn(D, B, hout, dtype=torch.float64, generator=gen)
    c0 = torch.randn(D, B, 64, dtype=torch.float64, generator=gen)
    with torch.inference_mode():
        out, (h_n, c_n) = fast(x, (h0, c0), lengths=torch.tensor(lengths))
        groups = torch.ops.fastlstm._cpu_last_row_groups()
        exp_out, exp_h, exp_c = reference_forward(ref, x, lengths, (h0, c0))
    assert_close("output", out, exp_out)
    assert_close("h_n", h_n, exp_h)
    assert_close("c_n", c_n, exp_c)
    assert groups == expected_group_count(lengths, D, n_threads, partition)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_types_per_group_within_twice_nn_lstm(dtype, grad, threads, monkeypatch):
    # The half types' per-step buffers (float cell state, rounded h) are per group as well:
    # fastlstm's error against float64 stays within twice nn.LSTM's own in that dtype.
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    threads(3)
    T, B, I, H = 30, 10, 16, 32
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[0], lengths[4] = T, 0
    ref64, _ = make_pair(I, H, torch.float64)
    ref, fast = make_pair(I, H, dtype)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    x64 = torch.randn(T, B, I, dtype=torch.float64, generator=gen)

    def run(model, x, is_fast):
        x = x.detach().clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            if is_fast:
                out = model(x, lengths=torch.tensor(lengths))[0]
            else:
                out = reference_forward(model, x, lengths)[0]
        res = [out]
        if grad:
            out.backward(torch.ones_like(out))
            res.append(x.grad)
        return res

    exact = run(ref64, x64, False)
    theirs = run(ref, x64.to(dtype), False)
    ours = run(fast, x64.to(dtype), True)
    assert torch.ops.fastlstm._cpu_last_row_groups() == 3
    for e, t, o in zip(exact, theirs, ours):
        err_t = (t.double() - e).abs().max().item()
        err_o = (o.double() - e).abs().max().item()
        assert err_o <= 2 * err_t + 1e-6, (err_o, err_t)


def test_default_is_rows(threads, monkeypatch):
    monkeypatch.delenv("FASTLSTM_CPU_PARTITION", raising=False)
    threads(2)
    fast = fastlstm.LSTM(64, 64)  # 600 tokens x 4H x (I + H): 19.7 M multiply-adds
    with torch.inference_mode():
        fast(torch.randn(100, 6, 64), lengths=torch.tensor([100] * 6))
    assert torch.ops.fastlstm._cpu_last_row_groups() == 2


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_small_layer_runs_on_the_calling_thread(bidirectional, threads, monkeypatch):
    """Under 4 M multiply-adds a layer runs every group on the calling thread, one per
    direction (no parallel region, whose end waits for a descheduled thread beside busy
    processes); its results are nn.LSTM's. A forced partition keeps the threads."""
    monkeypatch.delenv("FASTLSTM_CPU_PARTITION", raising=False)
    threads(2)
    ref, fast = make_pair(4, 8, bidirectional=bidirectional, seed=3)
    D = 2 if bidirectional else 1
    lengths = [5, 4, 3, 3, 2, 1]
    x = torch.randn(5, 6, 4, dtype=torch.float64)
    check_parity(ref, fast, x, lengths)
    assert torch.ops.fastlstm._cpu_last_row_groups() == D
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    with torch.inference_mode():
        fast(x, lengths=torch.tensor(lengths))
    assert torch.ops.fastlstm._cpu_last_row_groups() == 2


def choice(lengths, directions, H, threads, elem_bytes=4, l2=2 << 20, hout=None):
    return torch.ops.fastlstm._cpu_partition_choice(torch.tensor(lengths), directions, H,
                                                    hout or H, threads, elem_bytes, l2)


def test_default_partition_is_steps_only_for_large_float32_weights_and_few_rows(monkeypatch):
    monkeypatch.delenv("FASTLSTM_CPU_PARTITION", raising=False)
    monkeypatch.delenv("FASTLSTM_CPU_STEP_GEMM", raising=False)
    # H = 512 float32: W_hh 4 MB > a 2 MB L2; 2 threads, up to 2 active rows each.
    assert choice([90, 80], 1, 512, 2) == "steps"
    assert choice([90, 80, 70, 1, 0, 0], 1, 512, 2) == "steps"   # 4 active rows
    assert choice([90, 80, 70, 60, 50], 1, 512, 2) == "rows"     # 5
    assert choice([90, 80], 1, 512, 1) == "rows"                 # one thread
    assert choice([90, 80], 2, 512, 2) == "rows"                 # one thread per direction
    assert choice([90, 80], 2, 512, 4) == "steps"
    assert choice([90, 80], 1, 256, 2) == "rows"                 # W_hh 1 MB fits the L2
    assert choice([90, 80], 1, 512, 2, l2=8 << 20) == "rows"     # a larger L2
    assert choice([90, 80], 1, 512, 2, elem_bytes=8) == "rows"   # float64
    assert choice([90, 80], 1, 1024, 2, elem_bytes=2) == "rows"  # bfloat16, float16
    assert choice([90, 80], 1, 512, 2, hout=128) == "rows"       # projection: W_hh 1 MB
    monkeypatch.setenv("FASTLSTM_CPU_STEP_GEMM", "blas")         # no own step GEMM to split
    assert choice([90, 80], 1, 512, 2) == "rows"
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    monkeypatch.delenv("FASTLSTM_CPU_STEP_GEMM")
    assert choice([90, 80], 1, 512, 2) == "rows"


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_default_steps_partition_splits_the_step_gemm_on_a_team(mode, threads, monkeypatch):
    """Two rows and a W_hh beyond this machine's L2, on 2 threads, by default: one group (the
    steps partition), whose step team splits the step GEMM; nn.LSTM is the judge."""
    monkeypatch.delenv("FASTLSTM_CPU_PARTITION", raising=False)
    monkeypatch.delenv("FASTLSTM_CPU_STEP_GEMM", raising=False)
    threads(2)
    l2 = torch.ops.fastlstm._cpu_l2_bytes()
    H = 64
    while 16 * H * H <= l2:  # W_hh: 4H x H floats
        H += 64
    ref, fast = make_pair(5, H, dtype=torch.float32, seed=2)
    gen = torch.Generator().manual_seed(2)
    lengths = [40, 30]  # long enough for a helper that starts late to join the loop
    x = torch.randn(40, 2, 5, generator=gen)
    before = torch.ops.fastlstm._cpu_split_step_gemm_count()
    helped_before = torch.ops.fastlstm._cpu_step_team_helped_count()
    # A helper that the OS starts late joins a later step or call (step_team.h): up to 20
    # calls, each judged.
    for _ in range(20):
        if mode == "training":
            check_parity(ref, fast, x, lengths)
        else:
            with torch.inference_mode():
                out, (h_n, c_n) = fast(x, lengths=torch.tensor(lengths))
            for name, got, want in zip(("output", "h_n", "c_n"), (out, h_n, c_n),
                                       reference_forward(ref, x, lengths, None)):
                assert_close(name, got, want, torch.float32)
        assert torch.ops.fastlstm._cpu_last_row_groups() == 1
        if torch.ops.fastlstm._cpu_split_step_gemm_count() > before:
            break
    # Split wherever a helper joined (one the OS never started in time leaves the leader alone;
    # test_step_team_splits_every_job_over_every_member tests the team itself).
    helped = torch.ops.fastlstm._cpu_step_team_helped_count() > helped_before
    assert torch.ops.fastlstm._cpu_split_step_gemm_count() > before or not helped


@pytest.mark.parametrize("I,H", [(64, 64), (128, 16)], ids=["by-columns", "by-rows"])
def test_steps_partition_splits_the_inference_input_projection_on_its_team(I, H, threads,
                                                                          monkeypatch):
    """Under the steps partition, inference projects each chunk of steps' inputs (128 rows at
    least) inside the time loop: the step team splits that GEMM by C's longer side (4H columns
    at I = H = 64, 128 rows at H = 16), instead of the leader running it alone. nn.LSTM is the
    judge, in float64 and float32."""
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "steps")
    threads(2)
    T, B = 60, 7
    gen = torch.Generator().manual_seed(I + H)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[1], lengths[4] = T, 0
    before = torch.ops.fastlstm._cpu_team_gemm_count()
    alone_before = torch.ops.fastlstm._cpu_team_gemm_alone_count()
    for call in range(20):  # a helper that the OS starts late joins a later call
        dtype = torch.float64 if call % 2 == 0 else torch.float32
        ref, fast = make_pair(I, H, dtype=dtype, seed=call)
        x = torch.randn(T, B, I, dtype=dtype, generator=gen)
        with torch.inference_mode():
            out, (h_n, c_n) = fast(x, lengths=torch.tensor(lengths))
        for name, got, want in zip(("output", "h_n", "c_n"), (out, h_n, c_n),
                                   reference_forward(ref, x, lengths, None)):
            assert_close(name, got, want, dtype)
        if torch.ops.fastlstm._cpu_team_gemm_count() > before and call >= 1:
            break
    # Split wherever a helper had joined by then; a team whose helper the OS started more than
    # StepTeam::kJoinWait late ran it on the leader (test_step_team_splits_every_job_over_
    # every_member tests the team itself). Either way the projection went through the team.
    split = torch.ops.fastlstm._cpu_team_gemm_count() - before
    alone = torch.ops.fastlstm._cpu_team_gemm_alone_count() - alone_before
    assert split > 0 or alone > 0, "the input projection never ran on the step team"
    print(f"{split} projections split, {alone} on the leader alone")


@pytest.mark.parametrize("helpers", [1, 2])
@pytest.mark.parametrize("M,N,K", [(128, 256, 64), (515, 33, 70)], ids=["by-columns", "by-rows"])
def test_team_gemm_splits_over_a_whole_team(helpers, M, N, K, threads):
    """CpuBackend::team_gemm on a team whose helpers have all joined splits C by its longer
    side (N >= M: columns, else rows, in shares of 16) and matches the same GEMM unsplit."""
    threads(helpers + 1)
    diff = torch.ops.fastlstm._cpu_team_gemm_selftest(helpers, M, N, K)
    assert diff != -1, "team_gemm ran on the leader alone although every helper had joined"
    assert 0 <= diff <= 1e-4, diff


@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_step_team_splits_every_job_over_every_member(n_threads, threads):
    """A step team on torch's parallel loop, as the steps partition runs it (the leader and
    n_threads - 1 helpers): once the helpers have joined, each of 300 jobs runs every part
    exactly once, with the team's size as its part count."""
    threads(n_threads)
    assert torch.ops.fastlstm._cpu_step_team_selftest(n_threads - 1, 300) == 300
