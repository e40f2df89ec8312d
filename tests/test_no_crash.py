"""Inputs that could kill the interpreter (segfault, SIGFPE, abort, OOM) or hang, run in a child.

Each child runs a list of cases and prints one line per case, "name: OK <shapes>" or
"name: <ExceptionType>: <message>"; the parent checks the child exited normally (return code 0,
so a signal or abort fails the test) and that every case gave the expected outcome.
"""

import re
import subprocess
import sys
import textwrap

import pytest

CHILD_TIMEOUT_S = 120

PRELUDE = textwrap.dedent("""
    import sys
    import torch
    import fastlstm

    FWD = torch.ops.fastlstm.lstm_layer_forward
    BWD = torch.ops.fastlstm.lstm_layer_backward
    T, B, I, H = 5, 2, 3, 4
    torch.manual_seed(0)
    W = [torch.randn(4 * H, I), torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H)]

    def shapes(r):
        if isinstance(r, torch.Tensor):
            return [tuple(r.shape)]
        out = []
        for a in r:
            out += shapes(a) if isinstance(a, (tuple, list)) else [tuple(a.shape)]
        return out

    def run(name, fn):
        try:
            r = fn()
            print(f"{name}: OK {shapes(r)}", flush=True)
        except Exception as e:  # anything but a crash is reported
            msg = str(e).splitlines()[0] if str(e) else ""
            print(f"{name}: {type(e).__name__}: {msg}", flush=True)

    def raw_fwd(x, lengths, Hh=H, weights=W, B_=None):
        B_ = x.shape[1] if B_ is None else B_
        return FWD(x, lengths, torch.zeros(1, B_, Hh), torch.zeros(1, B_, Hh), weights,
                   True, False, False)

    def raw_bwd(x, lengths, fwd_lengths=None, Hh=H, weights=W):
        B_ = x.shape[1]
        h0 = torch.zeros(1, B_, Hh)
        good = lengths if fwd_lengths is None else fwd_lengths
        out, h_n, c_n, reserve = FWD(x, good, h0, h0, weights, True, False, False)
        return BWD(torch.ones_like(out), torch.ones_like(h_n), torch.ones_like(c_n), x, lengths,
                   h0, h0, weights, reserve, True, False, False, True)

    def module_fwd_bwd(x, lengths=None, **kw):
        m = fastlstm.LSTM(I, H, **kw)
        out, (h, c) = m(x, lengths=lengths)
        (out.sum() + h.sum() + c.sum()).backward()
        return out, h, c
""")


def run_child(body):
    code = PRELUDE + textwrap.dedent(body) + "\nprint('CHILD DONE', flush=True)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    results = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^([\w\[\]()=.,*+-]+): (.*)$", line)
        if m:
            results[m.group(1)] = m.group(2)
    return proc, results


def assert_child_ok(proc, results, expected):
    """expected: name -> regex that the case's printed outcome must match."""
    report = (f"child return code {proc.returncode}\nstdout:\n{proc.stdout}\n"
              f"stderr (tail):\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, "child did not exit normally: " + report
    assert "CHILD DONE" in proc.stdout, report
    for name, pattern in expected.items():
        assert name in results, f"case {name} printed nothing\n" + report
        assert re.match(pattern, results[name]), \
            f"case {name}: got {results[name]!r}, expected {pattern!r}\n" + report


BAD_LENGTH = r"ValueError: .*lengths.*\[0, T=5\].*got lengths\[\d\] = {}$"

ABSURD_LENGTHS = """
x = torch.randn(T, B, I)
m = fastlstm.LSTM(I, H)
for tag, v in [("1e9", 10**9), ("int(1e9)", int(1e9)), ("-2**40", -2**40), ("2**70", 2**70),
               ("2**63", 2**63), ("-2**63-1", -2**63 - 1), ("2**63-1", 2**63 - 1),
               ("-2**63", -2**63)]:
    run(f"module-list-{tag}", lambda: m(x, lengths=[3, v]))
run("module-list-1e9-float", lambda: m(x, lengths=[3, 1e9]))
for tag, v in [("1e9", 10**9), ("-2**40", -2**40), ("2**63-1", 2**63 - 1), ("-2**63", -2**63)]:
    t = torch.tensor([3, v])
    run(f"module-tensor-{tag}", lambda: m(x, lengths=t))
    run(f"raw-fwd-{tag}", lambda: raw_fwd(x, t))
    run(f"raw-bwd-{tag}", lambda: raw_bwd(x, t, fwd_lengths=torch.tensor([3, 5])))
i32 = torch.tensor([3, 2**31 - 1], dtype=torch.int32)
run("module-tensor-int32-max", lambda: m(x, lengths=i32))
run("tensor-2**70", lambda: m(x, lengths=torch.tensor([3, 2**70])))
run("unbatched-1e9", lambda: m(torch.randn(T, I), lengths=[10**9]))
"""


def test_absurd_lengths_do_not_kill_the_interpreter():
    proc, results = run_child(ABSURD_LENGTHS)
    bad = lambda v: BAD_LENGTH.format(re.escape(str(v)))  # noqa: E731
    expected = {
        "module-list-1e9": bad(10**9),
        "module-list-int(1e9)": bad(10**9),
        "module-list--2**40": bad(-2**40),
        "module-list-2**70": bad(2**70),
        "module-list-2**63": bad(2**63),
        "module-list--2**63-1": bad(-2**63 - 1),
        "module-list-2**63-1": bad(2**63 - 1),
        "module-list--2**63": bad(-2**63),
        "module-list-1e9-float": r"TypeError: .*lengths.*integers.*1000000000\.0 of type float$",
        "module-tensor-int32-max": bad(2**31 - 1),
        # torch itself refuses to build the tensor (ValueError in torch 2.14); not a crash.
        "tensor-2**70": r"(ValueError|RuntimeError): .*[Oo]verflow",
        "unbatched-1e9": r"ValueError: .*lengths.*\[0, T=5\].*= 1000000000$",
    }
    for tag, v in [("1e9", 10**9), ("-2**40", -2**40), ("2**63-1", 2**63 - 1), ("-2**63", -2**63)]:
        expected[f"module-tensor-{tag}"] = bad(v)
        expected[f"raw-fwd-{tag}"] = r"ValueError: fastlstm: " + bad(v)[len("ValueError: "):]
        expected[f"raw-bwd-{tag}"] = r"ValueError: fastlstm: " + bad(v)[len("ValueError: "):]
    assert_child_ok(proc, results, expected)


EMPTY_BATCHES = """
L0 = torch.zeros(0, dtype=torch.int64)
for tag, kw in [("plain", {}), ("deep", dict(num_layers=2, bidirectional=True, proj_size=2))]:
    run(f"B=0-{tag}", lambda: module_fwd_bwd(torch.randn(T, 0, I, requires_grad=True), **kw))
    run(f"B=0-list-{tag}", lambda: module_fwd_bwd(torch.randn(T, 0, I), [], **kw))
    run(f"B=0-tensor-{tag}", lambda: module_fwd_bwd(torch.randn(T, 0, I), L0, **kw))
    run(f"T=0-{tag}", lambda: module_fwd_bwd(torch.randn(0, B, I, requires_grad=True), **kw))
    run(f"T=0-lengths-{tag}", lambda: module_fwd_bwd(torch.randn(0, B, I), [0, 0], **kw))
    run(f"T=0,B=0-{tag}", lambda: module_fwd_bwd(torch.randn(0, 0, I), **kw))
    run(f"all-zero-{tag}", lambda: module_fwd_bwd(torch.randn(T, B, I), [0, 0], **kw))
    run(f"bf-B=0-{tag}", lambda: module_fwd_bwd(torch.randn(0, T, I), batch_first=True, **kw))
run("T=0-unbatched", lambda: module_fwd_bwd(torch.randn(0, I)))
run("raw-fwd-B=0", lambda: raw_fwd(torch.randn(T, 0, I), L0))
run("raw-fwd-T=0", lambda: raw_fwd(torch.randn(0, B, I), torch.zeros(B, dtype=torch.int64)))
run("raw-fwd-T=0,B=0", lambda: raw_fwd(torch.randn(0, 0, I), L0))
run("raw-bwd-B=0", lambda: raw_bwd(torch.randn(T, 0, I), L0))
run("raw-bwd-T=0", lambda: raw_bwd(torch.randn(0, B, I), torch.zeros(B, dtype=torch.int64)))
run("raw-bwd-all-zero", lambda: raw_bwd(torch.randn(T, B, I), torch.zeros(B, dtype=torch.int64)))
run("raw-fwd-B=0-bad-count", lambda: raw_fwd(torch.randn(T, 0, I), torch.tensor([1]), B_=0))
"""


def test_empty_batches_do_not_kill_the_interpreter():
    proc, results = run_child(EMPTY_BATCHES)
    W_SHAPES = r"\(16, 3\), \(16, 4\), \(16,\), \(16,\)"
    expected = {}
    for tag, out, hn, cn in [("plain", 4, "(1, {b}, 4)", "(1, {b}, 4)"),
                             ("deep", 4, "(4, {b}, 2)", "(4, {b}, 4)")]:
        for name, t, b in [("B=0", 5, 0), ("B=0-list", 5, 0), ("B=0-tensor", 5, 0),
                           ("T=0", 0, 2), ("T=0-lengths", 0, 2), ("T=0,B=0", 0, 0),
                           ("all-zero", 5, 2)]:
            expected[f"{name}-{tag}"] = re.escape(
                f"OK [({t}, {b}, {out}), {hn.format(b=b)}, {cn.format(b=b)}]")
        expected[f"bf-B=0-{tag}"] = re.escape(
            f"OK [(0, 5, {out}), {hn.format(b=0)}, {cn.format(b=0)}]")
    expected.update({
        "T=0-unbatched": re.escape("OK [(0, 4), (1, 4), (1, 4)]"),
        "raw-fwd-B=0": re.escape("OK [(5, 0, 4), (1, 0, 4), (1, 0, 4), (0,)]"),
        "raw-fwd-T=0": re.escape("OK [(0, 2, 4), (1, 2, 4), (1, 2, 4), (0,)]"),
        "raw-fwd-T=0,B=0": re.escape("OK [(0, 0, 4), (1, 0, 4), (1, 0, 4), (0,)]"),
        "raw-bwd-B=0": re.escape("OK [(5, 0, 3), (1, 0, 4), (1, 0, 4), ") + W_SHAPES + r"\]",
        "raw-bwd-T=0": re.escape("OK [(0, 2, 3), (1, 2, 4), (1, 2, 4), ") + W_SHAPES + r"\]",
        "raw-bwd-all-zero": re.escape("OK [(5, 2, 3), (1, 2, 4), (1, 2, 4), ") + W_SHAPES + r"\]",
        "raw-fwd-B=0-bad-count": r"ValueError: fastlstm: lengths.*\(0\), got 1$",
    })
    assert_child_ok(proc, results, expected)


# A hidden size of 0 (w_hh of shape [0, Hout]) cannot come from fastlstm.LSTM (hidden_size > 0),
# but the raw ops accept it and then divide by 4*H in the cell kernels' grain size.
ZERO_HIDDEN = {
    "forward": """
W0 = [torch.randn(0, I), torch.randn(0, 0), torch.randn(0), torch.randn(0)]
run("H=0", lambda: raw_fwd(torch.randn(T, B, I), torch.tensor([5, 3]), Hh=0, weights=W0))
""",
    "backward": """
W0 = [torch.randn(0, I), torch.randn(0, 0), torch.randn(0), torch.randn(0)]
x = torch.randn(T, B, I)
h0 = torch.zeros(1, B, 0)
run("H=0", lambda: BWD(torch.zeros(T, B, 0), None, None, x, torch.tensor([5, 3]), h0, h0, W0,
                       torch.empty(0), True, False, False, True))
""",
}


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_zero_hidden_size_raw_op_does_not_kill_the_interpreter(op):
    proc, results = run_child(ZERO_HIDDEN[op])
    # Wanted: a clean ValueError naming w_hh (H = w_hh.size(0) / 4 must be > 0).
    assert_child_ok(proc, results, {"H=0": r"ValueError: .*w_hh.*\[0, 0\]"})
