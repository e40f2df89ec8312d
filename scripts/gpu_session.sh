#!/usr/bin/env bash
# What needs a GPU, in stages that each fit the device tool's 10-minute limit (no network there):
#   bash scripts/gpu_session.sh build      build in place (and a wheel, into $OUT)
#   bash scripts/gpu_session.sh test       GPU tests (tests/test_cuda.py)
#   bash scripts/gpu_session.sh sanitize   compute-sanitizer memcheck, racecheck, initcheck
#   bash scripts/gpu_session.sh bench      the benchmark suite, JSON and markdown into $OUT
# Stages after `build` need the build in the working tree (carry it, or run stages in one call).
set -uo pipefail
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
stage="${1:-all}"
tag=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_') + '_torch' + torch.__version__.split('+')[0] + '_cuda' + str(torch.version.cuda) + '_cudnn' + str(torch.backends.cudnn.version()))")
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")

run_build() {
  { echo "device tag: $tag"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
    nvcc --version | tail -n 2; } | tee "$out/tag.txt"
  python3 -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1 \
    || { tail -50 "$out/build.log"; return 1; }
}
run_test() {
  python3 -m pytest -q -rs tests/test_cuda.py > "$out/tests_cuda.log" 2>&1
  local rc=$?
  tail -25 "$out/tests_cuda.log"
  echo "pytest rc=$rc"
}
run_sanitize() {
  for tool in memcheck racecheck initcheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" python3 scripts/sanitize_shapes.py \
      > "$out/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tail -1)"
  done
}
run_bench() {
  python3 -m benchmarks --json "$out/bench_$tag.json" --markdown "$out/bench_$tag.md" \
    > "$out/bench.log" 2>&1
  echo "bench rc=$?"; tail -30 "$out/bench.log"
}

case "$stage" in
  build) run_build ;;
  test) run_test ;;
  sanitize) run_sanitize ;;
  bench) run_bench ;;
  all) run_build && run_test && run_sanitize && run_bench ;;
  *) echo "usage: $0 build|test|sanitize|bench|all" >&2; exit 2 ;;
esac
