"""The bench stage's status (scripts/gpu_session.sh), from the benchmark's JSON and the exit
status of `timeout -k 30 CAP python -m benchmarks --incremental --time-limit LIMIT ...`.

    python scripts/bench_status.py JSON RC      prints "PASS|FAIL <status>: <details>"

The suite rewrites its JSON after every job (--incremental), so a cut run keeps what it measured.
At its time limit it ends after the job in progress and writes every output, marking the JSON
"stopped by its L s time limit after N of M jobs" (exit status 0); on the cap's SIGTERM, the
backstop, it does the same ("stopped by SIGTERM ..."), but `timeout` then returns 124 although
the run stopped cleanly, so the exit status alone cannot judge it. The status is one of
  finished                      every job ran (exit status 0);
  cut with N of M workloads     its time limit or the cap stopped it cleanly after N of the M
                                jobs (a job: one workload in one mode); PASS, the N are kept;
  failed                        a job raised, no JSON, the run was killed inside a job (the job
                                in progress did not end within the kill grace: 137, or a JSON
                                still marked "partial"), or any other exit status.
"""

import json
import sys


def status(payload, rc):
    """(passed, line) for a loaded JSON payload (None: none written) and the exit status."""
    if payload is None:
        return False, f"failed: no JSON written (rc={rc})"
    run, results = payload["run"], payload["results"]
    done, total = len(results), run.get("jobs", len(results))
    bad = sum("error" in r for r in results)
    rows = len(payload.get("per_step", []))
    stopped = run.get("stopped", "")
    tail = f"{rows} per-step rows"
    if bad:
        return False, (f"failed: {bad} of {done} jobs raised (rc={rc}); {done} of {total} ran; "
                       f"{tail}")
    if rc == 0 and not stopped and done == total:
        return True, f"finished: {done} of {total} jobs; {tail}"
    if rc in (0, 124) and stopped.startswith("stopped by"):
        return True, (f"cut with {done} of {total} workloads ({stopped}); the JSON and tables "
                      f"keep them; {tail}")
    if stopped.startswith("partial"):
        return False, (f"failed: killed inside a job after {done} of {total} (rc={rc}: it did not "
                       f"end within the kill grace); the JSON keeps the {done}; {tail}")
    return False, f"failed: rc={rc}; {done} of {total} jobs{'; ' + stopped if stopped else ''}"


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as f:
            payload = json.load(f)
    except (OSError, ValueError):
        payload = None
    passed, line = status(payload, int(argv[1]))
    print(f"{'PASS' if passed else 'FAIL'} {line}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
