"""pytest plugin for scripts/gpu_session.sh's test stage (`-p gpu_tests_plugin`, scripts/ on
PYTHONPATH).

Selection: of the files given, keeps every test of tests/test_cuda.py and of the files named in
FASTLSTM_GPU_TEST_FILES (space-separated base names), and every test marked `gpu` anywhere;
deselects the rest.

Groups (--gpu-group NAME): the stage runs each group in a pytest process of its own, with a
cap of its own, so that a fault (a poisoned CUDA context) or a hang costs only its group. The
group of a test is group_of(item): "persistent" (tests/test_cuda_persistent.py, and tests of
tests/test_cuda.py whose id names the persistent or cluster path), "schedule"
(tests/test_cuda_schedule.py), "cuda" (the rest of tests/test_cuda.py), "marked" (every other
GPU test), in that order (GROUP_ORDER). FASTLSTM_GPU_TEST_GROUPS replaces that table:
"name[:cap[:test_cap]]=file,file;..." (files by path suffix; caps in seconds, else the plan's;
the session's rehearsal test uses it for fake groups). scripts/time_plan.py collects once, with
no --gpu-group, and writes the groups.

Per-test guard (--gpu-test-cap SECONDS, 0: off): a hang becomes a failure naming its test.
  1. SIGALRM at the cap raises pytest's Failed in the test ("<nodeid>: still running after the
     per-test cap ..."): the test fails with its traceback, the group goes on.
  2. When the test is stuck where Python cannot run a signal handler (a CUDA call that never
     returns, signals blocked), a watchdog thread acts --gpu-hang-grace seconds later: it writes
     "gpu_tests_plugin: HUNG <nodeid> ...", every thread's traceback, and the group's JUnit XML
     (the tests done, and this one as a failure) to --junitxml's path, then ends the process
     (exit status 1).
  3. When even that thread cannot run (the stuck call holds the GIL), faulthandler dumps the
     tracebacks and ends the process another grace period (at least 5 s) later; the log then
     names the test
     (pytest -v prints its id before it runs).
The group's cap (`timeout -s INT`) interrupts pytest, which still writes its JUnit XML and
summary; the plugin then prints "gpu_tests_plugin: INTERRUPTED <nodeid>", the test in progress,
which scripts/junit_groups.py adds to the merged XML as an error.
"""

import faulthandler
import os
import re
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

GROUP_ORDER = ("persistent", "schedule", "cuda", "marked")
PERSISTENT_ID = re.compile(r"persistent|cluster", re.IGNORECASE)

# The terminal's stderr, kept before pytest's capture replaces fd 2 (a -p plugin is imported
# before capturing starts): the watchdog writes there while a test is stuck under capture.
try:
    _TERMINAL = os.fdopen(os.dup(2), "w", buffering=1)
except OSError:  # pragma: no cover - no stderr
    _TERMINAL = sys.__stderr__


def whole_files():
    return {"test_cuda.py"} | set(os.environ.get("FASTLSTM_GPU_TEST_FILES", "").split())


def _path(item):
    return str(getattr(item, "path", None) or item.fspath)


def runs_in_gpu_session(item) -> bool:
    """Whether the session's test stage keeps this test (tests/conftest.py requires it, in CI,
    of every test skipped for want of a CUDA device)."""
    name = os.path.basename(_path(item))
    return name in whole_files() or item.get_closest_marker("gpu") is not None


def group_table():
    """FASTLSTM_GPU_TEST_GROUPS as [(name, [path suffixes], cap or None, test cap or None)],
    or None when unset."""
    spec = os.environ.get("FASTLSTM_GPU_TEST_GROUPS", "").strip()
    if not spec:
        return None
    table = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        head, _, files = part.partition("=")
        name, *caps = head.strip().split(":")
        caps = [float(c) if c else None for c in caps] + [None, None]
        table.append((name, [f.strip() for f in files.split(",") if f.strip()], caps[0], caps[1]))
    return table


def group_of(item):
    """The test-stage group of a GPU test (see the module's docstring); None: in no group."""
    path = _path(item)
    table = group_table()
    if table is not None:
        return next((name for name, files, _, _ in table
                     if any(path.endswith(f.lstrip("./")) for f in files)), None)
    name = os.path.basename(path)
    if name == "test_cuda_persistent.py" or (name == "test_cuda.py"
                                             and PERSISTENT_ID.search(item.nodeid)):
        return "persistent"
    if name == "test_cuda_schedule.py":
        return "schedule"
    if name == "test_cuda.py":
        return "cuda"
    return "marked"


def group_names():
    table = group_table()
    return [row[0] for row in table] if table is not None else list(GROUP_ORDER)


def pytest_addoption(parser):
    g = parser.getgroup("gpu_tests_plugin", "scripts/gpu_tests_plugin.py (GPU session)")
    g.addoption("--gpu-group", default=None,
                help="keep only the GPU tests of this group (see the plugin's docstring)")
    g.addoption("--gpu-test-cap", type=float, default=0.0,
                help="per-test guard: seconds before a test fails as hung (0: off)")
    g.addoption("--gpu-hang-grace", type=float, default=10.0,
                help="seconds after the cap before the watchdog ends a stuck process")


def pytest_collection_modifyitems(config, items):
    group = config.getoption("--gpu-group")
    keep, drop = [], []
    for item in items:
        ok = runs_in_gpu_session(item) and (group is None or group_of(item) == group)
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config):
    cap = config.getoption("--gpu-test-cap")
    if cap and cap > 0:
        config.pluginmanager.register(_Guard(config, cap, config.getoption("--gpu-hang-grace")),
                                      "gpu_tests_plugin_guard")


class _Guard:
    def __init__(self, config, cap, grace):
        self.config, self.cap, self.grace = config, cap, max(0.5, grace)
        self.current = None        # (nodeid, monotonic start) of the test running
        self.interrupted = None    # the test a KeyboardInterrupt (SIGINT cap) stopped
        self.results = {}          # nodeid -> (outcome, message, seconds), for the XML
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gpu-test-guard", daemon=True)
        self._thread.start()

    # -- the per-test alarm
    def _alarm(self, signum, frame):
        nodeid = self.current[0] if self.current else "?"
        pytest.fail(f"{nodeid}: still running after the per-test cap of {self.cap:g} s "
                    f"(scripts/gpu_tests_plugin.py); stopped here", pytrace=True)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = (item.nodeid, time.monotonic())
        old = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, self.cap)
        # Last resort (3.): needs no GIL. At least 5 s after the watchdog's turn, so that a
        # busy machine delaying the watchdog thread by a second does not hand the hang to it.
        faulthandler.dump_traceback_later(self.cap + self.grace + max(self.grace, 5.0),
                                          exit=True, file=_TERMINAL)
        try:
            outcome = yield
            if outcome.excinfo and issubclass(outcome.excinfo[0], KeyboardInterrupt):
                self.interrupted = (item.nodeid, time.monotonic() - self.current[1])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGALRM, old)
            self.current = None

    def pytest_runtest_logreport(self, report):
        old = self.results.get(report.nodeid)
        if report.failed:
            kind = "failure" if report.when == "call" else "error"
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", "")
            entry = (kind, (crash + "\n\n" if crash else "") + report.longreprtext[-4000:],
                     report.duration)
        elif report.skipped:
            entry = ("skipped", str(report.longrepr)[-1000:], report.duration)
        else:
            entry = ("passed", "", report.duration)
        if old is None or old[0] in ("passed", "skipped") and entry[0] != "passed":
            self.results[report.nodeid] = entry

    def pytest_keyboard_interrupt(self, excinfo):
        if self.interrupted:
            nodeid, seconds = self.interrupted
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            line = (f"gpu_tests_plugin: INTERRUPTED {nodeid} after {seconds:.0f} s "
                    f"(SIGINT: the group's cap)")
            if tr is not None:
                tr.write_line(line)
            else:
                print(line, file=_TERMINAL)

    def pytest_unconfigure(self, config):
        self._stop.set()

    # -- the watchdog (2.)
    def _watch(self):
        while not self._stop.wait(0.1):
            cur = self.current
            if cur is None or self.fired or time.monotonic() - cur[1] < self.cap + self.grace:
                continue
            self.fired = True
            nodeid, start = cur
            seconds = time.monotonic() - start
            print(f"\ngpu_tests_plugin: HUNG {nodeid}: still running {seconds:.0f} s after it "
                  f"started, {self.grace:g} s past the per-test cap's alarm (stuck where Python "
                  f"cannot interrupt it); writing the JUnit XML and ending this process",
                  file=_TERMINAL, flush=True)
            faulthandler.dump_traceback(file=_TERMINAL, all_threads=True)
            self.results[nodeid] = ("failure", f"{nodeid}: hung: no return {seconds:.0f} s after "
                                    f"it started (per-test cap {self.cap:g} s); the watchdog "
                                    f"of scripts/gpu_tests_plugin.py ended the process", seconds)
            path = getattr(self.config.option, "xmlpath", None)
            if path:
                try:
                    write_junit(path, self.results)
                    print(f"gpu_tests_plugin: wrote {path}", file=_TERMINAL, flush=True)
                except Exception as e:  # pragma: no cover - the process ends anyway
                    print(f"gpu_tests_plugin: could not write {path}: {e}", file=_TERMINAL)
            counts = {}
            for outcome, _, _ in self.results.values():
                counts[outcome] = counts.get(outcome, 0) + 1
            print("gpu_tests_plugin: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                  + f" (of the tests run); ended by the watchdog on {nodeid}", file=_TERMINAL,
                  flush=True)
            os._exit(1)


def _names(nodeid):
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [nodeid]
    module = path[:-3].replace("/", ".") if path.endswith(".py") else path
    return ".".join([module] + parts[:-1]), parts[-1]


def write_junit(path, results):
    """A JUnit XML (pytest's layout) of results: nodeid -> (outcome, message, seconds)."""
    suite = ET.Element("testsuite", name="pytest")
    counts = {"failure": 0, "error": 0, "skipped": 0}
    for nodeid, (outcome, message, seconds) in results.items():
        classname, name = _names(nodeid)
        case = ET.SubElement(suite, "testcase", classname=classname, name=name,
                             time=f"{seconds:.3f}")
        if outcome in counts:
            counts[outcome] += 1
            child = ET.SubElement(case, outcome, message=message.splitlines()[0][:500]
                                  if message else outcome)
            child.text = message
    suite.set("tests", str(len(results)))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", str(counts["error"]))
    suite.set("skipped", str(counts["skipped"]))
    root = ET.Element("testsuites")
    root.append(suite)
    tmp = path + ".tmp"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
