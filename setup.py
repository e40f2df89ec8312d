"""Builds fastlstm and its one extension, fastlstm._C.

CPU sources are always built. CUDA sources (csrc/cuda/) are built when a CUDA toolkit and a
CUDA build of torch are present; no GPU is needed. Install with
`pip install --no-build-isolation .` so that the torch already installed is the one built against.

The extension is built against PyTorch's stable ABI (TORCH_TARGET_VERSION 2.10) and Python's
limited API (3.10): one build loads into every torch >= 2.10 on every CPython >= 3.10, so a
wheel is tagged cp310-abi3. `make wheel` builds one (`pip wheel --no-build-isolation
--no-deps`); its version's local tag says what it needs beyond that: +cu13 (a CUDA 13 build of
torch; the CUDA kernels link CUDA 13's runtime and cuBLAS) or +cpu (any torch).

Environment switches:
  FASTLSTM_FORCE_CPU=1     never build the CUDA sources
  FASTLSTM_FORCE_CUDA=1    fail unless the CUDA sources can be built
  FASTLSTM_CUDA_ARCHS      CUDA architectures, e.g. "9.0" or "8.0;9.0+PTX"; overrides
  TORCH_CUDA_ARCH_LIST     (the same, torch's name). Default: DEFAULT_ARCHS for a wheel or when
                           no GPU is visible, else the visible GPU's (torch's default)
  MAX_JOBS                 parallel compile jobs (default: from cores and free memory)
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"  # sm_80 ... sm_100, plus PTX for the newest
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


def find_cublas(cuda_home, site):
    """(folder, linker flag) of a cuBLAS to link: the toolkit's, else the one torch's pip
    dependencies ship (nvidia/cu*/lib, which has only the versioned libcublas.so.N)."""
    if os.path.exists(os.path.join(cuda_home, "lib64", "libcublas.so")):
        return os.path.join(cuda_home, "lib64"), "-lcublas"
    for lib in sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "lib", "libcublas.so.*"))):
        return os.path.dirname(lib), "-l:" + os.path.basename(lib)
    return None, None


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


def local_version(with_cuda):
    """cu13 / cpu: the CUDA major version a CUDA build needs torch to be built for."""
    return "cu" + torch.version.cuda.split(".")[0] if with_cuda else "cpu"


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
    # -fno-trapping-math lets GCC if-convert and vectorise the cell math (as torch builds).
    # -fvisibility=hidden: the library exports PyInit__C only (header-only torch types'
    # inline functions stay private, so `nm -D` shows no c10:: or at:: symbol).
    cxx_flags = ["-O3", "-fopenmp", "-DNDEBUG", "-fno-trapping-math", "-fno-math-errno",
                 "-fvisibility=hidden", "-fvisibility-inlines-hidden"]
    link_flags = ["-fopenmp"]
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
    if os.environ.get("FASTLSTM_CUDA_ARCHS"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ["FASTLSTM_CUDA_ARCHS"]
    elif not os.environ.get("TORCH_CUDA_ARCH_LIST") and (
            BUILDING_WHEEL or not torch.cuda.is_available()):
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    print(f"fastlstm: CUDA architectures {os.environ.get('TORCH_CUDA_ARCH_LIST')}")
    include_dirs = []
    site = os.path.dirname(os.path.dirname(torch.__file__))
    # Headers of the CUDA libraries torch's pip dependencies ship (cuBLAS, if the toolkit lacks it).
    for sub in ("cu13", "cu12"):
        inc = os.path.join(site, "nvidia", sub, "include")
        if os.path.isdir(inc):
            include_dirs.append(inc)
    # cuBLAS explicitly, rather than relying on torch's libraries having loaded it.
    cublas_dir, cublas_flag = find_cublas(cuda_home, site)
    if cublas_flag is None:
        print("fastlstm: no libcublas found to link; relying on torch to load it")
    cuda_link_flags = link_flags + ([f"-L{cublas_dir}", cublas_flag] if cublas_flag else [])
    # No --use_fast_math: it turns tanh into tanh.approx.f32 (~5e-4 relative error).
    nvcc_flags = ["-O3", "-DNDEBUG", "-lineinfo", "--expt-relaxed-constexpr", "-std=c++20",
                  "-Xcompiler", "-fvisibility=hidden"]
    # USE_CUDA declares the stable ABI's CUDA entry points (stream, cuBLAS handle).
    return True, CUDAExtension("fastlstm._C", cpu_sources + cuda_sources,
                               include_dirs=include_dirs,
                               define_macros=macros + [("USE_CUDA", "1")],
                               extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                               extra_link_args=cuda_link_flags, py_limited_api=True)


class BuildExtensionSharedTemp(BuildExtension.with_options(use_ninja=True)):
    """Object files always in build/temp, also for `pip install -e .` (whose own choice is a
    new temporary folder each time): `make wheel` after `make build` then compiles nothing
    that has not changed, since ninja rebuilds only objects whose command line or inputs
    differ (CI builds once where it used to build twice)."""

    def run(self):
        self.build_temp = os.path.join(HERE, "build", "temp")
        super().run()


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
    options={"bdist_wheel": {"py_limited_api": LIMITED_API_TAG}},
)
