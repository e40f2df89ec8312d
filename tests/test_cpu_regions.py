"""How many OpenMP parallel regions a CPU layer call opens.

Each top-level region is a meeting of torch's threads: beside busy processes a thread that the
OS has descheduled holds up the region's end, and libgomp's waiting threads spin meanwhile, so
every region can cost a scheduler time slice (docs/PERFORMANCE.md, "Busy machines"). A layer
call opens one for its time loops; copies and zeroing of small outputs open none.

The count comes from a tiny shim, compiled here and preloaded into a child Python, that wraps
libgomp's GOMP_parallel (torch's `#pragma omp parallel`) and counts the calls made outside any
region (a region opened inside one, like MKL's within a group's thread, runs on that thread
alone and meets no one).
"""

import os
import shutil
import subprocess
import sys

import pytest

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
typedef void (*body_fn)(void*);
struct wrapped { body_fn fn; void* data; };
static __thread int depth;
static long top_level;
long top_level_regions(void) { return __atomic_load_n(&top_level, __ATOMIC_RELAXED); }
static void run_wrapped(void* p) {
  struct wrapped* w = (struct wrapped*)p;
  ++depth;
  w->fn(w->data);
  --depth;
}
void GOMP_parallel(body_fn fn, void* data, unsigned threads, unsigned flags) {
  static void (*real)(body_fn, void*, unsigned, unsigned);
  if (!real) real = (void (*)(body_fn, void*, unsigned, unsigned))dlsym(RTLD_NEXT, "GOMP_parallel");
  if (depth == 0) __atomic_add_fetch(&top_level, 1, __ATOMIC_RELAXED);
  struct wrapped w = {fn, data};
  real(run_wrapped, &w, threads, flags);
}
"""

CHILD = r"""
import ctypes, os, sys, torch, fastlstm
shim = ctypes.CDLL(sys.argv[1])
shim.top_level_regions.restype = ctypes.c_long
torch.set_num_threads(2)

def regions(fn):
    fn()  # warm: first-call work (weights' packs, ISA probes) is not the steady state
    before = shim.top_level_regions()
    fn()
    return shim.top_level_regions() - before

big = torch.randn(1 << 22)
print("control", regions(lambda: big.exp()))
torch.manual_seed(0)
for bidirectional in (False, True):
    lstm = fastlstm.LSTM(128, 128, bidirectional=bidirectional)
    x = torch.randn(100, 8, 128)
    lengths = torch.randint(25, 101, (8,))
    lengths[0] = 100
    with torch.inference_mode():
        print("bi" if bidirectional else "uni", regions(lambda: lstm(x, lengths=lengths)))

# A backward in a contended call (serial, contention.h) of a loss that sums the outputs: sum()'s
# gradient reaches the op expanded (every stride 0). autograd.grad accumulates into no .grad,
# so torch opens no region of its own.
os.environ["FASTLSTM_CPU_CONTENTION"] = "on"
lstm = fastlstm.LSTM(128, 128)
x = torch.randn(100, 8, 128, requires_grad=True)
loss = lstm(x, lengths=lengths)[0].sum()
wrt = [x] + list(lstm.parameters())
print("serial_backward", regions(lambda: torch.autograd.grad(loss, wrt, retain_graph=True)))
"""


@pytest.fixture(scope="module")
def region_counts(tmp_path_factory):
    """{'control': n, 'uni': n, 'bi': n, 'serial_backward': n}: top-level regions of one call of
    each (see CHILD)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the GOMP_parallel counting shim")
    folder = tmp_path_factory.mktemp("gomp_shim")
    (folder / "shim.c").write_text(SHIM)
    shim = folder / "shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(shim), str(folder / "shim.c"),
                    "-ldl"], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim), OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", CHILD, str(shim)], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    counts = {name: int(n) for name, n in (line.split() for line in out.splitlines())}
    if counts["control"] == 0:
        pytest.skip("torch's OpenMP is not libgomp here: GOMP_parallel counts nothing")
    return counts


@pytest.mark.parametrize("direction", ["uni", "bi"])
def test_inference_call_opens_one_parallel_region(region_counts, direction):
    # 65 M multiply-adds a direction, far above the inline threshold: one region for the time
    # loops (its groups' MKL calls nest inside it); the outputs' zeroing and the final states'
    # copies (400 KB) run on the calling thread.
    assert region_counts[direction] == 1, region_counts


def test_serial_backward_of_a_summed_loss_opens_no_region(region_counts):
    # Its expanded gradient is made dense by fastlstm's own copy, on the calling thread; torch's
    # copy (contiguous()) opened a region of 2 threads for its 102 K values.
    assert region_counts["serial_backward"] == 0, region_counts
