"""The GPU session's time plan: what each stage of scripts/gpu_session.sh is expected to take on
the GPU machine, from its counts (tests collected per group, sanitizer cases, benchmark jobs)
times per-item estimates, and whether the sum fits the device tool's command (PLAN_LIMIT_S).

    python scripts/time_plan.py [--groups-out FILE] [--build wheel|source] [--bench-cap S] ...

Prints the plan and exits 1 when the total exceeds the limit (2 when something could not be
counted). The rehearsal (and so CI) runs it before any GPU time is spent; the GPU session runs
it too, after the build, for the record. --groups-out writes the test stage's groups, one line
each, tab-separated: name, cap (s), estimate (s), test count, per-test cap (s), files;
gpu_session.sh runs each in its own pytest process (scripts/gpu_tests_plugin.py --gpu-group)
under that cap.

Every per-item number below is an ESTIMATE: no GPU has run this session yet. Replace them with
the times the first GPU session logs (the JUnit XML's per-test times, pytest --durations, the
sanitizer and benchmark stages' seconds in summary.txt).
"""

import argparse
import contextlib
import importlib.util
import io
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ---- the limit
# The device tool gives a command at most 600 s; gpu_session.sh's budget (550 s) plus the kill
# grace of `timeout -k` must fit in it. The plan must leave that margin.
PLAN_LIMIT_S = 540

# ---- estimates, seconds on an H100 (none measured yet)
# The machine probe (one python + torch import) and this plan's own collection (one more).
SESSION_OVERHEAD_S = 10
# build: pip --no-deps --no-index of the prebuilt abi3 wheel, its .so copied into the checkout,
# one import: pip and two python starts.
WHEEL_INSTALL_S = 20
# build without a wheel: editable build for sm_90 only, MAX_JOBS=16. On a 2-core CI machine the
# whole build takes ~100 s of wall time (~200 core-seconds) and its longest translation unit
# (csrc/emulated/cuda_backend.cpp) ~25 s; with 16 jobs the longest unit, the link and
# pip's own work (~10 s) bound it.
SOURCE_BUILD_S = 45
# One pytest process: python, torch and fastlstm imports, collection, the CUDA context, cuBLAS
# and cuDNN handles on first use.
PYTEST_START_S = 8
# One GPU test, by default: small shapes, fastlstm and nn.LSTM (cuDNN) forward and backward.
TEST_S = 0.5
# Known slower tests (first substring of the test id that matches wins).
SLOW_TESTS = (
    ("test_compile_fullgraph_matches_nn_lstm[inductor]", 30),  # inductor codegen and compile
    ("test_compile_fullgraph_matches_nn_lstm[aot_eager]", 8),  # dynamo tracing
    ("test_100k_steps_against_cpu_float64", 8),  # 100k steps x 2 passes on the per-step path
    ("test_more_than_2_pow_31_elements", 10),  # 4.6 GB input, CPU float64 reference of a slice
    ("gradcheck", 4),  # float64 gradcheck: two forwards per input element
    ("test_graph_capture_and_replay", 3),  # graph capture of forward and backward
    ("test_opcheck", 3),  # torch.library.opcheck's several checks
)
# A group's cap: this factor times its estimate, at least GROUP_CAP_MIN_S.
GROUP_CAP_FACTOR = 2.0
GROUP_CAP_MIN_S = 30
# The per-test guard (gpu_tests_plugin.py --gpu-test-cap): longer than the slowest estimate, and
# at least TEST_CAP_MARGIN_S under its group's cap, so that the guard's alarm and watchdog (10 s
# later) name a hung test before the group's cap stops the whole group.
TEST_CAP_S = 90
TEST_CAP_MARGIN_S = 15
# One compute-sanitizer process: the tool's start, python and torch under it, CUDA context.
SANITIZER_START_S = 8
# One small case of scripts/sanitize_shapes.py (forward and backward) under one tool, with only
# fastlstm's kernels instrumented.
SANITIZER_CASE_S = 1.5
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# The benchmark's CUDA/cuDNN start and first calls, and one job (workload x mode: 4 contenders x
# (1 warm-up + 3 reps) + a memory probe, setup, gc, the JSON): benchmarks/configs/
# gpu_session.json's cost model (gpu_session.sh's header) gives ~4 minutes for 240 jobs.
BENCH_START_S = 15
BENCH_JOB_S = 1.0
# The bench is the stage that gives way: its grids are ordered by value and a cut run keeps its
# jobs (gpu_session.sh gives it min(its cap, what is left of the budget)). The plan gives it what
# the limit leaves after the other stages, at most its cap, but never plans it below this: the
# persistent and cluster grids first in gpu_session.json (72 jobs) plus the start.
BENCH_MIN_S = 90
# The wheel stage runs only when this much is left (gpu_session.sh's FASTLSTM_WHEEL_STAGE_NEEDS).
WHEEL_STAGE_NEEDS_S = 150


def test_estimate(nodeid):
    return next((s for pattern, s in SLOW_TESTS if pattern in nodeid), TEST_S)


def group_cap(estimate):
    return max(GROUP_CAP_MIN_S, math.ceil(GROUP_CAP_FACTOR * estimate))


def candidate_files():
    """The files the test stage collects: tests/test_cuda.py, FASTLSTM_GPU_TEST_FILES, every
    test file with a gpu mark (the plugin keeps their GPU tests); with FASTLSTM_GPU_TEST_GROUPS,
    that table's files only."""
    sys.path.insert(0, HERE)
    import gpu_tests_plugin

    table = gpu_tests_plugin.group_table()
    if table is not None:
        return [f for row in table for f in row[1]]
    files = {"tests/test_cuda.py"}
    files |= {f"tests/{f}" for f in os.environ.get("FASTLSTM_GPU_TEST_FILES", "").split()}
    for folder in ("tests", "benchmarks"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.startswith("test_") and name.endswith(".py"):
                with open(os.path.join(ROOT, folder, name), errors="replace") as f:
                    if re.search(r"mark\.gpu\b", f.read()):
                        files.add(f"{folder}/{name}")
    return sorted(files)


def pytest_extra_args(files):
    """--benchmark-disable where benchmark tests are collected (pytest-benchmark's option)."""
    if any(f.startswith("benchmarks/") for f in files) and importlib.util.find_spec(
            "pytest_benchmark") is not None:
        return ["--benchmark-disable"]
    return []


def collect(files):
    """{group: [(nodeid, path)]} of the GPU tests in files, in the plugin's group order, and
    the collection errors. path: the test's file, relative to the checkout when inside it."""
    import pytest

    import gpu_tests_plugin

    class Grab:
        def __init__(self):
            self.items, self.errors = [], []

        def pytest_collection_finish(self, session):
            for it in session.items:
                path = os.path.abspath(str(getattr(it, "path", None) or it.fspath))
                if path.startswith(ROOT + os.sep):
                    path = os.path.relpath(path, ROOT)
                self.items.append((it.nodeid, path, gpu_tests_plugin.group_of(it)))

        def pytest_collectreport(self, report):
            if report.failed:
                self.errors.append(f"{report.nodeid}: {report.longreprtext.splitlines()[-1:]}")

    grab = Grab()
    args = ["--collect-only", "-q", "-p", "gpu_tests_plugin", "-p", "no:cacheprovider",
            *pytest_extra_args(files), *files]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = pytest.main(args, plugins=[grab])
    if rc not in (0, 5) and not grab.errors:
        grab.errors.append(f"pytest --collect-only rc={rc}: " + text.getvalue()[-2000:])
    groups = {name: [] for name in gpu_tests_plugin.group_names()}
    for nodeid, path, group in grab.items:
        if group is not None:
            groups.setdefault(group, []).append((nodeid, path))
    return groups, grab.errors


def bench_jobs(config_path):
    sys.path.insert(0, ROOT)
    from benchmarks import config

    cfg = config.load(config_path)
    return len(config.workloads(cfg, "cuda")) * len(cfg["modes"])


def sanitizer_cases():
    sys.path.insert(0, HERE)
    import sanitize_shapes

    return len(sanitize_shapes.cases("cuda"))


def plan(build, groups, cases, jobs, bench_cap=200, sanitize_cap=120, limit=PLAN_LIMIT_S,
         caps=None, bench_config="benchmarks/configs/gpu_session.json", bench_tail=25):
    """The plan from the counts. build: "wheel" or "source"; groups: {name: [(nodeid, path)]};
    cases: sanitizer cases; jobs: benchmark jobs; caps: {group: (cap, test cap)} overrides.
    Returns a dict: total, fits, lines (the printout), problems, groups [(name, cap, estimate,
    count, test cap, files)], and each stage's seconds."""
    caps = caps or {}
    problems, lines = [], []
    row = lambda stage, s, text: lines.append(f"  {stage:<9s}{s:5.0f} s  {text}")  # noqa: E731

    build_s = WHEEL_INSTALL_S if build == "wheel" else SOURCE_BUILD_S
    row("build", build_s, "prebuilt wheel: install, copy, import (WHEEL_INSTALL_S)"
        if build == "wheel" else "editable build from source, sm_90 (SOURCE_BUILD_S; a "
        f"prebuilt wheel, make gpu-wheel, would take WHEEL_INSTALL_S = {WHEEL_INSTALL_S} s)")
    row("overhead", SESSION_OVERHEAD_S, "machine probe and this plan (SESSION_OVERHEAD_S)")

    group_rows, test_total, n_tests = [], 0.0, 0
    for name, items in groups.items():
        if not items:
            continue
        est = PYTEST_START_S + sum(test_estimate(nodeid) for nodeid, _ in items)
        cap, test_cap = caps.get(name, (None, None))
        cap = group_cap(est) if cap is None else math.ceil(cap)
        if test_cap is None:
            test_cap = max(5, min(TEST_CAP_S, cap - TEST_CAP_MARGIN_S))
        files = sorted({path for _, path in items})
        group_rows.append((name, cap, est, len(items), test_cap, files))
        test_total += est
        n_tests += len(items)
    row("test", test_total, f"{n_tests} tests in {len(group_rows)} groups, a pytest process "
        f"each (PYTEST_START_S {PYTEST_START_S} + per test TEST_S {TEST_S} or SLOW_TESTS):")
    for name, cap, est, count, test_cap, _ in group_rows:
        lines.append(f"    {name:<12s}{count:4d} tests {est:6.1f} s  (cap {cap:g} s, "
                     f"per test {test_cap:g} s)")
    if not group_rows:
        problems.append("no GPU test collected")

    per_tool = SANITIZER_START_S + cases * SANITIZER_CASE_S
    sanitize = len(SANITIZER_TOOLS) * per_tool
    row("sanitize", sanitize, f"{len(SANITIZER_TOOLS)} tools x (SANITIZER_START_S "
        f"{SANITIZER_START_S} + {cases} cases x SANITIZER_CASE_S {SANITIZER_CASE_S}); "
        f"cap {sanitize_cap} s")
    if sanitize > sanitize_cap:
        problems.append(f"the sanitizer stage's estimate ({sanitize:.0f} s) exceeds its cap "
                        f"({sanitize_cap} s): its last tools would not run")

    lines.append(f"  ({bench_config} on cuda: {jobs} jobs)")
    bench_est = BENCH_START_S + jobs * BENCH_JOB_S
    fixed = build_s + SESSION_OVERHEAD_S + test_total + sanitize
    room = limit - fixed
    bench = max(min(bench_est, bench_cap, room), min(bench_est, BENCH_MIN_S))
    cut = ""
    if bench < bench_est:
        # The suite stops itself bench_tail s before its cap (--time-limit), to write its outputs.
        done = max(0, int((bench - bench_tail - BENCH_START_S) / BENCH_JOB_S))
        why = (f"its {bench_cap} s cap" if bench == bench_cap else
               f"what the {limit} s leave" if bench == room else
               f"its minimum (BENCH_MIN_S {BENCH_MIN_S})")
        cut = f"; cut by {why} after ~{done} of {jobs} jobs"
    row("bench", bench, f"BENCH_START_S {BENCH_START_S} + {jobs} jobs x BENCH_JOB_S "
        f"{BENCH_JOB_S} = {bench_est:.0f} s{cut}")
    row("wheel", 0, f"only when {WHEEL_STAGE_NEEDS_S} s are left of the budget")

    total = fixed + bench
    fits = total <= limit
    lines.append(f"  {'total':<9s}{total:5.0f} s  of {limit} s: "
                 + ("fits" if fits else f"OVER by {total - limit:.0f} s"))
    lines += [f"  problem: {problem}" for problem in problems]
    return dict(total=total, fits=fits, lines=lines, problems=problems, groups=group_rows,
                build=build_s, test=test_total, sanitize=sanitize, bench=bench,
                overhead=SESSION_OVERHEAD_S)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--groups-out", help="write the test stage's groups here (see above)")
    p.add_argument("--build", choices=("wheel", "source"), default="source",
                   help="how the build stage gets the extension (gpu_session.sh decides)")
    p.add_argument("--bench-config", default=os.path.join(ROOT, "benchmarks", "configs",
                                                          "gpu_session.json"))
    p.add_argument("--bench-cap", type=int, default=200)
    p.add_argument("--bench-tail", type=int, default=25,
                   help="the suite stops itself this long before its cap (gpu_session.sh)")
    p.add_argument("--sanitize-cap", type=int, default=120)
    p.add_argument("--limit", type=int, default=PLAN_LIMIT_S)
    args = p.parse_args(argv)

    problems = []
    sys.path.insert(0, HERE)
    import gpu_tests_plugin

    files = candidate_files()
    groups, errors = collect(files)
    if errors:
        problems.append("collection errors: " + "; ".join(errors)[:1500])
    caps = {row[0]: (row[2], row[3]) for row in gpu_tests_plugin.group_table() or []}
    try:
        cases = sanitizer_cases()
    except Exception as e:  # noqa: BLE001 - reported, the plan fails
        cases = 0
        problems.append(f"scripts/sanitize_shapes.py's cases: {type(e).__name__}: {e}")
    try:
        jobs = bench_jobs(args.bench_config)
    except Exception as e:  # noqa: BLE001
        jobs = 0
        problems.append(f"{args.bench_config} does not load: {type(e).__name__}: {e}")
    result = plan(args.build, groups, cases, jobs, args.bench_cap, args.sanitize_cap,
                  args.limit, caps, os.path.relpath(os.path.abspath(args.bench_config), ROOT),
                  args.bench_tail)
    problems += result["problems"]
    print("time plan (ESTIMATES for the GPU machine, no GPU has run yet; constants in "
          "scripts/time_plan.py):")
    print("\n".join(result["lines"]))
    for problem in problems:
        if problem not in result["problems"]:
            print(f"  problem: {problem}")
    if args.groups_out:
        with open(args.groups_out, "w") as f:
            for name, cap, est, count, test_cap, group_files in result["groups"]:
                f.write(f"{name}\t{cap:g}\t{est:.0f}\t{count}\t{test_cap:g}\t"
                        f"{' '.join(group_files)}\n")
    ok = result["fits"] and not problems
    print(f"time plan: {'PASS' if ok else 'FAIL'}: total {result['total']:.0f} s of {args.limit} "
          f"s (build {result['build']}, test {result['test']:.0f}, sanitize "
          f"{result['sanitize']:.0f}, bench {result['bench']:.0f}, overhead "
          f"{result['overhead']})" + ("" if result["fits"] else ": over the limit")
          + (f"; {len(problems)} problem(s)" if problems else ""))
    if problems:
        return 2
    return 0 if result["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
