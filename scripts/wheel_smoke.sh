#!/usr/bin/env bash
# Installs a built wheel into a clean venv (no system site-packages, its own torch from the
# registry, pinned as in requirements-dev.txt) and runs scripts/wheel_smoke.py from a folder
# outside the source tree, so that nothing can be imported from the checkout.
# Usage: scripts/wheel_smoke.sh dist/fastlstm-*.whl [--expect-cuda]
set -euo pipefail
wheel=$(realpath "$1")
shift
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/fastlstm-wheel-smoke.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"${PYTHON:-python3}" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "$(grep -E '^torch==' "$root/requirements-dev.txt")" numpy
"$py" -m pip install --quiet "$wheel"  # its torch requirement is already met: nothing else comes
cp "$root/scripts/wheel_smoke.py" "$tmp/"
cd "$tmp"
# -I: neither the script's folder, the current folder nor PYTHONPATH goes on sys.path.
"$py" -I wheel_smoke.py "$wheel" --source "$root/fastlstm" "$@"
