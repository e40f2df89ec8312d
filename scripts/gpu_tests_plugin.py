"""pytest plugin for scripts/gpu_session.sh's test stage (`-p gpu_tests_plugin`, scripts/ on
PYTHONPATH): of the files given, keeps every test of tests/test_cuda.py and of the files named in
FASTLSTM_GPU_TEST_FILES (space-separated base names, e.g. the persistent-path tests), and every
test marked `gpu` anywhere; deselects the rest, so that one run gives one JUnit XML."""

import os


def whole_files():
    return {"test_cuda.py"} | set(os.environ.get("FASTLSTM_GPU_TEST_FILES", "").split())


def runs_in_gpu_session(item) -> bool:
    """Whether the session's test stage keeps this test (tests/conftest.py requires it, in CI,
    of every test skipped for want of a CUDA device)."""
    name = os.path.basename(str(getattr(item, "path", None) or item.fspath))
    return name in whole_files() or item.get_closest_marker("gpu") is not None


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        (keep if runs_in_gpu_session(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
