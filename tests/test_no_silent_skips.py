"""tests/conftest.py: under CI=true a skip fails unless the machine lacks the hardware.
Checked on a throwaway test directory run by pytest in a subprocess, with and without CI."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))

SAMPLE = '''
import pytest

def test_passes():
    assert True

@pytest.mark.gpu
def test_no_gpu():
    pytest.skip("needs a CUDA device")

def test_no_gpu_unmarked():
    pytest.skip("needs a CUDA device")

def test_no_isa():
    pytest.skip("CPU lacks avx512: no avx512bw in /proc/cpuinfo")

def test_other_skip():
    pytest.skip("something else is missing")

@pytest.mark.skipif(True, reason="needs the network")
def test_skipif():
    pass
'''
SAMPLE_MISSING_DEP = '''
import pytest
pytest.importorskip("fastlstm_no_such_module_for_tests", reason="needs a test dependency")

def test_never_collected():
    pass
'''


def run_sample(tmp_path, ci, files):
    root = tmp_path / ("ci" if ci else "local")
    root.mkdir()
    shutil.copy(os.path.join(HERE, "conftest.py"), root / "conftest.py")
    # conftest.py reads the GPU session's test selection from ../scripts/.
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(os.path.join(HERE, "..", "scripts", "gpu_tests_plugin.py"), tmp_path / "scripts")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    for name, text in files.items():
        (root / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    report = root / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           f"--rootdir={root}", f"--junitxml={report}", str(root)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name") or case.get("classname")] = kinds[0] if kinds else "passed"
    return proc.returncode, outcomes, proc.stdout


def test_ci_fails_skips_other_than_missing_hardware(tmp_path):
    rc, outcomes, out = run_sample(tmp_path, ci=True, files={"test_sample.py": SAMPLE})
    assert rc != 0
    assert outcomes["test_passes"] == "passed"
    assert outcomes["test_no_gpu"] == "skipped"
    # Skipped for want of a GPU, but no GPU session would run it either.
    assert outcomes["test_no_gpu_unmarked"] == "failure"
    assert "mark it @pytest.mark.gpu" in out
    assert outcomes["test_no_isa"] == "skipped"
    assert outcomes["test_other_skip"] == "failure"
    assert outcomes["test_skipif"] in ("failure", "error")
    assert "something else is missing" in out and "needs the network" in out


def test_ci_fails_a_module_whose_dependency_is_missing(tmp_path):
    """importorskip at module level: a collection error (pytest then stops the run)."""
    rc, outcomes, out = run_sample(tmp_path, ci=True,
                                   files={"test_missing_dep.py": SAMPLE_MISSING_DEP})
    assert rc != 0
    assert list(outcomes.values()) == ["error"], outcomes
    assert "needs a test dependency" in out and "CI=true" in out


def test_outside_ci_skips_stay_skips(tmp_path):
    rc, outcomes, out = run_sample(tmp_path, ci=False, files={
        "test_sample.py": SAMPLE, "test_missing_dep.py": SAMPLE_MISSING_DEP})
    assert rc == 0
    assert "needs a test dependency" in out
    assert outcomes["test_passes"] == "passed"
    for name in ("test_no_gpu", "test_no_gpu_unmarked", "test_no_isa", "test_other_skip",
                 "test_skipif"):
        assert outcomes[name] == "skipped", (name, outcomes)

