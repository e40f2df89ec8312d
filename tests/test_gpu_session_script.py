"""CI rehearsal of scripts/gpu_session.sh, the script that spends the rare GPU window, so that a
typo in it shows up here and not there. `--rehearse` runs every stage on the CPU with the GPU-only
steps skipped: the build as a pip dry run plus the import of the extension already built (never a
rebuild or an install), the test stage's selection and JUnit XML with the GPU tests skipping,
the sanitizer verdict parser on sample logs and scripts/sanitize_shapes.py on the CPU, the
benchmark on a tiny config (and the GPU config's expansion), the wheel stage's script. Then the
output folder must hold what the device tool brings back: at most 8 plain files, plain names."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_session.sh")
STAGES = ["build", "test", "sanitize", "bench", "wheel"]

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")),
                                reason="needs bash and coreutils' timeout")


def session(out, budget=None):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("FASTLSTM_WHEEL", None)
    if budget is not None:
        env["FASTLSTM_SESSION_BUDGET"] = str(budget)
    return subprocess.run(["bash", SCRIPT, "--rehearse", "all", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def stage_lines(out):
    with open(os.path.join(out, "summary.txt")) as f:
        lines = f.read().splitlines()
    return lines, {line.split()[0]: line.split()[1] for line in lines[1:-1]}


def test_rehearsal_runs_every_stage_and_fits_the_device_tool(tmp_path):
    extensions = glob.glob(os.path.join(ROOT, "fastlstm", "_C*.so"))
    before = {p: os.stat(p).st_mtime_ns for p in extensions}
    out = tmp_path / "gpu_out"
    r = session(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

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

    # test: one JUnit XML, the GPU tests collected and skipping here
    suite = ET.parse(out / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) > 0 and int(suite.get("failures")) == 0
    assert int(suite.get("errors")) == 0
    # sanitize: the verdict parser's self-test ran and agreed on every sample
    log = (out / "session.log").read_text()
    assert re.search(r"sanitizer_verdict self-test: (\d+) of \1 as expected", log), log[-2000:]
    assert "sanitize_shapes: all" in log
    # bench: complete JSON with the per-step latency, and its table
    payload = json.loads((out / next(n for n in names if n.endswith(".json"))).read_text())
    assert payload["run"]["tf32"] is False and "stopped" not in payload["run"]
    assert len(payload["results"]) == payload["run"]["jobs"] > 0
    assert payload["per_step"] and all("per_step_us" in p for p in payload["per_step"])
    assert "Per-step latency" in (out / next(n for n in names if n.endswith(".md"))).read_text()
    assert re.search(r"gpu_session.json on cuda: \d+ jobs", log)

    # Nothing was rebuilt or reinstalled.
    assert {p: os.stat(p).st_mtime_ns for p in extensions} == before


def test_out_of_time_stages_fail_and_are_still_reported(tmp_path):
    out = tmp_path / "gpu_out"
    r = session(out, budget=1)
    assert r.returncode == 1, r.stdout + r.stderr
    lines, verdicts = stage_lines(out)
    assert verdicts == {"build": "FAIL", "test": "FAIL", "sanitize": "FAIL", "bench": "FAIL",
                        "wheel": "SKIP"}, "\n".join(lines)
    assert sorted(os.listdir(out)) == ["session.log", "summary.txt"]
