#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most ~10 minutes on the borrowed GPU machine
# (H100/H200, 16 cores, Python 3.12, torch 2.11.0+cu130, nvcc 13.0, compute-sanitizer; no
# network), stage by stage in order of value, each under its own time cap (`timeout`). A failing
# stage is logged and the next one still runs.
#
#   bash scripts/gpu_session.sh all OUTDIR        build, test, sanitize, bench, then wheel if time
#   bash scripts/gpu_session.sh STAGE [OUTDIR]    one stage: build|test|sanitize|bench|wheel
#   bash scripts/gpu_session.sh --rehearse all OUTDIR   (or FASTLSTM_GPU_REHEARSAL=1) the same on
#       a machine without a GPU, GPU-only steps skipped: tests/test_gpu_session_script.py runs it
#       in CI so that a typo cannot waste a GPU window. It never builds or installs fastlstm: it
#       needs the extension already built (make test does that).
#
#  1 build     the prebuilt abi3 wheel when there is one (FASTLSTM_WHEEL, else .whl/ from
#              `make gpu-wheel`): pip --no-deps --no-index, its extension also copied into the
#              checkout's fastlstm/; no compile. Else, or if it fails to load: pip install
#              --no-build-isolation --no-deps -e . for this GPU's architecture, MAX_JOBS = cores.
#  2 test      tests/test_cuda.py, every test marked gpu (benchmarks/ too), and the files in
#              FASTLSTM_GPU_TEST_FILES; no -x; JUnit XML.
#  3 sanitize  compute-sanitizer memcheck, racecheck, synccheck, initcheck over
#              scripts/sanitize_shapes.py, PYTORCH_NO_CUDA_MEMORY_CACHING=1; each judged from its
#              summary line by scripts/sanitizer_verdict.py (a missing line fails).
#  4 bench     benchmarks/configs/gpu_session.json (~3 minutes), JSON rewritten after every job
#              so that the cap still leaves the jobs done; per-step latency in the JSON and .md.
#              The persistent-path grids come first (the cap may cut the tail). Its size: 240 jobs
#              (workload x mode), each 4 contenders x (1 warm-up + 3 reps + 1
#              memory probe). A cost model (fastlstm ~7 us per step and direction, or the
#              recurrent GEMM at ~25 TFLOP/s fp32 / ~100 bf16 when slower; cuDNN >= 5 us a step;
#              backward = 2x forward; bucketed = 4 sequential calls; ~0.15 s a job for setup,
#              gc and the JSON) gave ~80 s for the 168 per-step jobs, plus ~15 s of CUDA/cuDNN
#              start; with the 72 persistent and cluster jobs and twice that for what the model misses,
#              ~4 minutes: the 200 s cap may cut the last grids (the JSON keeps what ran).
#  5 wheel     the prebuilt wheel (else one built for this GPU's architecture) installed alone,
#              smoke test and GPU tests against it; only when FASTLSTM_WHEEL_STAGE_NEEDS (150)
#              seconds are left.
#
# OUTDIR gets at most 8 files (the device tool's limit): summary.txt (one line per stage: PASS,
# FAIL or SKIP, with the reason; rewritten after every stage), session.log (every stage's output,
# long logs cut in the middle), junit.xml, and the benchmark's <tag>.json, <tag>.md and two PNGs.
# FASTLSTM_SESSION_BUDGET (seconds, default 550) bounds the whole run: a stage's cap is its own
# or what is left of the budget, whichever is less; with the kill grace of `timeout -k` (30 s
# at most) the run ends by ~580 s, inside the device tool's 600 s per command. Exit status: 1 if
# any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rehearse="${FASTLSTM_GPU_REHEARSAL:-0}"
args=()
for a in "$@"; do
  case "$a" in
    --rehearse) rehearse=1 ;;
    *) args+=("$a") ;;
  esac
done
stage="${args[0]:-all}"
out="${args[1]:-${OUT:-gpu_out}}"
case "$stage" in
  all|build|test|sanitize|bench|wheel) ;;
  *) echo "usage: $0 [--rehearse] all|build|test|sanitize|bench|wheel [OUTDIR]" >&2; exit 2 ;;
esac
[ "$rehearse" = 1 ] || rehearse=0

PY="${PYTHON:-python3}"
# An absolute path (not resolved through links: a venv's python must stay the venv's), since
# some steps run from other folders.
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
budget="${FASTLSTM_SESSION_BUDGET:-550}"
wheel_needs="${FASTLSTM_WHEEL_STAGE_NEEDS:-150}"
bench_config="${FASTLSTM_BENCH_CONFIG:-benchmarks/configs/gpu_session.json}"
[ "$rehearse" = 1 ] && bench_config="${FASTLSTM_BENCH_CONFIG:-benchmarks/configs/rehearsal.json}"
export PYTHONUNBUFFERED=1
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/session.log"
summary="$out/summary.txt"
work=$(mktemp -d /tmp/fastlstm-gpu-session.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
: > "$log"
results=()

left() { echo $((budget - (SECONDS - start))); }
# The cap of a step: its own, or what is left of the budget; never under 1 (`timeout 0` would
# mean no limit at all).
cap_for() { local c=$1 l; l=$(left); [ "$l" -lt "$c" ] && c=$l; [ "$c" -lt 1 ] && c=1; echo "$c"; }
# A stage with under 10 s left fails unrun.
no_time() {
  [ "$2" -ge 10 ] && return 1
  record "$1" FAIL 0 "not run: $(left) s left of the $budget s budget"
}
section() { printf '\n===== %s (%s, t=%ss) =====\n' "$1" "$(date -u +%H:%M:%S)" "$((SECONDS - start))" >> "$log"; }
# A log into session.log, its middle cut when long (the end holds the summary lines).
append_log() {
  local f=$1 n
  [ -f "$f" ] || return 0
  n=$(wc -l < "$f")
  if [ "$n" -le 1500 ]; then cat "$f" >> "$log"
  else head -n 500 "$f" >> "$log"; echo "[... $((n - 1500)) lines cut ...]" >> "$log"
       tail -n 1000 "$f" >> "$log"; fi
}
write_summary() {
  { echo "fastlstm GPU session$([ "$rehearse" = 1 ] && echo ' REHEARSAL (CPU, GPU steps skipped)'):" \
         "$device_line"
    [ ${#results[@]} -gt 0 ] && printf '%s\n' "${results[@]}"
    echo "total $((SECONDS - start)) s of a $budget s budget"; } > "$summary"
}
# record STAGE PASS|FAIL|SKIP SECONDS DETAIL
record() {
  results+=("$(printf '%-9s %-4s %4ss  %s' "$1" "$2" "$3" "$4")")
  echo "gpu_session: $1 $2 ($3 s): $4" | tee -a "$log"
  write_summary
}

# ---------------------------------------------------------------- the machine
# One python start (torch's import costs seconds): the device line, the GPU's architecture
# (9.0 where there is none: the GPU machine's), whether torch sees a GPU.
machine=$("$PY" - 2>/dev/null <<'EOF' || printf 'python/torch not importable\n9.0\n0\n'
import subprocess, torch
gpu = torch.cuda.is_available()
try:
    rev = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                  stderr=subprocess.DEVNULL).strip()
except Exception:
    rev = "unknown"
print(f"{torch.cuda.get_device_name() if gpu else 'no CUDA device'}; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}; "
      f"git {rev}")
print("%d.%d" % torch.cuda.get_device_capability() if gpu else "9.0")
print(int(gpu))
EOF
)
device_line=$(sed -n 1p <<< "$machine")
arch=$(sed -n 2p <<< "$machine")
has_gpu=$(sed -n 3p <<< "$machine")
section "machine"
{ echo "$device_line"
  echo "rehearsal=$rehearse budget=${budget}s cores=$(nproc) arch=$arch python=$("$PY" -V 2>&1)"
  if [ "$rehearse" = 0 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -n 2
  fi; } >> "$log" 2>&1
if [ "$rehearse" = 0 ] && [ "$has_gpu" != 1 ]; then
  echo "gpu_session: WARNING: torch sees no CUDA device" | tee -a "$log"
fi
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")

# ---------------------------------------------------------------- 1 build
# The prebuilt wheel: FASTLSTM_WHEEL, else the CUDA 13 abi3 wheel in .whl/ (make gpu-wheel puts
# CI's recipe's wheel there; the device tool carries it with `carry: [".whl"]`).
prebuilt_wheel() {
  [ -n "${FASTLSTM_WHEEL:-}" ] && { echo "$FASTLSTM_WHEEL"; return; }
  ls "$root"/.whl/fastlstm-*+cu13-cp310-abi3-*.whl 2>/dev/null | head -n 1
}

# The extension imports with its kernels for KEY (CUDA there, CPU in a rehearsal).
kernels_import() {
  "$PY" -c "import torch, fastlstm, sys
sys.exit(not torch._C._dispatch_has_kernel_for_dispatch_key('fastlstm::lstm_layer_forward', '$1'))" \
    >> "$log" 2>&1
}

# Puts the wheel's extension into DEST/fastlstm/ (the checkout's, on the GPU machine).
extract_extension() {
  "$PY" - "$1" "$2" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith("fastlstm/_C") and n.endswith(".so")]
    for name in names:
        z.extract(name, sys.argv[2])
        print("extracted", name)
sys.exit(0 if names else "no fastlstm/_C*.so in the wheel")
EOF
}

run_build() {
  local cap rc t0=$SECONDS how pip_args wheel key=CUDA
  cap=$(cap_for "${FASTLSTM_BUILD_CAP:-240}")
  no_time build "$cap" && return 1
  section "build (cap ${cap}s)"
  [ "$rehearse" = 1 ] && key=CPU
  export TORCH_CUDA_ARCH_LIST="$arch" FASTLSTM_CUDA_ARCHS="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  wheel=$(prebuilt_wheel)
  if [ -n "$wheel" ]; then
    # No compile: install the wheel, and put its extension into the checkout's fastlstm/ too,
    # since the later stages run from the checkout (python -m puts it first on sys.path).
    how="prebuilt wheel $(basename "$wheel")"
    local where="$root"
    if [ "$rehearse" = 1 ]; then
      # Nothing installed and the checkout untouched: pip's dry run, then the wheel's extension
      # beside a copy of the package in a scratch folder, imported from there.
      how="rehearsal: $how: pip install --dry-run, its extension loaded from a scratch copy"
      where="$work/prebuilt"
      mkdir -p "$where/fastlstm" && cp "$root"/fastlstm/*.py "$where/fastlstm/"
      "$PY" -m pip install --no-deps --no-index --dry-run "$wheel" > "$work/build.log" 2>&1 &&
        extract_extension "$wheel" "$where" >> "$work/build.log" 2>&1
    else
      "$PY" -m pip install --no-deps --no-index --force-reinstall "$wheel" > "$work/build.log" 2>&1 &&
        extract_extension "$wheel" "$root" >> "$work/build.log" 2>&1
    fi
    rc=$?
    append_log "$work/build.log"
    if [ $rc -eq 0 ] && (cd "$where" && PYTHONPATH="$where" kernels_import $key); then
      record build PASS $((SECONDS - t0)) "$how"
      return 0
    fi
    echo "gpu_session: the prebuilt wheel failed (rc=$rc, or no $key kernel); building from source" \
      | tee -a "$log"
    [ "$rehearse" = 1 ] && { record build FAIL $((SECONDS - t0)) "$how failed"; return 1; }
    rm -f "$root"/fastlstm/_C*.so
  fi
  how="${wheel:+after the wheel failed: }editable build for sm_${arch/./}, MAX_JOBS=$MAX_JOBS"
  pip_args=(install --no-build-isolation --no-deps -e .)
  if [ "$rehearse" = 1 ]; then
    # The same pip command as a dry run (no compile, nothing installed), CPU only; then the
    # extension already built in the checkout must import.
    how="rehearsal: pip ${pip_args[*]} --dry-run; import of the existing build"
    FASTLSTM_FORCE_CPU=1 timeout -k 10 "$cap" "$PY" -m pip "${pip_args[@]}" --dry-run \
      > "$work/build.log" 2>&1
  else
    FASTLSTM_FORCE_CUDA=1 timeout -k 10 "$(cap_for "$cap")" "$PY" -m pip "${pip_args[@]}" \
      > "$work/build.log" 2>&1
  fi
  rc=$?
  append_log "$work/build.log"
  if [ $rc -ne 0 ]; then
    record build FAIL $((SECONDS - t0)) "pip rc=$rc$([ $rc = 124 ] && echo ' (timeout)') ($how); see session.log"
    return 1
  fi
  if ! kernels_import $key; then
    record build FAIL $((SECONDS - t0)) "built, but no fastlstm $key kernel imports ($how)"
    return 1
  fi
  record build PASS $((SECONDS - t0)) "$how"
}

# ---------------------------------------------------------------- 2 test
run_test() {
  local cap rc t0=$SECONDS files counts
  cap=$(cap_for "${FASTLSTM_TEST_CAP:-150}")
  no_time test "$cap" && return 1
  section "test (cap ${cap}s)"
  # test_cuda.py, files named in FASTLSTM_GPU_TEST_FILES, and files with gpu-marked tests (the
  # benchmark suite's too, run once each: --benchmark-disable); the plugin keeps the GPU tests
  # of those.
  files=$( { echo tests/test_cuda.py; for f in ${FASTLSTM_GPU_TEST_FILES:-}; do echo "tests/$f"; done
             grep -l -E 'mark\.gpu\b' tests/test_*.py benchmarks/test_*.py 2>/dev/null; } | sort -u)
  local bench_flag=""
  grep -q '^benchmarks/' <<< "$files" && bench_flag=--benchmark-disable
  rm -f "$out/junit.xml"
  # shellcheck disable=SC2086
  PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" timeout -k 15 "$cap" \
    "$PY" -m pytest -p gpu_tests_plugin -p no:cacheprovider -q -rs --continue-on-collection-errors \
    --junitxml="$out/junit.xml" $bench_flag $files > "$work/test.log" 2>&1
  rc=$?
  append_log "$work/test.log"
  counts=$("$PY" - "$out/junit.xml" <<'EOF' 2>/dev/null || echo "no JUnit XML"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = root if root.tag == "testsuite" else root.find("testsuite")
n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(f"{n - f - e - k} passed, {f} failed, {e} errors, {k} skipped")
EOF
)
  local verdict=PASS
  [ $rc -ne 0 ] && verdict=FAIL
  # On the GPU machine, all skipped means no GPU was seen: not a pass.
  if [ "$rehearse" = 0 ] && [[ "$counts" == "0 passed"* || "$counts" == "no JUnit"* ]]; then verdict=FAIL; fi
  record test $verdict $((SECONDS - t0)) "pytest rc=$rc$([ $rc = 124 ] && echo ' (timeout)'): $counts; $(echo $files | wc -w) files"
  [ $verdict = PASS ]
}

# ---------------------------------------------------------------- 3 sanitize
run_sanitize() {
  local cap t0=$SECONDS tool rc=0 shapes_rc=0 v verdicts="" failed=0 each
  cap=$(cap_for "${FASTLSTM_SANITIZE_CAP:-200}")
  no_time sanitize "$cap" && return 1
  section "sanitize (cap ${cap}s)"
  if [ "$rehearse" = 1 ]; then
    # The verdict parser on sample logs (pass, fail, missing line, timeout, refused device), and
    # the shapes script on the CPU, whose output then stands in for each tool's log.
    "$PY" scripts/sanitizer_verdict.py --self-test >> "$log" 2>&1 || { failed=1; verdicts="parser self-test FAILED; "; }
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$cap" "$PY" scripts/sanitize_shapes.py --device cpu > "$work/shapes_cpu.log" 2>&1
    shapes_rc=$?
  fi
  local tools=(memcheck racecheck synccheck initcheck) i cmd stand_in refused=""
  for i in "${!tools[@]}"; do
    tool=${tools[$i]}
    # What is left of the stage's cap, shared out over the tools still to run.
    each=$(( (cap - (SECONDS - t0)) / (${#tools[@]} - i) ))
    if [ "$each" -lt 10 ]; then verdicts+="$tool: no time left; "; failed=1; continue; fi
    if [ -n "${refused:-}" ]; then verdicts+="$tool: not run ($refused); "; failed=1; continue; fi
    if [ "$rehearse" = 1 ]; then
      stand_in="========= ERROR SUMMARY: 0 errors [rehearsal stand-in]"
      [ "$tool" = racecheck ] && stand_in="========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings) [rehearsal stand-in]"
      cmd=(bash -c 'cat "$1"; echo "$2"; exit "$3"' _ "$work/shapes_cpu.log" "$stand_in" "$shapes_rc")
    else
      # PYTHONPATH: the checkout's fastlstm (a script's folder, not the cwd, heads sys.path).
      cmd=(env PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$sanitizer" --tool "$tool" "$PY" scripts/sanitize_shapes.py)
    fi
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 10 "$each" "${cmd[@]}" > "$work/san_$tool.log" 2>&1
    rc=$?
    echo "--- compute-sanitizer --tool $tool: rc=$rc, cap ${each}s" >> "$log"
    append_log "$work/san_$tool.log"
    v=$("$PY" scripts/sanitizer_verdict.py "$tool" "$work/san_$tool.log" "$rc") || failed=1
    verdicts+="$tool $v; "
    [[ "$v" == PASS* ]] || failed=1
    # A sanitizer that refuses the device (seen on gVisor machines) refuses every tool: skip them.
    [[ "$v" == *"could not run"* ]] && refused="the sanitizer could not run, as for $tool"
  done
  if [ $failed = 0 ]; then record sanitize PASS $((SECONDS - t0)) "${verdicts%; }"
  else record sanitize FAIL $((SECONDS - t0)) "${verdicts%; }"; return 1; fi
}

# ---------------------------------------------------------------- 4 bench
run_bench() {
  local cap rc t0=$SECONDS device=cuda json state
  cap=$(cap_for "${FASTLSTM_BENCH_CAP:-200}")
  no_time bench "$cap" && return 1
  section "bench (cap ${cap}s, $bench_config)"
  [ "$rehearse" = 1 ] && device=cpu
  rm -f "$out"/*.json "$out"/*.md "$out"/*.png "$out"/*.tmp   # an earlier run's
  if [ "$rehearse" = 1 ]; then
    # The GPU config must load and expand (nothing runs); a tiny config runs on the CPU below.
    local listing
    listing=$("$PY" -m benchmarks --list --device cuda --config benchmarks/configs/gpu_session.json 2>&1) \
      || { echo "$listing" >> "$log"; record bench FAIL $((SECONDS - t0)) "gpu_session.json does not load"; return 1; }
    echo "benchmarks/configs/gpu_session.json on cuda: $(echo "$listing" | wc -l) jobs" >> "$log"
  fi
  # SIGTERM at the cap: the suite stops after the job in progress and writes every output for
  # the jobs done (--incremental); the JSON is also rewritten after every job, should it be killed.
  local extra=()
  # The CPU's memory probe is not what the GPU runs (and costs a second a job): off in rehearsal.
  [ "$rehearse" = 1 ] && extra=(--no-memory)
  timeout -k 30 "$cap" "$PY" -m benchmarks --config "$bench_config" --device "$device" \
    --out "$out" --incremental "${extra[@]}" > "$work/bench.log" 2>&1
  rc=$?
  tr '\r' '\n' < "$work/bench.log" | grep -v '^bench .*\[' > "$work/bench_clean.log"
  append_log "$work/bench_clean.log"
  rm -f "$out"/*.tmp
  json=$(ls -t "$out"/*.json 2>/dev/null | head -n 1)
  state=$("$PY" - "$json" <<'EOF' 2>/dev/null || echo "no JSON"
import json, sys
d = json.load(open(sys.argv[1]))
done, total = len(d["results"]), d["run"].get("jobs", len(d["results"]))
bad = sum("error" in r for r in d["results"])
print(f"{done} of {total} jobs, {bad} failed, {len(d.get('per_step', []))} per-step rows"
      + (f"; {d['run']['stopped']}" if d["run"].get("stopped") else ""))
EOF
)
  if [ $rc -eq 0 ] && [[ "$state" != "no JSON" ]] && [[ "$state" == *" 0 failed"* ]]; then
    record bench PASS $((SECONDS - t0)) "$state"
  else
    record bench FAIL $((SECONDS - t0)) "rc=$rc$([ $rc = 124 ] && echo ' (cap reached; partial results kept)'): $state"
    return 1
  fi
}

# ---------------------------------------------------------------- 5 wheel
run_wheel() {
  local cap rc t0=$SECONDS site="$work/wheel_site" wheel
  if [ "$stage" = all ] && [ "$(left)" -lt "$wheel_needs" ]; then
    record wheel SKIP 0 "$(left) s left of the budget, the stage needs $wheel_needs"
    return 0
  fi
  cap=$(cap_for "${FASTLSTM_WHEEL_CAP:-300}")
  section "wheel (cap ${cap}s)"
  if [ "$rehearse" = 1 ]; then
    # Building a wheel means compiling: CI's `make wheel` and scripts/ci_wheel.sh cover it.
    # Here: the script it runs compiles.
    if "$PY" -m py_compile scripts/wheel_smoke.py >> "$log" 2>&1; then
      record wheel PASS $((SECONDS - t0)) "rehearsal: no build (CI's make wheel covers it); wheel_smoke.py compiles"
    else record wheel FAIL $((SECONDS - t0)) "rehearsal: wheel_smoke.py does not compile"; return 1; fi
    return 0
  fi
  # No network there: the prebuilt wheel (else one built for this GPU's architecture),
  # installed alone into a folder put first on the path, run from outside the checkout so that
  # nothing comes from the source tree.
  mkdir -p "$work/wheel" "$work/wheel_run"
  wheel=$(prebuilt_wheel)
  if [ -n "$wheel" ]; then
    rc=0
    echo "prebuilt $wheel" > "$work/wheel.log"
  else
    FASTLSTM_CUDA_ARCHS="$arch" FASTLSTM_FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      timeout -k 10 "$cap" "$PY" -m pip wheel --no-build-isolation --no-deps \
      --wheel-dir "$work/wheel" . > "$work/wheel.log" 2>&1
    rc=$?
    wheel=$(ls "$work"/wheel/fastlstm-*.whl 2>/dev/null | head -n 1)
  fi
  if [ $rc -eq 0 ] && [ -n "$wheel" ]; then
    echo "$wheel" >> "$work/wheel.log"
    "$PY" -m pip install --no-deps --no-index --target "$site" "$wheel" >> "$work/wheel.log" 2>&1
    cp scripts/wheel_smoke.py "$work/wheel_run/"
    (cd "$work/wheel_run" && PYTHONPATH="$site" timeout -k 10 "$(cap_for 60)" "$PY" wheel_smoke.py \
       "$wheel" --source "$root/fastlstm" --site "$site" --expect-cuda) >> "$work/wheel.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
      (cd "$work/wheel_run" && PYTHONPATH="$site" timeout -k 10 "$(cap_for 120)" "$PY" -m pytest -q -rs \
         -p no:cacheprovider "$root/tests/test_cuda.py") >> "$work/wheel.log" 2>&1
      rc=$?
    fi
  fi
  append_log "$work/wheel.log"
  if [ $rc -eq 0 ]; then record wheel PASS $((SECONDS - t0)) "$(basename "$wheel"): smoke test and GPU tests passed"
  else record wheel FAIL $((SECONDS - t0)) "rc=$rc$([ $rc = 124 ] && echo ' (timeout)'); see session.log"; return 1; fi
}

write_summary
status=0
case "$stage" in
  all)
    run_build || status=1
    run_test || status=1
    run_sanitize || status=1
    run_bench || status=1
    run_wheel || status=1 ;;
  *) "run_$stage" || status=1 ;;
esac
write_summary
cat "$summary"
exit $status
