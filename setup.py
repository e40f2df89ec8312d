"""Builds fastlstm and its one extension, fastlstm._C.

CPU sources are always built. CUDA sources (csrc/cuda/) are built when a CUDA toolkit and a
CUDA build of torch are present; no GPU is needed. Install with
`pip install --no-build-isolation .` so that the torch already installed is the one built against.

The extension is built against PyTorch's stable ABI (TORCH_TARGET_VERSION 2.10) and Python's
limited API (3.10): one build loads into every torch >= 2.10 on every CPython >= 3.10, so a
wheel is tagged cp310-abi3. `make wheel` builds one (`pip wheel --no-build-isolation
--no-deps`); its version's local tag says what it needs beyond that: +cu13 or +cu12 (a torch
built for that CUDA major version; the CUDA kernels link its runtime and cuBLAS, which torch's
pip dependencies bring) or +cpu (any torch). The CUDA major version is the one torch was built
for (torch.version.cuda), and the toolkit's nvcc must have the same major version (torch's
check). It is also recorded in fastlstm/_build_info.py, which fastlstm/__init__.py checks
against the torch it is imported into before loading the library.

Platform tag: manylinux_2_28 (glibc >= 2.28, as torch's own wheels), on any build machine:
csrc/glibc_compat.cpp binds the few newer glibc symbols to 2.28's versions (see there), and
scripts/wheel_audit.py checks each wheel with auditwheel and objdump.

Environment switches:
  FASTLSTM_FORCE_CPU=1     never build the CUDA sources
  FASTLSTM_FORCE_CUDA=1    fail unless the CUDA sources can be built
  FASTLSTM_CUDA_ARCHS      CUDA architectures, e.g. "9.0" or "8.0;9.0+PTX"; overrides
  TORCH_CUDA_ARCH_LIST     (the same, torch's name). Default: DEFAULT_ARCHS (DEFAULT_ARCHS_CUDA12
                           for FASTLSTM_CUDA_MAJOR=12) for a wheel or when
                           no GPU is visible, else the visible GPU's (torch's default)
  FASTLSTM_CUDA_MAJOR      the CUDA major version to build for (default: torch's). Another one
                           than torch's (12 with torch 2.14.1+cu130) needs a toolkit of that
                           major (CUDA_HOME; scripts/cuda12_toolkit.sh) and replaces torch's
                           nvcc-vs-torch version check by nvcc-vs-FASTLSTM_CUDA_MAJOR: the
                           library uses torch only through its stable C ABI and CUDA only
                           through the runtime and cuBLAS it links (of that major version), so
                           torch's headers serve any CUDA major. `make wheel CUDA=12`.
  FASTLSTM_REUSE_OBJECTS=0 compile every source, even where another flavour's folder in build/
                           has an equal object (see "Object files shared between flavours")
  MAX_JOBS                 parallel compile jobs (default: from cores and free memory)

Object files shared between flavours: each flavour (cu13, cu12, cpu) compiles into its own
build/temp-FLAVOUR, and the CPU sources (csrc/*.cpp, cpu/, simt/, emulated/) are compiled with
the same command in all three except the CUDA include folders: USE_CUDA, which declares the
stable ABI's CUDA entry points, is defined only for csrc/cuda's sources (nvcc's flags, and a
wrapper per host .cpp in build/cuda_host/). So where another flavour's folder holds an up-to-date
object of a CPU source compiled by an equal command and from no CUDA header,
scripts/object_sharing.py links that one instead of compiling it again (the conditions are in
its docstring): `make wheel CUDA=12` after `make test` compiles csrc/cuda's sources only, and
`FASTLSTM_FORCE_CPU=1 make wheel` compiles nothing but csrc/glibc_compat.cpp, the probe whose
command is compared. Each folder's fastlstm_objects.json lists what it took from where.
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"  # sm_80 ... sm_100, plus PTX for the newest
# CUDA 12.4 (scripts/cuda12_toolkit.sh) has no sm_100: sm_80 ... sm_90, plus PTX of sm_90 (which
# the driver compiles for newer GPUs).
DEFAULT_ARCHS_CUDA12 = "8.0;8.6;8.9;9.0+PTX"
VERSION = "0.1.0"
# A wheel is for other machines: it gets DEFAULT_ARCHS even where a GPU is visible.
BUILDING_WHEEL = "bdist_wheel" in sys.argv


def env_flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def find_cuda_home():
    """The toolkit root. torch's guess (the parent of nvcc's folder) breaks when nvcc is a
    launcher outside the toolkit, so prefer CUDA_HOME, then /usr/local/cuda."""
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and os.path.exists(os.path.join(cand, "bin", "nvcc")):
            return cand
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def want_cuda(cuda_sources):
    if env_flag("FASTLSTM_FORCE_CPU"):
        return False
    reasons = []
    if not cuda_sources:
        reasons.append("no CUDA sources under csrc/cuda")
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if find_cuda_home() is None:
        reasons.append("no CUDA toolkit (nvcc) found")
    if reasons and env_flag("FASTLSTM_FORCE_CUDA"):
        raise RuntimeError("FASTLSTM_FORCE_CUDA=1 but " + "; ".join(reasons))
    if reasons:
        print("fastlstm: building CPU only: " + "; ".join(reasons))
    return not reasons


def find_cublas(cuda_home, site, major):
    """(folder, linker flag) of a cuBLAS of CUDA `major` to link: the toolkit's, else the one
    torch's pip dependencies ship (nvidia/cu13/lib for CUDA 13, nvidia/cublas/lib for
    nvidia-cublas-cu12; only the versioned libcublas.so.N there)."""
    if os.path.exists(os.path.join(cuda_home, "lib64", f"libcublas.so.{major}")):
        return os.path.join(cuda_home, "lib64"), "-lcublas"
    for sub in (f"cu{major}", "cublas"):
        lib = os.path.join(site, "nvidia", sub, "lib", f"libcublas.so.{major}")
        if os.path.exists(lib):
            return os.path.dirname(lib), "-l:" + os.path.basename(lib)
    return None, None


def nvcc_major(cuda_home):
    import re
    import subprocess
    out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"release (\d+)\.", out).group(1)


def target_cuda_major():
    """The CUDA major version a CUDA build is for: FASTLSTM_CUDA_MAJOR, else torch's."""
    return os.environ.get("FASTLSTM_CUDA_MAJOR") or (torch.version.cuda or "").split(".")[0]


def allow_other_cuda_major(cuda_home, major):
    """Building for another CUDA major than torch's: torch.utils.cpp_extension refuses an nvcc
    whose major differs from torch.version.cuda's (right for extensions on torch's C++ API,
    whose CUDA types and libraries are torch's). fastlstm reaches torch only through the stable
    C ABI (tests/test_stable_abi.py) and links its own CUDA runtime and cuBLAS of `major`, so
    the check that matters is nvcc's major against `major`, which replaces torch's here."""
    import torch.utils.cpp_extension as ext
    have = nvcc_major(cuda_home)
    if have != major:
        raise RuntimeError(f"FASTLSTM_CUDA_MAJOR={major} but {cuda_home}/bin/nvcc is CUDA {have}")
    print(f"fastlstm: building for CUDA {major} (nvcc {have}) against torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}): its stable-ABI headers only; torch's nvcc check "
          f"replaced by nvcc {have} == FASTLSTM_CUDA_MAJOR {major}")
    ext._check_cuda_version = lambda compiler_name, compiler_version: None


def default_max_jobs():
    """One job per core, and at most one per 3 GiB of free memory (nvcc is hungry)."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free_gib = int(info["MemAvailable"].split()[0]) / 2**20
        by_memory = max(1, int(free_gib // 3))
    except (OSError, KeyError, ValueError):
        by_memory = 1
    return str(max(1, min(os.cpu_count() or 1, by_memory)))


# The oldest torch the extension supports: the stable ABI's target version, 2.10.0.
TORCH_TARGET_VERSION = "0x020a000000000000"
MIN_TORCH = "2.10"
# The oldest CPython: the limited API's version (torch's own floor for py_limited_api builds).
LIMITED_API_TAG = "cp310"
# The oldest glibc: torch's own wheels' floor (csrc/glibc_compat.cpp keeps the library there).
PLATFORM_TAG = f"manylinux_2_28_{platform.machine()}" if sys.platform == "linux" else None
# csrc/glibc_compat.cpp's wrappers; libdl.so.2 for dlsym@GLIBC_2.2.5 on glibc < 2.34.
GLIBC_COMPAT_LINK_FLAGS = ["-Wl,--wrap=dlsym", "-Wl,--wrap=exp",
                           "-Wl,--push-state,--no-as-needed", "-l:libdl.so.2", "-Wl,--pop-state"]


def cuda_major(with_cuda):
    """"13" / "12": the CUDA major version a CUDA build needs torch to be built for; None: CPU."""
    return target_cuda_major() if with_cuda else None


def local_version(with_cuda):
    """cu13 / cu12 / cpu."""
    return "cu" + cuda_major(with_cuda) if with_cuda else "cpu"


def build_info_text(with_cuda):
    return ('"""Written by setup.py at build time: what this build of fastlstm._C needs."""\n\n'
            f"# The CUDA major version of the runtime and cuBLAS it links, which the torch it is\n"
            f"# imported into must be built for (None: CPU only; any torch).\n"
            f"CUDA_MAJOR = {cuda_major(with_cuda)!r}\n"
            f"# The version's local tag: the wheel's name says the same.\n"
            f"LOCAL_TAG = {local_version(with_cuda)!r}\n"
            f"BUILT_WITH_TORCH = {torch.__version__!r}\n")


def make_extension():
    rel = lambda paths: sorted(os.path.relpath(p, HERE) for p in paths)  # noqa: E731
    # csrc/simt/ is the CUDA emulator's runtime and csrc/emulated/ builds csrc/cuda's kernels for
    # the CPU on it (always built, so that every machine runs them in the tests).
    cpu_sources = rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")) +
                      glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")) +
                      glob.glob(os.path.join(HERE, "csrc", "simt", "*.cpp")) +
                      glob.glob(os.path.join(HERE, "csrc", "emulated", "*.cpp")))
    cuda_sources = rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) +
                       glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
    SHAREABLE_SOURCES.update(os.path.abspath(p) for p in cpu_sources if p != PROBE_SOURCE)
    # -fno-trapping-math lets GCC if-convert and vectorise the cell math (as torch builds).
    # -fvisibility=hidden: the library exports PyInit__C only (header-only torch types'
    # inline functions stay private, so `nm -D` shows no c10:: or at:: symbol).
    cxx_flags = ["-O3", "-fopenmp", "-DNDEBUG", "-fno-trapping-math", "-fno-math-errno",
                 "-fvisibility=hidden", "-fvisibility-inlines-hidden"]
    link_flags = ["-fopenmp"] + GLIBC_COMPAT_LINK_FLAGS
    # Any ATen/c10 library header, or a stable API newer than 2.10, is a compile error.
    macros = [("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION)]
    if not want_cuda(cuda_sources):
        return False, CppExtension("fastlstm._C", cpu_sources, define_macros=macros,
                                   extra_compile_args={"cxx": cxx_flags},
                                   extra_link_args=link_flags, py_limited_api=True)

    cuda_home = find_cuda_home()
    os.environ["CUDA_HOME"] = cuda_home
    import torch.utils.cpp_extension as ext
    ext.CUDA_HOME = cuda_home
    major = target_cuda_major()
    if major != torch.version.cuda.split(".")[0]:
        allow_other_cuda_major(cuda_home, major)
    if os.environ.get("FASTLSTM_CUDA_ARCHS"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ["FASTLSTM_CUDA_ARCHS"]
    elif not os.environ.get("TORCH_CUDA_ARCH_LIST") and (
            BUILDING_WHEEL or not torch.cuda.is_available()):
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS_CUDA12 if major == "12" else DEFAULT_ARCHS
    print(f"fastlstm: CUDA architectures {os.environ.get('TORCH_CUDA_ARCH_LIST')}")
    include_dirs = []
    site = os.path.dirname(os.path.dirname(torch.__file__))
    # Headers of the CUDA libraries torch's pip dependencies ship (cuBLAS, if the toolkit lacks it).
    # Only those of the CUDA major built for (torch 2.14.1's nvidia/cu13/include would shadow a
    # CUDA 12 toolkit's headers).
    inc = os.path.join(site, "nvidia", f"cu{major}", "include")
    if os.path.isdir(inc):
        include_dirs.append(inc)
    # cuBLAS explicitly, rather than relying on torch's libraries having loaded it.
    cublas_dir, cublas_flag = find_cublas(cuda_home, site, major)
    if cublas_flag is None:
        print("fastlstm: no libcublas found to link; relying on torch to load it")
    cuda_link_flags = link_flags + ([f"-L{cublas_dir}", cublas_flag] if cublas_flag else [])
    # No --use_fast_math: it turns tanh into tanh.approx.f32 (~5e-4 relative error).
    # USE_CUDA declares the stable ABI's CUDA entry points (stream, cuBLAS handle): for
    # csrc/cuda's sources only (nvcc's flags; the host .cpp files through a wrapper that defines
    # it), so that the CPU sources compile as in the +cpu build (see the module's docstring).
    nvcc_flags = ["-O3", "-DNDEBUG", "-lineinfo", "--expt-relaxed-constexpr", "-std=c++20",
                  "-Xcompiler", "-fvisibility=hidden", "-DUSE_CUDA=1"]
    cuda_sources = [cuda_host_wrapper(p) if p.endswith(".cpp") else p for p in cuda_sources]
    from torch.utils.cpp_extension import include_paths
    CUDA_INCLUDE_DIRS[:] = [os.path.abspath(d) for d in include_dirs + [
        d for d in include_paths(device_type="cuda") if d not in include_paths()]]
    return True, CUDAExtension("fastlstm._C", cpu_sources + cuda_sources,
                               include_dirs=include_dirs, define_macros=macros,
                               extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                               extra_link_args=cuda_link_flags, py_limited_api=True)


def cuda_host_wrapper(path):
    """build/cuda_host/NAME.cpp: csrc/cuda/NAME.cpp with USE_CUDA defined (rewritten only when
    its text changes, so that ninja does not recompile it)."""
    out = os.path.join("build", "cuda_host", os.path.basename(path))
    text = ("// Written by setup.py: a host source of csrc/cuda with USE_CUDA, which the CPU "
            "sources\n// are compiled without (setup.py's docstring).\n#define USE_CUDA 1\n"
            f"#include \"{os.path.join(HERE, path)}\"\n")
    full = os.path.join(HERE, out)
    if not os.path.exists(full) or open(full).read() != text:
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    return out


# Object files shared between flavours: scripts/object_sharing.py (the module's docstring).
PROBE_SOURCE = os.path.join("csrc", "glibc_compat.cpp")  # always compiled: its command is compared
SHAREABLE_SOURCES = set()  # absolute paths of the CPU sources
CUDA_INCLUDE_DIRS = []  # this flavour's CUDA include folders (none for +cpu)


def object_sharing():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "fastlstm_object_sharing", os.path.join(HERE, "scripts", "object_sharing.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildExtensionSharedTemp(BuildExtension.with_options(use_ninja=True)):
    """Object files always in build/temp, also for `pip install -e .` (whose own choice is a
    new temporary folder each time): `make wheel` after `make build` then compiles nothing
    that has not changed, since ninja rebuilds only objects whose command line or inputs
    differ (CI builds once where it used to build twice)."""

    def run(self):
        # One folder per flavour (cu13, cu12, cpu): a +cu12 wheel built beside make test's
        # +cu13 objects recompiles neither.
        self.build_temp = os.path.join(HERE, "build", "temp-" + local_version(with_cuda))
        super().run()
        # fastlstm/_build_info.py beside the library: in the source tree for an in-place
        # (editable) build, else only in the wheel (a wheel build leaves the tree's alone).
        pkg = (os.path.join(HERE, "fastlstm") if self.inplace
               else os.path.join(self.build_lib, "fastlstm"))
        os.makedirs(pkg, exist_ok=True)
        with open(os.path.join(pkg, "_build_info.py"), "w") as f:
            f.write(build_info_text(with_cuda))

    def build_extension(self, ext):
        # torch's ninja compile (BuildExtension.build_extensions installed it), wrapped.
        compile = self.compiler.compile
        if os.environ.get("FASTLSTM_REUSE_OBJECTS", "1").lower() not in ("0", "false", "no", "off"):
            sharing = object_sharing()
            self.compiler.compile = lambda sources, output_dir=None, *args, **kwargs: \
                sharing.compile_sharing_objects(
                    compile, sources, output_dir, *args, shareable=SHAREABLE_SOURCES,
                    probe=PROBE_SOURCE, cuda_dirs=CUDA_INCLUDE_DIRS, **kwargs)
        try:
            super().build_extension(ext)
        finally:
            self.compiler.compile = compile


os.environ.setdefault("MAX_JOBS", default_max_jobs())
with_cuda, extension = make_extension()

setup(
    name="fastlstm",
    version=f"{VERSION}+{local_version(with_cuda)}",
    description="A drop-in torch.nn.LSTM with per-sequence lengths on fused CPU and CUDA kernels",
    packages=find_packages(include=["fastlstm", "fastlstm.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtensionSharedTemp},
    python_requires=">=3.10",
    install_requires=[f"torch>={MIN_TORCH}"],
    # pip install fastlstm[keras]: fastlstm.keras.LSTM, a keras.layers.LSTM on fastlstm (Keras 3,
    # torch backend). `import fastlstm` never imports keras.
    extras_require={"keras": ["keras>=3"]},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API_TAG,
                             **({"plat_name": PLATFORM_TAG} if PLATFORM_TAG else {})}},
)
