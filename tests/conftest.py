"""No silent skips in CI.

A skip hides a broken test as well as a missing GPU: `pytest.importorskip("onnx")` skips the
whole ONNX module when onnx fails to import, and the run stays green. Under CI=true (set by
the CI runner), every skip fails, at collection or at run time, unless its reason says that
the machine lacks the hardware (ALLOWED_SKIPS). Missing test dependencies then fail CI.

benchmarks/conftest.py applies the same rule to the benchmark suite's tests.
Outside CI nothing changes: skips stay skips, with their reasons (pytest -rs).
"""

import os

import pytest

STRICT = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")

# Reasons (prefixes) a skip may give in CI: hardware this machine does not have.
ALLOWED_SKIPS = (
    "needs a CUDA device",   # GPU tests on a machine without a GPU
    "CPU lacks ",            # a CPU instruction-set variant (tests/test_cpu_isa.py)
)


def skip_reason(longrepr) -> str:
    msg = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else \
        str(longrepr)
    return msg[len("Skipped: "):] if msg.startswith("Skipped: ") else msg


def fail_disallowed_skip(report) -> None:
    if not STRICT or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report.longrepr)
    if reason.startswith(ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, which allows only skips for missing hardware "
                       f"({', '.join(repr(a) for a in ALLOWED_SKIPS)}): {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    fail_disallowed_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    fail_disallowed_skip(outcome.get_result())
