"""Object files shared between the wheel flavours' builds (setup.py loads this file).

Each flavour (cu13, cu12, cpu) compiles into its own build/temp-FLAVOUR with torch's ninja
build. The CPU sources are compiled with the same command in all three but for the CUDA include
folders (setup.py defines USE_CUDA for csrc/cuda's sources only), so one flavour's object of a
CPU source is the object another flavour would compile when

  - ninja finds it up to date in its own folder (`ninja -n`: its command, its source and every
    header unchanged since it was compiled; only objects of that folder's last build count);
  - the two folders' compile commands (build.ninja: cxx, cflags, post_cflags) are equal once
    each one's CUDA include folders (recorded in OBJECTS_RECORD) are taken out;
  - no header it was compiled from (`ninja -t deps`) lies in a CUDA include folder of either
    flavour, and none could be shadowed by a file of the same name in one of this flavour's
    CUDA include folders.

Such an object is linked from where it is instead of being compiled again. The probe source
(csrc/glibc_compat.cpp, a few lines) is always compiled first: its compile writes this flavour's
build.ninja, whose command is the one compared.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

OBJECTS_RECORD = "fastlstm_objects.json"  # in each build folder: its CUDA include folders


def ninja_file(build_dir):
    """(top-level variables, {absolute source: object} of its compile edges) of build.ninja."""
    variables, edges = {}, {}
    with open(os.path.join(build_dir, "build.ninja")) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^(\w+) = (.*)$", line)
            if m:
                variables[m.group(1)] = m.group(2)
            # (a path with a space or colon is written with ninja's $ escapes: never shared)
            m = re.match(r"^build ([^ $:]+): (compile|cuda_compile) ([^ $]+)$", line)
            if m:
                edges[m.group(3)] = m.group(1)
    return variables, edges


def compile_command(variables, cuda_dirs):
    """The host compiler's command in a build.ninja, its CUDA include folders taken out."""
    drop = {"-I" + d for d in cuda_dirs}
    return [variables.get("cxx")] + [t for t in shlex.split(variables.get("cflags", "")) +
                                     shlex.split(variables.get("post_cflags", ""))
                                     if t not in drop]


def ninja_exe():
    return shutil.which("ninja") or os.path.join(os.path.dirname(sys.executable), "ninja")


def object_headers(build_dir, obj):
    """The files ninja recorded obj as compiled from, or None without a valid record."""
    out = subprocess.run([ninja_exe(), "-C", build_dir, "-t", "deps", obj],
                         capture_output=True, text=True).stdout.splitlines()
    if not out or not out[0].rstrip().endswith("(VALID)"):
        return None
    return [line.strip() for line in out[1:] if line.strip()] or None


def up_to_date(build_dir, obj):
    r = subprocess.run([ninja_exe(), "-C", build_dir, "-n", obj], capture_output=True,
                       text=True)
    return r.returncode == 0 and "no work to do" in r.stdout


def why_not_shared(donor, obj, all_cuda_dirs, our_cuda_dirs):
    """Why donor's obj is not this flavour's object too, or "" when it is."""
    if not up_to_date(donor, obj):
        return "out of date there"
    headers = object_headers(donor, obj)
    if headers is None:
        return "no record of its headers"
    for h in headers:
        h = os.path.abspath(h)
        if any(h.startswith(os.path.abspath(d) + os.sep) for d in all_cuda_dirs):
            return f"compiled from a CUDA header ({h})"
        parts = h.split(os.sep)
        for d in our_cuda_dirs:
            for k in range(1, min(5, len(parts))):
                twin = os.path.join(d, *parts[-k:])
                if os.path.exists(twin):
                    return f"{h} could be shadowed by {twin}"
    return ""


def compile_sharing_objects(compile, sources, output_dir, *args, shareable, probe,
                            cuda_dirs, log=print, **kwargs):
    """torch's ninja compile (BuildExtension's compiler.compile) of sources into output_dir,
    taking each shareable source's object from a sibling folder (output_dir/../temp-*) where
    it is this flavour's object too. shareable: absolute paths of the CPU sources; probe: the
    source always compiled; cuda_dirs: this flavour's CUDA include folders. Returns the objects
    in the order of sources."""
    output_dir = os.path.abspath(output_dir)
    ours_shareable = [s for s in sources if os.path.abspath(s) in shareable]
    probes = [s for s in sources if os.path.abspath(s) == os.path.abspath(probe)]
    taken = {}  # source -> object in another folder
    if ours_shareable and probes:
        compile(probes, output_dir, *args, **kwargs)
        ours = compile_command(ninja_file(output_dir)[0], cuda_dirs)
        for donor in sorted(glob.glob(os.path.join(os.path.dirname(output_dir), "temp-*"))):
            record = os.path.join(donor, OBJECTS_RECORD)
            if donor == output_dir or not os.path.exists(record):
                continue
            with open(record) as f:
                donor_cuda_dirs = json.load(f)["cuda_include_dirs"]
            variables, edges = ninja_file(donor)
            name = os.path.basename(donor)
            if compile_command(variables, donor_cuda_dirs) != ours:
                log(f"fastlstm: build/{name}: another compile command; its objects are not "
                    "reused")
                continue
            for s in ours_shareable:
                obj = edges.get(os.path.abspath(s))
                if s in taken or obj is None:
                    continue
                why = why_not_shared(donor, obj, set(donor_cuda_dirs) | set(cuda_dirs),
                                     cuda_dirs)
                if why:
                    log(f"fastlstm: {s}: not reused from build/{name}: {why}")
                else:
                    taken[s] = obj
    rest = [s for s in sources if s not in taken]
    compiled = iter(compile(rest, output_dir, *args, **kwargs))
    with open(os.path.join(output_dir, OBJECTS_RECORD), "w") as f:
        json.dump({"cuda_include_dirs": list(cuda_dirs),
                   "reused": {s: taken[s] for s in sorted(taken)}}, f, indent=1)
    if taken:
        log(f"fastlstm: linked {len(taken)} CPU objects of other flavours' folders (equal "
            f"compile command and headers; listed in {OBJECTS_RECORD}), compiled {len(rest)} "
            "sources")
    return [taken[s] if s in taken else next(compiled) for s in sources]
