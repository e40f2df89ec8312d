#!/usr/bin/env bash
# Everything that needs a GPU, in one command for the device machine (no network there):
#   build, GPU tests, compute-sanitizer, benchmark. Results land in ${OUT:-gpu_out}/.
# Usage on the device machine: bash scripts/gpu_session.sh
set -uo pipefail
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
tag=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '_') + '_torch' + torch.__version__.split('+')[0] + '_cuda' + str(torch.version.cuda) + '_cudnn' + str(torch.backends.cudnn.version()))")
echo "device tag: $tag" | tee "$out/tag.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/tag.txt"

pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
python3 -m pytest -q -rs tests 2>&1 | tee "$out/tests.log" | tail -25
for tool in memcheck racecheck; do
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" python3 scripts/sanitize_shapes.py \
    > "$out/sanitizer_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_$tool.log" | tail -1)"
done
python3 -m benchmarks --json "$out/bench_$tag.json" --markdown "$out/bench_$tag.md" \
  2>&1 | tee "$out/bench.log" | tail -30
