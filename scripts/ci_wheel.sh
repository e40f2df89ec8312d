#!/usr/bin/env bash
# CI: the one-wheel promise. The wheel `make wheel` built (cp310-abi3, on PyTorch's stable ABI)
# is installed, the same file with no rebuild, into clean environments of another torch and
# Python, and in each the smoke test and the parity subset of tests/wheel_subset.py run (every
# op, dtype and path once):
#   Python 3.12 + torch 2.11.0   the GPU machines' versions (cu130), by default
#   Python 3.11 + torch 2.10.0   for a +cu12 wheel (`make wheel CUDA=12`): PyPI's torch >= 2.10
#                                built for CUDA 12 (cu128), the oldest torch the wheel supports
#                                (Python 3.11: the oldest that requirements-dev.txt's keras takes)
# The torch it was built against (2.14.1, Python 3.11) is make test's, where the whole suite
# runs on the same build; CI_WHEEL_ENVS adds it (or others) as a clean venv too.
# Each environment: a fresh venv, torch and the test dependencies from the registry, the wheel
# with --no-deps, scripts/wheel_smoke.py, then pytest --wheel-subset over a copy of the
# repository without its fastlstm/ package, so that every import of fastlstm is the installed
# wheel's.
#   scripts/ci_wheel.sh dist/fastlstm-*.whl [--expect-cuda] [--smoke-also OTHER.whl]...
#   --smoke-also: after the parity subset, OTHER.whl (a +cpu wheel, which loads into any torch)
#                 is installed into a folder of its own (pip --target) and its smoke test runs
#                 with this venv's torch, importing it from there
#   CI_WHEEL_ENVS="/path/python3.12:torch==2.11.0 python3.11:torch==2.14.1"  (default: the first)
#   CI_WHEEL_PYTEST_ARGS   extra pytest arguments, e.g. "-x"
#   CI_WHEEL_FIND_LINKS=DIR   pip install also looks in DIR (--find-links), which pip prefers
#                 over the index for the same file: what --download put there. Where uv is
#                 found (requirements-dev.txt puts it in .venv), the venv is installed by
#                 `uv pip install --no-index` from DIR alone, the files pip chose: 31 s against
#                 pip's 106 s for torch 2.10.0 cu128 (7.1 GB) on the 2-core CI machine. Should
#                 that fail (a file missing), pip installs as before.
#   scripts/ci_wheel.sh --download DIR KIND...   (KIND: cu13, cu12 or cpu) only downloads
#                 (pip download) what the venvs for those wheels would install, into DIR. CI
#                 runs it in the background while make test compiles and runs the suite (the
#                 network is idle then, the CPUs busy), so that the venvs' installs read the
#                 same files from the disk instead of the network; pip's own cache keeps
#                 nothing from this machine's registry, so every venv would download them again.
set -euo pipefail
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
# The venvs a wheel of a kind (cu13, cu12, cpu) is tested in: "python:torch spec" each.
default_envs() {
  case "$1" in
    cu12) echo "${PY311:-$(find_python 3.11)}:torch==2.10.0" ;;
    *) echo "${PY312:-$(find_python 3.12)}:torch==2.11.0" ;;
  esac
}
# The test dependencies of requirements-dev.txt, except torch and the build tools.
test_deps() {
  grep -vE '^(#|torch==|ninja|setuptools|wheel|uv$|$)' "$root/requirements-dev.txt" > "$1"
}
uv=$(command -v uv || { [ -x "$root/.venv/bin/uv" ] && echo "$root/.venv/bin/uv"; } || true)

if [ "${1:-}" = --download ]; then
  dir=$2
  shift 2
  mkdir -p "$dir"
  test_deps "$dir/.test-deps.txt"
  for kind in "$@"; do
    for spec in ${CI_WHEEL_ENVS:-$(default_envs "$kind")}; do
      t0=$SECONDS
      "${spec%%:*}" -m pip download --quiet -d "$dir" "${spec#*:}" -r "$dir/.test-deps.txt" ||
        "${spec%%:*}" -m pip download --quiet -d "$dir" "${spec#*:}" -r "$dir/.test-deps.txt"
      echo "ci-wheel: downloaded ${spec#*:} and the test dependencies for $("${spec%%:*}" -V)" \
           "in $((SECONDS - t0))s ($(du -sh "$dir" | cut -f1) in $dir)"
    done
  done
  exit 0
fi

wheel=$(realpath "$1")
shift
expect_cuda=()
smoke_also=()
while [ $# -gt 0 ]; do
  case "$1" in
    --expect-cuda) expect_cuda=(--expect-cuda) ;;
    --smoke-also) smoke_also+=("$(realpath "$2")"); shift ;;
    *) echo "ci-wheel: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$(basename "$wheel")" in
  *+cu12-*) envs=(${CI_WHEEL_ENVS:-$(default_envs cu12)}) ;;
  *) envs=(${CI_WHEEL_ENVS:-$(default_envs cu13)}) ;;
esac
find_links=()
[ -n "${CI_WHEEL_FIND_LINKS:-}" ] && [ -d "$CI_WHEEL_FIND_LINKS" ] &&
  find_links=(--find-links "$CI_WHEEL_FIND_LINKS")
tmp=$(mktemp -d /tmp/fastlstm-ci-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Disk: a CUDA build of torch fills about 6 GB of venv, and the disk may be shared with other
# machines. So each venv is removed as soon as its tests have passed, pip's downloads (kept for
# pip_retry.sh's retries) and torch.compile's cache go into $tmp and go with it, and the free
# space is printed before each install, so that a full disk shows as such.
export TORCHINDUCTOR_CACHE_DIR="$tmp/inductor-cache" PIP_CACHE_DIR="$tmp/pip-cache" \
  UV_CACHE_DIR="$tmp/uv-cache"
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
test_deps "$tmp/test-deps.txt"

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
  t1=$SECONDS
  # --no-compile: modules are compiled as they are imported (all of torch's: about 40 s).
  # (uv compiles nothing unless asked.)
  installer=pip
  if [ -n "$uv" ] && [ -n "${find_links[*]}" ]; then
    if "$uv" pip install --quiet --python "$py" --no-index "${find_links[@]}" "$torch_spec" \
         -r "$tmp/test-deps.txt"; then
      installer="uv, offline"
    else
      echo "ci-wheel: uv could not install it; pip" >&2
    fi
  fi
  if [ "$installer" = pip ]; then
    "$root/scripts/pip_retry.sh" "$py" --quiet --no-compile "${find_links[@]}" "$torch_spec" \
      -r "$tmp/test-deps.txt"
  fi
  from=${find_links:+; downloaded before, into ${find_links[1]}}
  echo "ci-wheel: $name: $torch_spec and the test dependencies installed in $((SECONDS - t1))s" \
       "by $installer (venv $(du -sh "$venv" | cut -f1)$from)"
  "$py" -m pip install --quiet --no-deps "$wheel"
  "$py" - <<'EOF'
import sys, torch
print(f"ci-wheel: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda})")
EOF
  t_setup=$((SECONDS - t0))
  (cd "$tmp" && cp "$root/scripts/wheel_smoke.py" . &&
     "$py" -I wheel_smoke.py "$wheel" --source "$root/fastlstm" "${expect_cuda[@]}")
  t_smoke=$((SECONDS - t0 - t_setup))
  # CI=true: a skip fails unless the machine lacks the hardware (tests/conftest.py).
  # -n auto: one pytest-xdist worker per core, as make test.
  (cd "$tree" && CI=true "$py" -m pytest -q -rs -p no:cacheprovider -n auto tests --wheel-subset \
     ${CI_WHEEL_PYTEST_ARGS:-}) ||
    { echo "ci-wheel: the parity subset failed with $name" >&2; exit 1; }
  for other in "${smoke_also[@]}"; do
    site="$tmp/site-$(basename "$other" .whl)"
    "$py" -m pip install --quiet --no-deps --target "$site" "$other"
    (cd "$tmp" && PYTHONPATH="$site" "$py" wheel_smoke.py "$other" --source "$root/fastlstm" \
       --site "$site") ||
      { echo "ci-wheel: the smoke test of $(basename "$other") failed with $name" >&2; exit 1; }
    echo "ci-wheel: $(basename "$other") passed its smoke test with $name"
  done
  echo "ci-wheel: $(basename "$wheel") passed with $name: setup ${t_setup}s," \
       "smoke test ${t_smoke}s, total $((SECONDS - t0))s"
  rm -rf "$venv" "$TORCHINDUCTOR_CACHE_DIR" "$PIP_CACHE_DIR"
done
