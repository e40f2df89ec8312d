#!/usr/bin/env bash
# CI: builds fastlstm (CPU and CUDA sources) against torch 2.11.0, the torch of the GPU machine
# the project borrows (Python 3.12, torch 2.11.0+cu130, nvcc 13.0), so that a build break there
# shows up here first instead of costing a GPU window. In a fresh venv of its own: torch from
# the registry, a copy of the sources (the checkout's build/ and in-place _C*.so, which belong
# to the CI venv's torch, are left alone), a wheel for TORCH_CUDA_ARCH_LIST (default 9.0, the
# GPU machine's), installed, then scripts/wheel_smoke.py from outside the source tree: the
# import, the CUDA kernels registered, and a CPU forward+backward against nn.LSTM.
#   scripts/ci_torch211.sh            PY312 / TORCH_SPEC / TORCH_CUDA_ARCH_LIST override
# Needs nvcc (CI has /usr/local/cuda); without it the CPU sources alone are built and checked.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py312="${PY312:-/root/.pyenv/versions/3.12.1/bin/python}"
torch_spec="${TORCH_SPEC:-torch==2.11.0}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
unset FASTLSTM_CUDA_ARCHS FASTLSTM_FORCE_CPU
tmp=$(mktemp -d /tmp/fastlstm-torch211.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS

"$py312" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet "$torch_spec" numpy ninja "setuptools>=64" wheel
t_download=$((SECONDS - t0))
"$py" - <<'EOF'
import sys, torch
print(f"ci-torch211: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"built for CUDA {torch.version.cuda}")
EOF

expect_cuda=()
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  # The GPU machine has torch 2.11.0+cu130 with nvcc 13.0: the registry's torch must be a CUDA 13
  # build too, or this step checks a different build from the one made there.
  "$py" -c "import torch, sys; sys.exit(0 if (torch.version.cuda or '').startswith('13.') else
    'ci-torch211: expected a CUDA 13 build of torch (the GPU machine has cu130), got ' +
    str(torch.version.cuda))"
  export FASTLSTM_FORCE_CUDA=1
  expect_cuda=(--expect-cuda)
fi

mkdir -p "$tmp/src"
cp -r "$root/setup.py" "$root/pyproject.toml" "$root/csrc" "$root/fastlstm" "$tmp/src/"
rm -f "$tmp/src"/fastlstm/_C*.so
(cd "$tmp/src" && "$py" -m pip wheel --no-build-isolation --no-deps \
   --wheel-dir "$tmp/dist" . > "$tmp/build.log" 2>&1) || { tail -60 "$tmp/build.log"; exit 1; }
grep -E "^fastlstm: " "$tmp/build.log" || true
t_build=$((SECONDS - t0 - t_download))
wheel=$(ls "$tmp"/dist/fastlstm-*.whl)
"$py" -m pip install --quiet --no-deps "$wheel"
cp "$root/scripts/wheel_smoke.py" "$tmp/"
(cd "$tmp" && "$py" -I wheel_smoke.py "$wheel" --source "$root/fastlstm" "${expect_cuda[@]}")
echo "ci-torch211: $(basename "$wheel") ok; venv + torch download ${t_download}s," \
     "build ${t_build}s, total $((SECONDS - t0))s"
