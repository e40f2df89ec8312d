"""The test stage's groups (scripts/gpu_session.sh) into one JUnit XML and one summary line.

    python scripts/junit_groups.py --out junit.xml NAME:RC:CAP:JUNIT:LOG ...

Each group ran in a pytest process of its own (exit status RC, under a cap of CAP seconds,
`timeout -s INT`), writing JUNIT and LOG. The merged file holds one <testsuite name=NAME> per
group. What a group's XML cannot say is added as an error test case: a group without XML (killed
after its cap, or never started), the test a SIGINT cap interrupted (the plugin's
"gpu_tests_plugin: INTERRUPTED <nodeid>" line), so that every hang is a failure with a name.
Prints "<totals>; <group>: <outcome>; ..." and exits 0 only when every group passed (exit
status 0: its tests passed or skipped).
"""

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET

INTERRUPTED = re.compile(r"gpu_tests_plugin: INTERRUPTED (\S+)")
HUNG = re.compile(r"gpu_tests_plugin: HUNG (\S+)")


def _case(suite, classname, name, kind, message):
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    child = ET.SubElement(case, kind, message=message[:500])
    child.text = message
    return case


def _split(nodeid):
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [nodeid]
    module = path[:-3].replace("/", ".") if path.endswith(".py") else path
    return ".".join([module] + parts[:-1]), parts[-1]


def outcomes(suite):
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in suite.iter("testcase"):
        tags = {child.tag for child in case}
        if "failure" in tags:
            counts["failed"] += 1
        elif "error" in tags:
            counts["errors"] += 1
        elif "skipped" in tags:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def describe(counts):
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no tests"


def merge(groups, out, require_passed=False):
    root = ET.Element("testsuites")
    totals = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    parts, ok = [], True
    for spec in groups:
        name, rc, cap, junit, log = spec.split(":", 4)
        notrun = rc == "notrun"
        rc = -1 if notrun else int(rc)
        text = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                text = f.read()
        suite = None
        if os.path.exists(junit):
            try:
                parsed = ET.parse(junit).getroot()
                suites = [parsed] if parsed.tag == "testsuite" else list(parsed.iter("testsuite"))
                suite = suites[0] if suites else None
                for extra in suites[1:]:
                    suite.extend(list(extra))
            except ET.ParseError as e:
                text += f"\n(unreadable JUnit XML: {e})"
        if suite is None:
            suite = ET.Element("testsuite")
        suite.set("name", name)
        notes = []
        hung = HUNG.search(text)
        interrupted = INTERRUPTED.search(text)
        # pytest writes a nameless <testcase/> for the test a KeyboardInterrupt stopped: not a
        # pass; replaced by the error below when the plugin named it.
        for case in [c for c in suite if c.tag == "testcase" and not c.get("name")]:
            suite.remove(case)
        names = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
        if interrupted and _split(interrupted.group(1)) not in names:
            _case(suite, *_split(interrupted.group(1)), "error",
                  f"{interrupted.group(1)}: interrupted by its group's {cap} s cap (SIGINT)")
        if notrun:
            _case(suite, f"gpu_session.{name}", "(group)", "error",
                  f"group {name}: not run, no time left")
        elif not os.path.exists(junit):
            _case(suite, f"gpu_session.{name}", "(group)", "error",
                  f"group {name}: no JUnit XML (pytest exit status {rc}"
                  + (", killed after its cap's SIGINT" if rc == 137 else "") + ")")
        if not hung:
            # The watchdog's own JUnit entry names the hung test too (its log line is the
            # first thing it writes, but the JUnit XML is what the session keeps).
            for case in suite.iter("testcase"):
                failure = case.find("failure")
                if failure is not None and ": hung: " in (failure.get("message") or ""):
                    hung = re.match(r"(\S+): hung: ", failure.get("message"))
                    break
        counts = outcomes(suite)
        for k in totals:
            totals[k] += counts[k]
        for attr, key in (("tests", None), ("failures", "failed"), ("errors", "errors"),
                          ("skipped", "skipped")):
            suite.set(attr, str(sum(counts.values()) if key is None else counts[key]))
        root.append(suite)
        if notrun:
            notes.append("not run: no time left")
        elif rc == 124:
            notes.append(f"cut by its {cap} s cap (SIGINT)"
                         + (f" in {interrupted.group(1)}" if interrupted else ""))
        elif rc == 137:
            notes.append(f"killed after its {cap} s cap")
        elif hung:
            notes.append(f"hung in {hung.group(1)}: ended by the per-test guard's watchdog")
        elif rc not in (0, 1):
            notes.append(f"pytest exit status {rc}")
        if rc != 0 or counts["failed"] or counts["errors"]:
            ok = False
        parts.append(f"{name}: {describe(counts)}" + (f" ({'; '.join(notes)})" if notes else ""))
    tmp = out + ".tmp"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, out)
    n = sum(totals.values())
    if require_passed and not totals["passed"]:
        ok = False
        parts.append("no test passed")
    return ok, totals, f"{n} tests: {describe(totals)}; " + "; ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--require-passed", action="store_true",
                   help="fail when no test passed (on the GPU machine: no GPU was seen)")
    p.add_argument("groups", nargs="*", help="NAME:RC:CAP:JUNIT:LOG (RC: notrun when not run)")
    args = p.parse_args(argv)
    ok, _, line = merge(args.groups, args.out, args.require_passed)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
