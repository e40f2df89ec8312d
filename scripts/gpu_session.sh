#!/usr/bin/env bash
# What needs a GPU, in stages that each fit the device tool's 10-minute limit (no network there):
#   bash scripts/gpu_session.sh build      build in place
#   bash scripts/gpu_session.sh test       GPU tests (tests/test_cuda.py)
#   bash scripts/gpu_session.sh wheel      a wheel (into $OUT/wheel), installed on its own, then
#                                          the wheel smoke test and the GPU tests against it
#   bash scripts/gpu_session.sh sanitize   compute-sanitizer memcheck, racecheck, initcheck
#   bash scripts/gpu_session.sh bench      the benchmark suite: JSON, markdown and plots into $OUT
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
run_wheel() {
  # This GPU's architecture by default: the full DEFAULT_ARCHS list may not fit in one stage.
  local archs="${FASTLSTM_CUDA_ARCHS:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
  local site=/tmp/fastlstm_wheel_site repo wheel
  repo=$(pwd)
  rm -rf "$out/wheel" "$site"
  FASTLSTM_CUDA_ARCHS="$archs" FASTLSTM_FORCE_CUDA=1 python3 -m pip wheel --no-build-isolation \
    --no-deps --wheel-dir "$out/wheel" . > "$out/wheel_build.log" 2>&1 \
    || { tail -50 "$out/wheel_build.log"; return 1; }
  wheel=$(realpath "$out"/wheel/fastlstm-*.whl) && echo "$wheel"
  # No network here: install the wheel alone into a folder of its own, put that first on the path,
  # and run from outside the checkout so that nothing comes from the source tree.
  python3 -m pip install --no-deps --no-index --target "$site" "$wheel" \
    > "$out/wheel_install.log" 2>&1 || { tail -20 "$out/wheel_install.log"; return 1; }
  mkdir -p /tmp/fastlstm_wheel_run && cp scripts/wheel_smoke.py /tmp/fastlstm_wheel_run/
  (cd /tmp/fastlstm_wheel_run && PYTHONPATH="$site" python3 wheel_smoke.py "$wheel" \
     --source "$repo/fastlstm" --site "$site" --expect-cuda) 2>&1 | tee "$out/wheel_smoke.log"
  (cd /tmp/fastlstm_wheel_run && PYTHONPATH="$site" python3 -m pytest -q -rs -p no:cacheprovider \
     "$repo/tests/test_cuda.py") > "$out/wheel_tests_cuda.log" 2>&1
  local rc=$?
  tail -5 "$out/wheel_tests_cuda.log"
  echo "wheel GPU tests rc=$rc"
}
run_bench() {
  python3 -m benchmarks --out "$out" > "$out/bench.log" 2>&1
  echo "bench rc=$?"; tail -30 "$out/bench.log"
}

case "$stage" in
  build) run_build ;;
  test) run_test ;;
  wheel) run_wheel ;;
  sanitize) run_sanitize ;;
  bench) run_bench ;;
  all) run_build && run_test && run_wheel && run_sanitize && run_bench ;;
  *) echo "usage: $0 build|test|wheel|sanitize|bench|all" >&2; exit 2 ;;
esac
