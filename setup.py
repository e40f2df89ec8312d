"""Builds fastlstm and its one extension, fastlstm._C.

CPU sources are always built. CUDA sources (csrc/cuda/) are built when a CUDA toolkit and a
CUDA build of torch are present; no GPU is needed. Install with
`pip install --no-build-isolation .` so that the torch already installed is the one built against.

Environment switches:
  FASTLSTM_FORCE_CPU=1     never build the CUDA sources
  FASTLSTM_FORCE_CUDA=1    fail unless the CUDA sources can be built
  TORCH_CUDA_ARCH_LIST     CUDA architectures (default when no GPU is visible: DEFAULT_ARCHS)
  MAX_JOBS                 parallel compile jobs (default: from cores and free memory)
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"
VERSION = "0.1.0"


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


def make_extension():
    rel = lambda paths: sorted(os.path.relpath(p, HERE) for p in paths)  # noqa: E731
    cpu_sources = rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")) +
                      glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    cuda_sources = rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) +
                       glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
    # -fno-trapping-math lets GCC if-convert and vectorise the cell math (as torch builds).
    cxx_flags = ["-O3", "-fopenmp", "-DNDEBUG", "-fno-trapping-math", "-fno-math-errno"]
    link_flags = ["-fopenmp"]
    if not want_cuda(cuda_sources):
        return CppExtension("fastlstm._C", cpu_sources,
                            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)

    cuda_home = find_cuda_home()
    os.environ["CUDA_HOME"] = cuda_home
    import torch.utils.cpp_extension as ext
    ext.CUDA_HOME = cuda_home
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    include_dirs = []
    # ATen's CUDA headers include cusparse.h etc.; torch's pip dependencies ship them here.
    for site in {os.path.dirname(os.path.dirname(torch.__file__))}:
        for sub in ("cu13", "cu12"):
            inc = os.path.join(site, "nvidia", sub, "include")
            if os.path.isdir(inc):
                include_dirs.append(inc)
    # No --use_fast_math: it turns tanh into tanh.approx.f32 (~5e-4 relative error).
    nvcc_flags = ["-O3", "-DNDEBUG", "-lineinfo", "--expt-relaxed-constexpr", "-std=c++20"]
    return CUDAExtension("fastlstm._C", cpu_sources + cuda_sources, include_dirs=include_dirs,
                         define_macros=[("FASTLSTM_WITH_CUDA", "1")],
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                         extra_link_args=link_flags)


os.environ.setdefault("MAX_JOBS", default_max_jobs())

setup(
    name="fastlstm",
    version=VERSION,
    description="A drop-in torch.nn.LSTM with per-sequence lengths on fused CPU and CUDA kernels",
    packages=find_packages(include=["fastlstm", "fastlstm.*"]),
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
)
