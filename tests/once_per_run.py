"""Expensive module fixtures set up once per pytest run, pytest-xdist workers included.

make test runs pytest-xdist (`-n auto`, --dist load): every worker that draws a test of a module
sets that module's fixtures up again. For a fixture that launches processes (the GPU session's
rehearsals, the FSDP ranks) that doubles the work and loads the machine while it runs.
(`--dist loadgroup` would keep a module on one worker, but pytest-xdist 3.8 marks the groups in
item._nodeid, which pytest 9 no longer reads.)

    folder, owner = shared_folder(tmp_path_factory, "fsdp")
    if owner:
        ...write the results under folder..., then mark_done(folder, "runs")
    else:
        wait_done(folder, "runs", timeout_s=300)

The first worker to create the folder is its owner; the others wait for the owner's marks.
Outside pytest-xdist every fixture is its own owner of a fresh folder.
"""

import json
import os
import time


def distributed():
    """Whether this process is a pytest-xdist worker (other workers may read what it owns)."""
    return os.environ.get("PYTEST_XDIST_WORKER") is not None


def shared_folder(tmp_path_factory, name):
    """(folder, owner): a folder all of this run's workers see, and whether this one made it."""
    if not distributed():
        return tmp_path_factory.mktemp(name), True
    # Each worker's base temporary folder lies in the run's own; that one is shared.
    folder = tmp_path_factory.getbasetemp().parent / f"shared_{name}"
    try:
        folder.mkdir()
        return folder, True
    except FileExistsError:
        return folder, False


def mark_done(folder, what, payload=None):
    """The owner: what is ready (payload: anything json can write, for wait_done to return)."""
    tmp = folder / f".{what}.done.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, folder / f"{what}.done")    # whole, or not there


def wait_done(folder, what, timeout_s):
    """The others: waits for mark_done(folder, what) and returns its payload."""
    done = folder / f"{what}.done"
    deadline = time.monotonic() + timeout_s
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}: the worker that owns {folder.name} did not write it "
                               f"within {timeout_s} s")
        time.sleep(0.2)
    return json.loads(done.read_text())
