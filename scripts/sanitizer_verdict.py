"""The verdict on one compute-sanitizer log, from its summary line, for scripts/gpu_session.sh.

    python scripts/sanitizer_verdict.py TOOL LOG [RC]   prints "PASS: ..." or "FAIL: ...",
                                                         exits 0 or 1
    python scripts/sanitizer_verdict.py --self-test     the parser on sample logs (pass, fail,
                                                         missing line, ...), exits 1 on a mismatch
    python scripts/sanitizer_verdict.py --filter-covers SUBSTRING SO...
                                                         whether compute-sanitizer's kernel filter
                                                         `--kernel-name kns=SUBSTRING` takes every
                                                         kernel of the extension SO (see below)

PASS needs all of: the tool's summary line ("ERROR SUMMARY: 0 errors" for memcheck, synccheck and
initcheck; "RACECHECK SUMMARY: 0 hazards" for racecheck), every such line at zero (a program that
starts others prints one each), the program's completion line ("sanitize_shapes: all N cases
ok"), and exit status 0 when given. A missing summary line is a FAIL, never a pass: the
sanitizer crashed, was killed by the stage's timeout, refused the device, or rejected its
options (a wrong kernel-filter syntax says so: "the sanitizer rejected its command line").
A case past its cap (scripts/sanitize_shapes.py --case-cap) is named from the program's last
"case K/N ...: start" line.

The kernel filter: gpu_session.sh instruments only fastlstm's kernels (`--kernel-name
kns=fastlstm`, kernel_substring: a kernel is checked when its mangled name contains the text).
A filter that matches nothing would check nothing and pass, so --filter-covers reads the
kernels' names from the built extension (every __global__ function has a host launch stub,
`__device_stub__<mangled kernel name>`, in the .so) and fails unless each contains SUBSTRING.
"""

import os
import re
import sys

SUMMARY = {
    "memcheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "synccheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "initcheck": re.compile(r"ERROR SUMMARY: (\d+) errors?"),
    "racecheck": re.compile(r"RACECHECK SUMMARY: (\d+) hazards?"),
}
DONE = re.compile(r"sanitize_shapes: all \d+ cases ok")
# compute-sanitizer's own complaints about its command line (a line naming an option).
REJECTED = re.compile(r"^.*((unrecogni[sz]ed|unknown|invalid|ambiguous|missing)\b.*\boption|"
                      r"\boption\b.*\b(requires|invalid|not supported|unknown)|"
                      r"usage: compute-sanitizer).*$", re.IGNORECASE | re.MULTILINE)
CASE_START = re.compile(r"^sanitize_shapes: case (\d+/\d+ .*): start$", re.MULTILINE)
# A mangled name's identifiers are length-prefixed: "_Z65__device_stub__ZN8fastlstm...",
# "_ZZL101__device_stub__...".
STUB = re.compile(rb"(\d+)(__device_stub__[A-Za-z0-9_]+)")
REFUSED = ("Device not supported", "Target application terminated before first instrumented "
           "API call", "Unable to find injection library")


def verdict(tool, text, rc=None):
    """(passed, one-line reason)."""
    if tool not in SUMMARY:
        return False, f"unknown tool {tool!r}"
    counts = [int(m.group(1)) for m in SUMMARY[tool].finditer(text)]
    if not counts:
        rejected = REJECTED.search(text)
        if rejected:
            return False, (f"no summary line: the sanitizer rejected its command line "
                           f"({rejected.group(0).strip()[:160]})")
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
        started = CASE_START.findall(text)
        where = f"; last case started: {started[-1]}" if started else ""
        if "Timeout (" in text and started:
            where = f"; case {started[-1]} exceeded its cap"
        return False, (f"{line}, but the program did not finish (no 'cases ok' line; rc={rc})"
                       + where)
    if rc not in (None, 0):
        return False, f"{line}, but exit status {rc}"
    return True, f"{line} {'hazards' if tool == 'racecheck' else 'errors'}"


OK_RUN = ("sanitize_shapes: case 1/6 step T=7 B=5: start\nok step T=7 B=5\n"
          "sanitize_shapes: all 6 cases ok on cuda\n")
SAMPLES = [  # (tool, log, rc, expected pass[, text the reason must hold])
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
    # a kernel-filter syntax the tool does not take
    ("memcheck", "========= Error: Invalid value 'kn=fastlstm' for option --kernel-name\n",
     1, False, "rejected its command line"),
    ("racecheck", "unrecognised option '--kernel-nam'\n", 1, False, "rejected its command line"),
    # a case past its cap: faulthandler ended the program, the tool still summed up
    ("memcheck", "sanitize_shapes: case 1/6 step T=7 B=5: start\nok step T=7 B=5\n"
     "sanitize_shapes: case 2/6 cluster T=6 B=4: start\nTimeout (0:00:20)!\n"
     "========= ERROR SUMMARY: 0 errors\n", 1, False, "case 2/6 cluster T=6 B=4 exceeded its cap"),
]


def kernel_names(path):
    """The mangled names of the kernels whose launch stubs (__device_stub__ + the kernel's
    mangled name without its leading underscore) are named in the shared library at path."""
    with open(path, "rb") as f:
        data = f.read()
    names = set()
    for m in STUB.finditer(data):
        stub = m.group(2)[:int(m.group(1))].decode()
        if len(stub) > len("__device_stub__"):
            names.add("_" + stub[len("__device_stub__"):])
    return sorted(names)


def filter_covers(substring, paths):
    """(ok, reason): whether kns=substring takes every kernel of the libraries."""
    names, missed = 0, []
    for path in paths:
        found = kernel_names(path)
        names += len(found)
        missed += [f"{os.path.basename(path)}: {n[:120]}" for n in found if substring not in n]
    if not names:
        return False, (f"no kernel launch stub (__device_stub__) in {', '.join(paths)}: built "
                       f"without CUDA? the filter kns={substring} cannot be checked")
    if missed:
        return False, (f"kns={substring} misses {len(missed)} of {names} kernels, which would "
                       f"run unchecked: " + "; ".join(missed[:5]))
    return True, f"kns={substring} takes all {names} kernels of {', '.join(paths)}"


def self_test():
    bad = 0
    for tool, text, rc, want, *reason in SAMPLES:
        got, why = verdict(tool, text, rc)
        ok = got == want and all(r in why for r in reason)
        bad += not ok
        print(f"{'ok  ' if ok else 'BAD '} {tool:9s} expect {'PASS' if want else 'FAIL'}: "
              f"{'PASS' if got else 'FAIL'}: {why}")
    print(f"sanitizer_verdict self-test: {len(SAMPLES) - bad} of {len(SAMPLES)} as expected")
    return 1 if bad else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if argv[:1] == ["--filter-covers"] and len(argv) >= 3:
        ok, why = filter_covers(argv[1], argv[2:])
        print(f"kernel filter {'PASS' if ok else 'FAIL'}: {why}")
        return 0 if ok else 1
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
