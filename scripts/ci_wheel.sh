#!/usr/bin/env bash
# CI: the one-wheel promise. The wheel `make wheel` built (cp310-abi3, on PyTorch's stable ABI)
# is installed, the same file with no rebuild, into clean environments of another torch and
# Python, and in each the smoke test and the parity subset of tests/wheel_subset.py run (every
# op, dtype and path once):
#   Python 3.12 + torch 2.11.0   the GPU machines' versions (cu130), by default
# The torch it was built against (2.14.1, Python 3.11) is make test's, where the whole suite
# runs on the same build; CI_WHEEL_ENVS adds it (or others) as a clean venv too.
# Each environment: a fresh venv, torch and the test dependencies from the registry, the wheel
# with --no-deps, scripts/wheel_smoke.py, then pytest --wheel-subset over a copy of the
# repository without its fastlstm/ package, so that every import of fastlstm is the installed
# wheel's.
#   scripts/ci_wheel.sh dist/fastlstm-*.whl [--expect-cuda]
#   CI_WHEEL_ENVS="/path/python3.12:torch==2.11.0 python3.11:torch==2.14.1"  (default: the first)
#   CI_WHEEL_PYTEST_ARGS   extra pytest arguments, e.g. "-x"
set -euo pipefail
wheel=$(realpath "$1")
shift
expect_cuda=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
# The first interpreter of that version that runs (a pyenv shim may exist and refuse).
find_python() {
  local c
  for c in /root/.pyenv/versions/"$1".*/bin/python "python$1" /usr/bin/python"$1"; do
    if "$c" -c 'import sys' >/dev/null 2>&1; then command -v "$c"; return; fi
  done
  echo "ci-wheel: no working Python $1" >&2
  return 1
}
py312="${PY312:-$(find_python 3.12)}"
envs=(${CI_WHEEL_ENVS:-"$py312:torch==2.11.0"})
tmp=$(mktemp -d /tmp/fastlstm-ci-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Disk: a CUDA build of torch fills about 6 GB of venv, and the disk may be shared with other
# machines. So each venv is removed as soon as its tests have passed, pip's downloads (kept for
# pip_retry.sh's retries) and torch.compile's cache go into $tmp and go with it, and the free
# space is printed before each install, so that a full disk shows as such.
export TORCHINDUCTOR_CACHE_DIR="$tmp/inductor-cache" PIP_CACHE_DIR="$tmp/pip-cache"
free_space() { df -h --output=avail "$tmp" | tail -n 1 | tr -d ' '; }

case "$(basename "$wheel")" in
  *-cp310-abi3-*.whl) ;;
  *) echo "ci-wheel: expected a cp310-abi3 wheel, got $(basename "$wheel")" >&2; exit 1 ;;
esac

# The repository as committed (plus uncommitted edits), without the package itself.
tree="$tmp/tree"
mkdir -p "$tree"
(cd "$root" && git ls-files -co --exclude-standard | grep -v '^fastlstm/' |
   tar -cf - -T - 2>/dev/null) | tar -xf - -C "$tree"
# The test dependencies of requirements-dev.txt, except torch and the build tools.
grep -vE '^(#|torch==|ninja|setuptools|wheel|$)' "$root/requirements-dev.txt" > "$tmp/test-deps.txt"

for spec in "${envs[@]}"; do
  python=${spec%%:*}
  torch_spec=${spec#*:}
  name=$("$python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')-${torch_spec#torch==}
  t0=$SECONDS
  venv="$tmp/venv-$name"
  echo "ci-wheel: $name: $(free_space) free on the disk of $tmp before its venv"
  "$python" -m venv "$venv"
  py="$venv/bin/python"
  "$root/scripts/pip_retry.sh" "$py" --quiet --upgrade pip
  "$root/scripts/pip_retry.sh" "$py" --quiet "$torch_spec" -r "$tmp/test-deps.txt"
  "$py" -m pip install --quiet --no-deps "$wheel"
  "$py" - <<'EOF'
import sys, torch
print(f"ci-wheel: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda})")
EOF
  t_setup=$((SECONDS - t0))
  (cd "$tmp" && cp "$root/scripts/wheel_smoke.py" . &&
     "$py" -I wheel_smoke.py "$wheel" --source "$root/fastlstm" "${expect_cuda[@]}")
  # CI=true: a skip fails unless the machine lacks the hardware (tests/conftest.py).
  (cd "$tree" && CI=true "$py" -m pytest -q -rs -p no:cacheprovider tests --wheel-subset \
     ${CI_WHEEL_PYTEST_ARGS:-}) ||
    { echo "ci-wheel: the parity subset failed with $name" >&2; exit 1; }
  echo "ci-wheel: $(basename "$wheel") passed with $name: setup ${t_setup}s," \
       "total $((SECONDS - t0))s"
  rm -rf "$venv" "$TORCHINDUCTOR_CACHE_DIR" "$PIP_CACHE_DIR"
done
