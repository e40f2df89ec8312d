"""pytest plugin for scripts/gpu_session.sh's test stage (`-p gpu_tests_plugin`, scripts/ on
PYTHONPATH): of the files given, keeps every test of tests/test_cuda.py and of the files named in
FASTLSTM_GPU_TEST_FILES (space-separated base names, e.g. the persistent-path tests), and every
test marked `gpu` anywhere; deselects the rest, so that one run gives one JUnit XML."""

import os


def whole_files():
    return {"test_cuda.py"} | set(os.environ.get("FASTLSTM_GPU_TEST_FILES", "").split())


def pytest_collection_modifyitems(config, items):
    keep_files = whole_files()
    keep, drop = [], []
    for item in items:
        name = os.path.basename(str(getattr(item, "path", None) or item.fspath))
        (keep if name in keep_files or item.get_closest_marker("gpu") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
