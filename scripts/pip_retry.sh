#!/usr/bin/env bash
# `pip install` that survives a flaky network. A fresh machine downloads torch and its CUDA
# libraries (several GB) from PyPI, and one dropped connection must not fail a CI run: pip
# resumes a broken download itself (--resume-retries, pip >= 25.1), and a whole install that
# still fails is tried again after a pause. Packages already downloaded come from pip's cache.
#   scripts/pip_retry.sh PYTHON [pip install arguments...]
set -uo pipefail
py=$1
shift
resume=()
if "$py" -m pip install --help 2>/dev/null | grep -q -- '--resume-retries'; then
  resume=(--resume-retries 20)
fi
attempts=${PIP_RETRY_ATTEMPTS:-4}
pause=${PIP_RETRY_PAUSE_S:-60}
for ((attempt = 1; ; attempt++)); do
  "$py" -m pip install "${resume[@]}" "$@" && exit 0
  if ((attempt >= attempts)); then
    echo "pip-retry: 'pip install $*' failed $attempt times; giving up" >&2
    exit 1
  fi
  echo "pip-retry: attempt $attempt of $attempts failed; trying again in $((pause * attempt)) s" >&2
  sleep $((pause * attempt))
done
