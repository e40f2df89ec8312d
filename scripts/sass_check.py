"""Static checks of the persistent kernels' machine code (SASS), without a GPU.

    python scripts/sass_check.py [BINARY]     (default: the fastlstm/_C*.so that imports)

BINARY is the built library or a cubin. For every persistent and cluster kernel (forward and
backward, every dtype: the cluster path launches the same kernels) it requires:
  - no local memory and no spills (LOCAL and STACK 0, no LDL/STL instructions);
  - no 64-bit integer division: nvcc's subroutine for it holds I2F.U64.RP, and a kernel that
    divides 64-bit indices calls it at every use (the kernels divide in 32 bits,
    csrc/cuda/index_math.cuh);
  - HMMA instructions in the 16-bit kernels (their products run on tensor cores);
  - registers within the occupancy the plans assume: one block of kPersistentThreads (256)
    threads per SM, so at most 65536 / 256 registers a thread;
  - no 16-bit shared-memory loads (LDS.U16) in the 16-bit kernels: their tensor-core operands
    come from zero-padded rows in shared memory (the staged A, the resident weights, the
    cluster's exchange area) as aligned 32-bit words (csrc/cuda/mma_tiles.cuh).
REPORTED_ONLY names checks that are printed without failing the run (none at present).
cuobjdump: on PATH, or the one torch's triton dependency ships.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

PERSISTENT_THREADS = 256       # kPersistentThreads in csrc/cuda/persistent.cuh (GPU build)
REGISTERS_PER_SM = 65536
KERNEL_PATTERN = re.compile(r"persistent_(forward|backward)_kernel")
SIXTEEN_BIT = ("BFloat16", "Half")
REPORTED_ONLY = ()


@dataclass
class Kernel:
    name: str
    registers: int = -1
    stack: int = -1
    local: int = -1
    sass: str = ""
    problems: Dict[str, str] = field(default_factory=dict)


def find_cuobjdump() -> Optional[str]:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "cuobjdump")
        return path if os.path.exists(path) else None
    except ImportError:
        return None


def default_binary() -> str:
    import importlib.util
    return importlib.util.find_spec("fastlstm._C").origin


def read_kernels(binary: str, cuobjdump: str) -> Dict[str, Kernel]:
    """The persistent kernels of binary's sm_90 code (or its only architecture), by name; none
    for a CPU-only build (cuobjdump: "does not contain device code")."""
    run = subprocess.run([cuobjdump, "-res-usage", binary], capture_output=True, text=True)
    if run.returncode != 0 and "does not contain device code" in run.stdout + run.stderr:
        return {}
    run.check_returncode()
    usage = run.stdout
    sass = subprocess.run([cuobjdump, "-sass", binary], capture_output=True, text=True,
                          check=True).stdout
    kernels: Dict[str, Kernel] = {}
    for m in re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)",
                         usage):
        name = m.group(1)
        if KERNEL_PATTERN.search(name):
            kernels[name] = Kernel(name, int(m.group(2)), int(m.group(3)), int(m.group(4)))
    parts = re.split(r"\n\s*Function : (\S+)", sass)
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in kernels:
            kernels[name].sass += body
    return kernels


def check(kernel: Kernel) -> Dict[str, str]:
    """Problem name -> what was found, for one kernel."""
    k, problems = kernel, {}
    if k.local or k.stack or re.search(r"\b(LDL|STL)\b", k.sass):
        problems["local memory or spills"] = f"LOCAL {k.local}, STACK {k.stack}"
    divisions = len(re.findall(r"I2F\.U64\.RP", k.sass))
    if divisions:
        problems["64-bit integer division"] = f"{divisions} I2F.U64.RP (nvcc's division call)"
    sixteen = any(t in k.name for t in SIXTEEN_BIT)
    if sixteen and "HMMA" not in k.sass:
        problems["no tensor-core products"] = "no HMMA in a 16-bit kernel"
    if k.registers * PERSISTENT_THREADS > REGISTERS_PER_SM:
        problems["registers beyond one block per SM"] = \
            f"{k.registers} registers x {PERSISTENT_THREADS} threads > {REGISTERS_PER_SM}"
    narrow = len(re.findall(r"\bLDS\.(U16|S16)\b", k.sass))
    if sixteen and narrow:
        problems["16-bit operand loads"] = f"{narrow} LDS.U16 (want 32-bit LDS or LDSM)"
    return problems


def main(argv: List[str]) -> int:
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        print("sass_check: no cuobjdump (PATH or triton's)", file=sys.stderr)
        return 2
    binary = argv[1] if len(argv) > 1 else default_binary()
    kernels = read_kernels(binary, cuobjdump)
    if not kernels:
        print(f"sass_check: no persistent kernels in {binary} (a CPU-only build?)",
              file=sys.stderr)
        return 2
    failed = False
    for name, kernel in sorted(kernels.items()):
        problems = check(kernel)
        required = {p: v for p, v in problems.items() if p not in REPORTED_ONLY}
        failed |= bool(required)
        verdict = "FAIL" if required else "ok"
        print(f"{verdict:4s} REG {kernel.registers:3d}  {name}")
        for p, v in problems.items():
            print(f"       {'reported: ' if p in REPORTED_ONLY else ''}{p}: {v}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
