"""The rule of tests/conftest.py for the benchmark suite's tests: under CI=true a skip fails
unless the machine lacks the hardware ("needs a CUDA device")."""

import importlib.util
import os

_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "conftest.py")
_spec = importlib.util.spec_from_file_location("fastlstm_tests_conftest", _path)
_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rules)

pytest_runtest_makereport = _rules.pytest_runtest_makereport
pytest_make_collect_report = _rules.pytest_make_collect_report
