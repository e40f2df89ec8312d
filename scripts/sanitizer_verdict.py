"""The verdict on one compute-sanitizer log, from its summary line, for scripts/gpu_session.sh.

    python scripts/sanitizer_verdict.py TOOL LOG [RC]   prints "PASS: ..." or "FAIL: ...",
                                                         exits 0 or 1
    python scripts/sanitizer_verdict.py --self-test     the parser on sample logs (pass, fail,
                                                         missing line, ...), exits 1 on a mismatch

PASS needs all of: the tool's summary line ("ERROR SUMMARY: 0 errors" for memcheck, synccheck and
initcheck; "RACECHECK SUMMARY: 0 hazards" for racecheck), every such line at zero (a program that
starts others prints one each), the program's completion line ("sanitize_shapes: all N cases
ok"), and exit status 0 when given. A missing summary line is a FAIL, never a pass: the
sanitizer crashed, was killed by the stage's timeout, or refused the device.
"""

import re
import sys

SUMMARY = {
    "memcheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "synccheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "initcheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "racecheck": re.compile(r"RACECHECK SUMMARY: (\d+) hazards?"),
}
DONE = re.compile(r"sanitize_shapes: all \d+ cases ok")
REFUSED = ("Device not supported", "Target application terminated before first instrumented "
           "API call", "Unable to find injection library")


def verdict(tool, text, rc=None):
    """(passed, one-line reason)."""
    if tool not in SUMMARY:
        return False, f"unknown tool {tool!r}"
    counts = [int(m.group(1)) for m in SUMMARY[tool].finditer(text)]
    if not counts:
        why = next((r for r in REFUSED if r in text), None)
        if why:
            return False, f"no summary line: the sanitizer could not run ({why})"
        if rc in (124, 137):
            return False, f"no summary line: killed by the stage's timeout (rc={rc})"
        return False, f"no summary line (rc={rc}): the sanitizer did not finish"
    line = SUMMARY[tool].pattern.split(":")[0] + ": " + "+".join(map(str, counts))
    if any(counts):
        return False, f"{line} {'hazards' if tool == 'racecheck' else 'errors'}"
    if not DONE.search(text):
        return False, f"{line}, but the program did not finish (no 'cases ok' line; rc={rc})"
    if rc not in (None, 0):
        return False, f"{line}, but exit status {rc}"
    return True, f"{line} {'hazards' if tool == 'racecheck' else 'errors'}"


OK_RUN = "ok T=7 B=5\nsanitize_shapes: all 6 cases ok on cuda\n"
SAMPLES = [  # (tool, log, rc, expected pass)
    ("memcheck", OK_RUN + "========= ERROR SUMMARY: 0 errors\n", 0, True),
    ("synccheck", OK_RUN + "========= ERROR SUMMARY: 0 errors\n", 0, True),
    ("initcheck", OK_RUN + "========= ERROR SUMMARY: 0 errors\n", None, True),
    ("racecheck", OK_RUN + "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 "
     "warnings)\n", 0, True),
    ("memcheck", "========= Invalid __global__ write of size 4 bytes\n" + OK_RUN
     + "========= ERROR SUMMARY: 3 errors\n", 0, False),
    ("initcheck", OK_RUN + "========= ERROR SUMMARY: 1 error\n", 0, False),
    ("racecheck", OK_RUN + "========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 "
     "warnings)\n", 0, False),
    # racecheck judged by its own line: an ERROR SUMMARY line alone does not pass it
    ("racecheck", OK_RUN + "========= ERROR SUMMARY: 0 errors\n", 0, False),
    ("memcheck", OK_RUN, 0, False),                                  # summary line missing
    ("memcheck", "ok T=7 B=5\n", 124, False),                        # killed by the timeout
    ("memcheck", "========= Error: Device not supported\n", 1, False),
    ("memcheck", "Traceback ...\n========= ERROR SUMMARY: 0 errors\n", 1, False),  # app died
    ("memcheck", OK_RUN + "========= ERROR SUMMARY: 0 errors\n"
     "========= ERROR SUMMARY: 2 errors\n", 0, False),               # two processes, one bad
    ("synccheck", "", None, False),                                  # empty log
]


def self_test():
    bad = 0
    for tool, text, rc, want in SAMPLES:
        got, why = verdict(tool, text, rc)
        ok = got == want
        bad += not ok
        print(f"{'ok  ' if ok else 'BAD '} {tool:9s} expect {'PASS' if want else 'FAIL'}: "
              f"{'PASS' if got else 'FAIL'}: {why}")
    print(f"sanitizer_verdict self-test: {len(SAMPLES) - bad} of {len(SAMPLES)} as expected")
    return 1 if bad else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    tool, path = argv[0], argv[1]
    rc = int(argv[2]) if len(argv) == 3 else None
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError as e:
        text = ""
        print(f"(cannot read {path}: {e})", file=sys.stderr)
    passed, why = verdict(tool, text, rc)
    print(f"{'PASS' if passed else 'FAIL'}: {why}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
