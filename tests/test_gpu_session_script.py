"""CI rehearsal of scripts/gpu_session.sh, the script that spends the rare GPU window, so that a
typo in it shows up here and not there. `--rehearse` runs every stage on the CPU with the GPU-only
steps skipped: the build as a pip dry run plus the import of the extension already built (never a
rebuild or an install), the time plan, the test stage's groups (each its own pytest process, the
GPU tests skipping) merged into one JUnit XML, the sanitizer's kernel filter against the built
extension, its verdict parser on sample logs and scripts/sanitize_shapes.py on the CPU, the
benchmark on a tiny config, the wheel stage's script. Then the output folder must hold what the
device tool brings back: at most 8 plain files, plain names.

Three sessions run at once (module fixture `sessions`): the full rehearsal; one of the test and
bench stages with fake test groups (one hangs in Python, one where Python cannot interrupt it,
one cut by its group cap) and the benchmark cut after its first job; one with a 1 s budget."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from once_per_run import distributed, mark_done, shared_folder, wait_done

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_session.sh")
STAGES = ["build", "plan", "test", "sanitize", "bench", "wheel"]
GROUPS = ["persistent", "schedule", "cuda", "marked"]
TOOLS = ["memcheck", "racecheck", "synccheck", "initcheck"]

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")),
                                reason="needs bash and coreutils' timeout")

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_status  # noqa: E402
import sanitizer_verdict  # noqa: E402
import time_plan  # noqa: E402

# Fake test groups for the test stage (FASTLSTM_GPU_TEST_GROUPS): no torch, so they start fast.
FAKE_TESTS = {
    "test_first.py": """
        import pytest

        @pytest.mark.gpu
        def test_first_passes():
            pass
    """,
    # per-test cap 1.5 s (the group's entry below), watchdog 1 s later
    "test_hang.py": """
        import signal, time
        import pytest

        @pytest.mark.gpu
        def test_ok():
            pass

        @pytest.mark.gpu
        def test_sleeps():
            time.sleep(30)

        @pytest.mark.gpu
        def test_stuck():
            # Where no Python signal handler can run (as in a CUDA call that never returns).
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM, signal.SIGINT])
            time.sleep(30)

        @pytest.mark.gpu
        def test_never_reached():
            pass
    """,
    # the group's cap, 30 s, comes before its per-test cap, 60 s, and while test_long sleeps
    # (30, not less: pytest's start took about 3 s under a loaded CI, and once near 10 s, when
    # a 10 s cap fell at test_a's end and test_long went unrun rather than cut)
    "test_capped.py": """
        import time
        import pytest

        @pytest.mark.gpu
        def test_a():
            pass

        @pytest.mark.gpu
        def test_long():
            time.sleep(120)

        @pytest.mark.gpu
        def test_after():
            pass
    """,
    "test_last.py": """
        import pytest

        @pytest.mark.gpu
        def test_last_passes():
            pass
    """,
}
def start(out, stage="all", **env_extra):
    env = dict(os.environ, PYTHON=sys.executable)
    for key in ("FASTLSTM_WHEEL", "FASTLSTM_GPU_TEST_GROUPS", "FASTLSTM_BENCH_CONFIG",
                "FASTLSTM_SESSION_BUDGET", "FASTLSTM_TIME_PLAN_LIMIT", "FASTLSTM_BENCH_CAP",
                "FASTLSTM_BENCH_TIME_LIMIT"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in env_extra.items()})
    return subprocess.Popen(["bash", SCRIPT, "--rehearse", stage, str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_sessions(base):
    """Starts the three rehearsals in folders under base: {name: (out folder, process)}."""
    fake = base / "fake"
    fake.mkdir()
    for name, text in FAKE_TESTS.items():
        (fake / name).write_text(textwrap.dedent(text))
    return {
        "full": (base / "full", start(base / "full")),
        "faults": (base / "faults", start(
            base / "faults", "test,bench",
            FASTLSTM_GPU_TEST_GROUPS=f"first={fake}/test_first.py;hang::1.5={fake}/test_hang.py;"
                                     f"capped:30:60={fake}/test_capped.py;last={fake}/test_last.py",
            FASTLSTM_GPU_HANG_GRACE=1, FASTLSTM_BENCH_TIME_LIMIT=0,
            FASTLSTM_TIME_PLAN_LIMIT=200)),
        "no_time": (base / "no_time", start(base / "no_time", FASTLSTM_SESSION_BUDGET=1)),
    }


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """The three rehearsals, started together; each test waits for the one it reads. Once per
    pytest run (tests/once_per_run.py): two sets at once under pytest-xdist had loaded the
    machine enough to move the capped group's SIGINT off the test it must cut."""
    base, owner = shared_folder(tmp_path_factory, "gpu_session")
    extensions = glob.glob(os.path.join(ROOT, "fastlstm", "_C*.so"))
    before = {p: os.stat(p).st_mtime_ns for p in extensions}
    procs = start_sessions(base) if owner else {}
    done = {}

    def get(name):
        if name not in done:
            if owner:
                out, proc = procs[name]
                try:
                    stdout, _ = proc.communicate(timeout=300)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        stdout, _ = proc.communicate()
                    mark_done(base, name, {"rc": proc.returncode, "stdout": stdout})
                done[name] = (out, proc.returncode, stdout)
            else:
                r = wait_done(base, name, timeout_s=400)
                done[name] = (base / name, r["rc"], r["stdout"])
        return done[name]

    yield get
    for name, (out, proc) in procs.items():
        if distributed() and name not in done:
            get(name)                   # another worker may read it
        elif proc.poll() is None:       # a test selection that reads no more of them
            proc.kill()
            proc.communicate()
    # Nothing was rebuilt or reinstalled.
    assert {p: os.stat(p).st_mtime_ns for p in extensions} == before


def stage_lines(out):
    with open(os.path.join(out, "summary.txt")) as f:
        lines = f.read().splitlines()
    return lines, {line.split()[0]: line.split()[1] for line in lines[1:-1]}


def suites(path):
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return {s.get("name"): s for s in root.findall("testsuite")}, [s.get("name") for s in root]


@pytest.mark.slow
def test_rehearsal_runs_every_stage_and_fits_the_device_tool(sessions):
    out, rc, stdout = sessions("full")
    assert rc == 0, stdout[-4000:]
    lines, verdicts = stage_lines(out)
    assert "REHEARSAL" in lines[0] and lines[-1].startswith("total ")
    assert verdicts == {s: "PASS" for s in STAGES}, "\n".join(lines)
    assert len(lines) <= 8

    # What the device tool brings back: at most 8 plain files, no folders, plain names.
    names = sorted(os.listdir(out))
    assert len(names) <= 8, names
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
        assert os.path.isfile(out / name), name
    assert {"summary.txt", "session.log", "junit.xml"} <= set(names)
    assert len([n for n in names if n.endswith(".json")]) == 1
    assert len([n for n in names if n.endswith(".md")]) == 1
    log = (out / "session.log").read_text()

    # bench: complete JSON with the per-step latency, and its table; status "finished"
    payload = json.loads((out / next(n for n in names if n.endswith(".json"))).read_text())
    assert payload["run"]["tf32"] is False and "stopped" not in payload["run"]
    assert len(payload["results"]) == payload["run"]["jobs"] > 0
    assert payload["per_step"] and all("per_step_us" in p for p in payload["per_step"])
    assert "Per-step latency" in (out / next(n for n in names if n.endswith(".md"))).read_text()
    assert re.search(r"^bench +PASS .*finished: (\d+) of \1 jobs", "\n".join(lines), re.M)


def test_test_stage_runs_each_group_in_its_own_pytest_process_persistent_first(sessions):
    out, rc, stdout = sessions("full")
    log = (out / "session.log").read_text()
    # One pytest process a group, in order, each with its own cap, the SIGINT cap and the guard.
    starts = re.findall(r"===== test group (\w+): \d+ tests, cap (\d+)s \(plan: \d+s\), "
                        r"per-test cap ([\d.]+)s", log)
    assert [name for name, _, _ in starts] == GROUPS, starts
    # The per-test guard acts (alarm, then the watchdog 10 s later) before the group's cap.
    assert all(float(test_cap) + 10 < int(cap) for _, cap, test_cap in starts), starts
    assert len(re.findall(r"^=+ test session starts =+$", log, re.M)) == len(GROUPS)
    for group in GROUPS:
        assert re.search(rf"^--- test group {group}: pytest rc=0$", log, re.M), group
    # One JUnit XML, a testsuite a group, in that order; the GPU tests collected and skipping.
    by_name, order = suites(out / "junit.xml")
    assert order == GROUPS
    for group, suite in by_name.items():
        assert int(suite.get("tests")) > 0, group
        assert suite.get("failures") == suite.get("errors") == "0", group
        assert suite.get("skipped") == suite.get("tests"), group
    persistent = {c.get("classname") for c in by_name["persistent"].iter("testcase")}
    assert persistent == {"tests.test_cuda_persistent"}, persistent
    assert {c.get("classname") for c in by_name["schedule"].iter("testcase")} == {
        "tests.test_cuda_schedule"}
    # pytest -v: every test's id and outcome in the log.
    for suite in by_name.values():
        for case in suite.iter("testcase"):
            path = case.get("classname").replace(".", "/") + ".py"
            assert f"{path}::{case.get('name')} SKIPPED" in log, (path, case.get("name"))


def test_sanitizer_runs_only_fastlstm_kernels_judged_by_summary_lines(sessions):
    out, rc, stdout = sessions("full")
    log = (out / "session.log").read_text()
    # Each tool's GPU command line carries the kernel filter and the per-case cap.
    commands = re.findall(r"^--- rehearsal: on the GPU machine: (.*)$", log, re.M)
    assert len(commands) == len(TOOLS), commands
    for tool, command in zip(TOOLS, commands):
        words = command.split()
        assert words[words.index("--tool") + 1] == tool
        assert words[words.index("--kernel-name") + 1] == "kns=fastlstm", command
        assert words.index("--kernel-name") < words.index("scripts/sanitize_shapes.py")
        assert "--case-cap" in words
    # The filter takes every kernel of the built extension (or this build has none).
    assert re.search(r"kernel filter PASS: kns=fastlstm takes all \d+ kernels", log) or (
        "no kernel launch stub" in log), log[-3000:]
    assert re.search(r"sanitizer_verdict self-test: (\d+) of \1 as expected", log), log[-2000:]
    assert re.search(r"sanitize_shapes: all \d+ cases ok on cpu", log)
    assert re.search(r"sanitize_shapes: case 1/\d+ .*: start", log)


def test_time_plan_is_printed_and_fits(sessions):
    out, rc, stdout = sessions("full")
    plan = stdout[stdout.index("time plan (ESTIMATES"):]
    for stage in ("build", "overhead", "test", "sanitize", "bench", "wheel"):
        assert re.search(rf"^  {stage} +\d+ s  ", plan, re.M), stage
    for group in GROUPS:
        assert re.search(rf"^    {group} +\d+ tests +[\d.]+ s  \(cap \d+ s", plan, re.M), group
    assert re.search(r"gpu_session.json on cuda: \d+ jobs", plan)
    total = int(re.search(r"^  total +(\d+) s  of 540 s: fits$", plan, re.M).group(1))
    assert 0 < total <= 540
    assert re.search(r"^plan +PASS .*total \d+ s of 540 s", (out / "summary.txt").read_text(),
                     re.M)


def test_time_plan_fails_over_540_s():
    groups = {"g": [(f"tests/t.py::test_{i}", "tests/t.py") for i in range(100)]}
    fits = time_plan.plan("source", groups, cases=12, jobs=240)
    assert fits["fits"] and fits["total"] <= 540, fits["lines"]
    # 800 more tests (~400 s): the fixed stages alone pass the limit.
    groups["g"] += [(f"tests/t.py::test_more_{i}", "tests/t.py") for i in range(800)]
    over = time_plan.plan("source", groups, cases=12, jobs=240)
    assert not over["fits"] and over["total"] > 540
    assert "OVER by" in over["lines"][-1]
    # The slow tests' estimates count, and a prebuilt wheel saves the build's time.
    assert time_plan.test_estimate("x::test_compile_fullgraph_matches_nn_lstm[inductor]") > 10
    assert (time_plan.plan("wheel", groups, 12, 240)["build"]
            < time_plan.plan("source", groups, 12, 240)["build"])


def test_faults_cost_only_their_group_and_are_named(sessions):
    out, rc, stdout = sessions("faults")
    assert rc == 1, stdout[-3000:]
    lines, verdicts = stage_lines(out)
    assert verdicts == {"plan": "FAIL", "test": "FAIL", "bench": "PASS"}, "\n".join(lines)
    log = (out / "session.log").read_text()
    by_name, order = suites(out / "junit.xml")
    assert order == ["first", "hang", "capped", "last"]

    def outcomes(group):
        return {c.get("name"): [child.tag for child in c] for c in by_name[group]}

    assert outcomes("first") == {"test_first_passes": []}
    assert outcomes("last") == {"test_last_passes": []}          # ran after the faults
    hang = outcomes("hang")
    assert hang["test_ok"] == [] and hang["test_sleeps"] == ["failure"]
    assert hang["test_stuck"] == ["failure"] and "test_never_reached" not in hang
    cases = {c.get("name"): c for c in by_name["hang"]}
    assert "per-test cap of 1.5 s" in cases["test_sleeps"].find("failure").text
    # Node ids are relative to the group's rootdir, which pytest may place above the fake
    # tests' folder (it did under make test: "pytest-of-root/.../fake/test_hang.py"), so they
    # are matched by their end.
    node = r"\S*\b"
    assert re.search(node + r"test_hang\.py::test_stuck: hung: ",
                     cases["test_stuck"].find("failure").get("message"))
    assert re.search(r"gpu_tests_plugin: HUNG " + node + r"test_hang\.py::test_stuck\b", log)
    # The SIGINT cap: pytest still wrote its JUnit XML (test_a), the test it stopped is an error.
    capped = outcomes("capped")
    assert capped == {"test_a": [], "test_long": ["error"]}, capped
    assert re.search(r"^--- test group capped: pytest rc=124 \(its cap: SIGINT\)$", log, re.M)
    assert re.search(r"gpu_tests_plugin: INTERRUPTED " + node + r"test_capped\.py::test_long\b",
                     log)
    assert "KeyboardInterrupt" in log  # pytest's own summary of the interrupted run
    summary = (out / "summary.txt").read_text()
    assert re.search(r"capped: 1 passed, 1 errors \(cut by its 30 s cap \(SIGINT\) in " + node
                     + r"test_capped\.py::test_long\)", summary), summary
    assert re.search(r"hang: 1 passed, 2 failed \(hung in " + node + r"test_hang\.py::test_stuck",
                     summary), summary
    # The plan over its (lowered) limit fails, and the stages still run.
    assert re.search(r"^plan +FAIL .*total \d+ s of 200 s.*over the limit", summary, re.M)


def test_bench_cut_by_its_cap_keeps_what_it_measured(sessions):
    out, rc, stdout = sessions("faults")
    summary = (out / "summary.txt").read_text()
    m = re.search(r"^bench +PASS +\d+s  cut with (\d+) of (\d+) workloads", summary, re.M)
    assert m, summary
    done, total = int(m.group(1)), int(m.group(2))
    # The rehearsal's benchmark config under a 0 s time limit: one job, then a clean stop.
    assert done == 1 and total == 8
    payload = json.loads(next(out.glob("*.json")).read_text())
    assert len(payload["results"]) == 1 and payload["run"]["jobs"] == 8
    assert payload["run"]["stopped"] == "stopped by its 0 s time limit after 1 of 8 jobs"
    assert "Partial run" in next(out.glob("*.md")).read_text()
    assert re.search(r"--- bench: rc=0: PASS cut with", (out / "session.log").read_text())


def test_bench_statuses():
    run, ok = {"jobs": 4}, {"mode": "forward"}
    full = {"run": dict(run), "results": [ok] * 4, "per_step": []}
    assert bench_status.status(full, 0) == (True, "finished: 4 of 4 jobs; 0 per-step rows")
    cut = {"run": dict(run, stopped="stopped by SIGTERM after 2 of 4 jobs"),
           "results": [ok] * 2}
    passed, line = bench_status.status(cut, 124)   # timeout's 124 for a clean stop
    assert passed and line.startswith("cut with 2 of 4 workloads")
    limited = {"run": dict(run, stopped="stopped by its 9 s time limit after 3 of 4 jobs"),
               "results": [ok] * 3}
    assert bench_status.status(limited, 0)[1].startswith("cut with 3 of 4 workloads")
    killed = {"run": dict(run, stopped="partial JSON: 2 of 4 jobs done"), "results": [ok] * 2}
    assert bench_status.status(killed, 137)[1].startswith("failed: killed inside a job")
    raised = {"run": dict(run), "results": [ok, {"error": "RuntimeError: x"}] * 2}
    assert bench_status.status(raised, 0)[1].startswith("failed: 2 of 4 jobs raised")
    assert bench_status.status(None, 124) == (False, "failed: no JSON written (rc=124)")
    assert not bench_status.status({"run": dict(run), "results": [ok] * 3}, 0)[0]


def test_kernel_filter_check_and_verdicts(tmp_path):
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"\x00_Z33__device_stub__ZN8fastlstm3fooEPf\x00"
                     b"\x00_ZL33__device_stub__ZN5other6kernelEPfPKf\x00")
    assert sanitizer_verdict.kernel_names(str(fake)) == ["_ZN5other6kernelEPf",
                                                         "_ZN8fastlstm3fooEPf"]
    ok, why = sanitizer_verdict.filter_covers("fastlstm", [str(fake)])
    assert not ok and "misses 1 of 2" in why and "_ZN5other6kernelEPf" in why
    assert sanitizer_verdict.filter_covers("N", [str(fake)])[0]
    assert sanitizer_verdict.self_test() == 0
    # A rejected kernel filter is named as such, not as a crash.
    assert "rejected its command line" in sanitizer_verdict.verdict(
        "memcheck", "Error: unrecognized option '--kernel-name'\n", 1)[1]


def test_100k_reference_matches_its_inputs_and_nn_lstm():
    """tests/data/lstm_100k_reference.pt (test_cuda.py's 100k test) on the CPU: the inputs drawn
    here have its checksums, and its first 128 steps are nn.LSTM's in float64 on those inputs."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_cuda

    stored = torch.load(test_cuda.REFERENCE_100K, weights_only=True)
    assert os.path.getsize(test_cuda.REFERENCE_100K) < 200_000
    state, x, hx, upstream = test_cuda.inputs_100k()
    torch.testing.assert_close(test_cuda.checksums_100k(state, x, hx, upstream),
                               stored["checksums"], rtol=1e-12, atol=0)
    assert torch.equal(stored["steps"], test_cuda.steps_100k())
    model = torch.nn.LSTM(3, 8, dtype=torch.float64)
    model.load_state_dict({k: v.double() for k, v in state.items()})
    with torch.no_grad():
        out, _ = model(x[:128].double(), tuple(t.double() for t in hx))
    head = stored["steps"] < 128
    assert int(head.sum()) == 128
    torch.testing.assert_close(stored["values"]["output"][head].double(), out, rtol=1e-6,
                               atol=1e-7)
    names = {"output", "h_n", "c_n", "grad_input", "grad_h_0", "grad_c_0"} | {
        "grad." + n for n in state}
    assert set(stored["values"]) == names


def test_out_of_time_stages_fail_and_are_still_reported(sessions):
    out, rc, stdout = sessions("no_time")
    assert rc == 1, stdout
    lines, verdicts = stage_lines(out)
    assert verdicts == {"build": "FAIL", "plan": "FAIL", "test": "FAIL", "sanitize": "FAIL",
                        "bench": "FAIL", "wheel": "SKIP"}, "\n".join(lines)
    assert sorted(os.listdir(out)) == ["session.log", "summary.txt"]
