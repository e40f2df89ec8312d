"""The persistent kernels' machine code, checked without a GPU (scripts/sass_check.py): no local
memory or spills, no 64-bit integer division, tensor cores in the 16-bit kernels, registers
within the plans' occupancy, no 16-bit shared-memory loads in the 16-bit kernels. Runs on the
sm_90 code of the built library (CI compiles it), and shows that the check bites on small
kernels built with 64-bit index arithmetic, and with 16-bit shared-memory loads.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("sass_check",
                                              os.path.join(ROOT, "scripts", "sass_check.py"))
sass_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sass_check)

CUOBJDUMP = sass_check.find_cuobjdump()


def _nvcc():
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    path = os.path.join(home, "bin", "nvcc")
    return path if os.path.exists(path) else shutil.which("nvcc")


@pytest.fixture(scope="module")
def kernels():
    if CUOBJDUMP is None:
        pytest.skip("needs a CUDA build of fastlstm: no cuobjdump (torch's triton ships one)")
    found = sass_check.read_kernels(sass_check.default_binary(), CUOBJDUMP)
    if not found:
        pytest.skip("needs a CUDA build of fastlstm: the library has no persistent kernels")
    return found


def test_every_persistent_kernel_is_there(kernels):
    """Forward and backward, in float, double, Half and BFloat16."""
    for direction in ("forward", "backward"):
        for dtype in ("ff", "dd", "N3c104HalfEf", "N3c108BFloat16Ef"):
            assert any(f"persistent_{direction}_kernelI{dtype}" in name for name in kernels), \
                (direction, dtype, sorted(kernels))


@pytest.mark.parametrize("problem", ["local memory or spills", "64-bit integer division",
                                     "no tensor-core products",
                                     "registers beyond one block per SM",
                                     "16-bit operand loads"])
def test_no_persistent_kernel_has(kernels, problem):
    found = {name: sass_check.check(k).get(problem) for name, k in kernels.items()}
    offenders = {name: what for name, what in found.items() if what}
    assert not offenders, f"{problem}: {offenders}"


def _probe(tmp_path, source):
    """The sm_90 cubin of a probe kernel's CUDA source, and its kernels as sass_check reads
    them (skips where nvcc or cuobjdump is missing)."""
    nvcc = _nvcc()
    if CUOBJDUMP is None or nvcc is None:
        pytest.skip("needs a CUDA build of fastlstm: no nvcc or cuobjdump")
    path = tmp_path / "probe.cu"
    path.write_text(source)
    cubin = tmp_path / "probe.cubin"
    subprocess.run([nvcc, "-cubin", "-arch=sm_90", "-O3", "-o", str(cubin), str(path)],
                   check=True)
    return cubin, sass_check.read_kernels(str(cubin), CUOBJDUMP)


def test_the_check_bites_on_64_bit_index_division(tmp_path):
    """A kernel that divides 64-bit indices by a run-time value, as the persistent kernels did,
    is flagged; the same kernel dividing in 32 bits (index_math.cuh's way) is not."""
    cubin, found = _probe(tmp_path, r'''
template <typename I>
__global__ void persistent_forward_kernel(const float* x, float* y, long n, long width) {
  for (I e = threadIdx.x; e < static_cast<I>(n); e += blockDim.x)
    y[e] = x[e / static_cast<I>(width)] + x[e % static_cast<I>(width)];
}
template __global__ void persistent_forward_kernel<long>(const float*, float*, long, long);
template __global__ void persistent_forward_kernel<int>(const float*, float*, long, long);
''')
    verdicts = {("64" if "Il" in name else "32"): sass_check.check(k)
                for name, k in found.items()}
    assert "64-bit integer division" in verdicts["64"], verdicts
    assert "64-bit integer division" not in verdicts["32"], verdicts
    # the script's verdict, as CI and the GPU session read it
    script = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sass_check.py"),
                             str(cubin)], capture_output=True, text=True)
    assert script.returncode == 1 and "FAIL" in script.stdout and "ok " in script.stdout, \
        script.stdout + script.stderr


def test_the_check_bites_on_16_bit_shared_memory_loads(tmp_path):
    """A 16-bit kernel that reads a pair of 16-bit values from shared memory as two LDS.U16 (an
    odd offset, as an unpadded row's K edge did) is flagged; the same pair read as one aligned
    32-bit word (a zero-padded row's way, simt::load_aligned_pair) is not."""
    _, found = _probe(tmp_path, r'''
struct Half { unsigned short x; };
template <typename T, bool kWords>
__global__ void persistent_forward_kernel(const unsigned* in, unsigned* out, int n) {
  extern __shared__ __align__(16) unsigned short s[];
  for (int i = threadIdx.x; i < 2 * n + 2; i += blockDim.x) s[i] = (unsigned short)in[i];
  __syncthreads();
  const int i = 2 * threadIdx.x;
  out[threadIdx.x] = kWords ? reinterpret_cast<const unsigned*>(s)[threadIdx.x]
                            : s[i + 1] | (unsigned(s[i + 2]) << 16);
}
template __global__ void persistent_forward_kernel<Half, false>(const unsigned*, unsigned*, int);
template __global__ void persistent_forward_kernel<Half, true>(const unsigned*, unsigned*, int);
''')
    verdicts = {("words" if "Lb1" in name else "halves"): sass_check.check(k)
                for name, k in found.items()}
    assert "16-bit operand loads" in verdicts["halves"], verdicts
    assert "16-bit operand loads" not in verdicts["words"], verdicts
