"""No silent skips in CI.

A skip hides a broken test as well as a missing GPU: `pytest.importorskip("onnx")` skips the
whole ONNX module when onnx fails to import, and the run stays green. Under CI=true (set by
the CI runner), every skip fails, at collection or at run time, unless its reason says that
the machine lacks the hardware (ALLOWED_SKIPS). Missing test dependencies then fail CI.

A test skipped for want of a CUDA device must be one that scripts/gpu_session.sh's test stage
runs (marked `gpu`, or in tests/test_cuda.py): otherwise no machine ever runs it. Under CI=true
such a skip fails too, naming the mark.

benchmarks/conftest.py applies the same rules to the benchmark suite's tests.
Outside CI nothing changes: skips stay skips, with their reasons (pytest -rs).
"""

import functools
import importlib.util
import os

# Keras 3 reads its backend once, at import: fastlstm.keras needs torch's (tests/test_keras.py,
# and the docs' check that fastlstm.keras.LSTM exists).
os.environ.setdefault("KERAS_BACKEND", "torch")
# A CPU layer call that finds its cores contended runs on one thread for a while
# (csrc/cpu/contention.h). pytest-xdist's workers contend with each other, so the tests that
# count a call's row groups or splits would depend on timing: the suite runs with it off, and
# tests/test_cpu_contention.py turns it on.
os.environ.setdefault("FASTLSTM_CPU_CONTENTION", "off")

import pytest

STRICT = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")

# Reasons (prefixes) a skip may give in CI: hardware this machine does not have.
ALLOWED_SKIPS = (
    "needs a CUDA device",   # GPU tests on a machine without a GPU
    "CPU lacks ",            # a CPU instruction-set variant (tests/test_cpu_isa.py)
    "needs a CUDA build",    # SASS checks on a machine without nvcc (tests/test_sass.py; CI
                             # has nvcc and .ci/run then requires the CUDA build)
)


def skip_reason(longrepr) -> str:
    msg = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else \
        str(longrepr)
    return msg[len("Skipped: "):] if msg.startswith("Skipped: ") else msg


@functools.lru_cache(maxsize=1)
def _gpu_session_plugin():
    """scripts/gpu_tests_plugin.py, the GPU session's test selection."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                        "gpu_tests_plugin.py")
    spec = importlib.util.spec_from_file_location("fastlstm_gpu_tests_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fail_disallowed_skip(report, item=None) -> None:
    if not STRICT or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report.longrepr)
    if reason.startswith(ALLOWED_SKIPS):
        if (item is not None and reason.startswith("needs a CUDA device")
                and not _gpu_session_plugin().runs_in_gpu_session(item)):
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} needs a CUDA device, but the GPU session "
                               f"(scripts/gpu_session.sh's test stage) would not run it: mark it "
                               f"@pytest.mark.gpu (or put it in tests/test_cuda.py)")
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, which allows only skips for missing hardware "
                       f"({', '.join(repr(a) for a in ALLOWED_SKIPS)}): {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    fail_disallowed_skip(outcome.get_result(), item)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    fail_disallowed_skip(outcome.get_result())


def pytest_configure(config):
    # make test runs one pytest-xdist worker per core. torch would give each worker a thread per
    # core too, and the CPU backend's threads wait for each other at every layer's end, so each
    # worker gets its share of the cores: at least 2, so that the default tests still split a
    # layer's rows across threads (tests/test_cpu_partition.py sets its own counts).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch
        torch.set_num_threads(max(2, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture
def threads():
    """threads(n): torch.set_num_threads(n) for the test, restored after."""
    import torch
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# --wheel-subset: only the tests of tests/wheel_subset.py (CI's clean wheel venvs);
# --wheel-subset-core: the same without the entries of SHARED_OBJECT_FILES (tests/wheel_subset.py).
def pytest_addoption(parser):
    parser.addoption("--wheel-subset", action="store_true",
                     help="run only the parity subset of tests/wheel_subset.py")
    parser.addoption("--wheel-subset-core", action="store_true",
                     help="the parity subset without the emulated CUDA kernels' tests")


def pytest_collection_modifyitems(config, items):
    select_wheel_subset(config, items)
    slow_modules_first(items)


def slow_modules_first(items):
    """The modules that hold a test marked slow run first, each module's tests in their order
    (module-scoped fixtures are set up once): pytest-xdist hands the workers tests in this
    order, so the long ones start early instead of leaving one worker busy at the end."""
    slow = {item.module.__name__ for item in items
            if item.get_closest_marker("slow") is not None and hasattr(item, "module")}
    items.sort(key=lambda item: getattr(getattr(item, "module", None), "__name__", "") not in slow)


def select_wheel_subset(config, items):
    core = config.getoption("--wheel-subset-core")
    if not (config.getoption("--wheel-subset") or core):
        return
    import re
    from wheel_subset import SHARED_OBJECT_FILES, WHEEL_SUBSET
    if core:
        WHEEL_SUBSET = [e for e in WHEEL_SUBSET if e[0] not in SHARED_OBJECT_FILES]
    chosen, used = [], set()
    for item in items:
        file = os.path.basename(str(item.fspath))
        for k, (entry_file, pattern) in enumerate(WHEEL_SUBSET):
            if file == entry_file and (pattern is None or re.match(pattern, item.name)):
                chosen.append(item)
                used.add(k)
                break
    unused = [WHEEL_SUBSET[k] for k in range(len(WHEEL_SUBSET)) if k not in used]
    if unused:
        raise pytest.UsageError(f"tests/wheel_subset.py: these entries select no test: {unused}")
    keep = set(chosen)
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = chosen
