#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most ~10 minutes on the borrowed GPU machine
# (H100/H200, 16 cores, Python 3.12, torch 2.11.0+cu130, nvcc 13.0, compute-sanitizer; no
# network), stage by stage in order of value, each under its own time cap (`timeout`). A failing
# stage is logged and the next one still runs.
#
#   bash scripts/gpu_session.sh all OUTDIR        build, plan, test, sanitize, bench, then wheel
#   bash scripts/gpu_session.sh STAGE[,STAGE] [OUTDIR]   some stages (and the plan), in that
#                                                 order: build|test|sanitize|bench|wheel
#   bash scripts/gpu_session.sh --rehearse all OUTDIR   (or FASTLSTM_GPU_REHEARSAL=1) the same on
#       a machine without a GPU, GPU-only steps skipped: tests/test_gpu_session_script.py runs it
#       in CI so that a typo cannot waste a GPU window. It never builds or installs fastlstm: it
#       needs the extension already built (make test does that).
#
#  1 build     the prebuilt abi3 wheel when there is one (FASTLSTM_WHEEL, else the one in .whl/
#              (FASTLSTM_WHEEL_DIR) from `make gpu-wheel` whose CUDA major version is torch's:
#              +cu13 for torch 2.11.0+cu130): pip --no-deps --no-index, its extension also copied into the
#              checkout's fastlstm/; no compile. Else, or if it fails to load: pip install
#              --no-build-isolation --no-deps -e . for this GPU's architecture, MAX_JOBS = cores.
#  - plan      scripts/time_plan.py (after the build, or first when the build is not run): each
#              stage's expected GPU time from its counts (tests collected per group, sanitizer
#              cases, benchmark jobs) times per-item estimates (named constants there); FAIL when
#              the sum exceeds 540 s (FASTLSTM_TIME_PLAN_LIMIT). It writes the test groups.
#  2 test      the GPU tests (tests/test_cuda.py, every test marked gpu, benchmarks/ too, the files
#              in FASTLSTM_GPU_TEST_FILES) in groups, each in its own pytest process under its own
#              cap, so that a fault or a hang costs only its group: persistent (and cluster), then
#              device schedule, then test_cuda.py, then the other marked tests
#              (scripts/gpu_tests_plugin.py --gpu-group). A cap stops pytest with SIGINT
#              (`timeout -s INT --kill-after=10`): it still writes its JUnit XML and summary. A
#              per-test guard (the plugin's --gpu-test-cap) turns a hang into a failure naming the
#              test. pytest -v: every test's id and outcome in the log. The groups' JUnit XML
#              merged into junit.xml (scripts/junit_groups.py), one <testsuite> a group.
#  3 sanitize  compute-sanitizer memcheck, racecheck, synccheck, initcheck, each instrumenting only
#              fastlstm's kernels (--kernel-name kns=fastlstm: kernel_substring; the filter is
#              first checked to take every kernel of the built extension), over the small cases of
#              scripts/sanitize_shapes.py (step, persistent, device-schedule, cluster paths), each
#              case under its own cap, PYTORCH_NO_CUDA_MEMORY_CACHING=1; each tool judged from its
#              summary line by scripts/sanitizer_verdict.py (a missing line fails, a rejected
#              option says so); the stage's cap is 120 s.
#  4 bench     benchmarks/configs/gpu_session.json, --incremental: the JSON rewritten after every
#              job (a workload in one mode), so that a cut run keeps what it measured. It stops by
#              itself 25 s before its cap (--time-limit), after the job in progress, with every
#              output written; the cap's SIGTERM does the same should that fail. Status
#              (scripts/bench_status.py): "finished", "cut with N of M workloads" (a PASS, also on
#              the SIGTERM, though timeout then returns 124) or "failed". The persistent-path
#              grids come first (the cap cuts the tail). Its size: 240 jobs, each 4 contenders x
#              (1 warm-up + 3 reps + 1 memory probe). A cost model (fastlstm ~7 us per step and
#              direction, or the recurrent GEMM at ~25 TFLOP/s fp32 / ~100 bf16 when slower; cuDNN
#              >= 5 us a step; backward = 2x forward; bucketed = 4 sequential calls; ~0.15 s a job
#              for setup, gc and the JSON) gave ~80 s for the 168 per-step jobs, plus ~15 s of
#              CUDA/cuDNN start; with the 72 persistent and cluster jobs and twice that for what the
#              model misses, ~4 minutes: the 200 s cap may cut the last grids. session.log then
#              gets the per-step prediction of benchmarks/gpu_model.py (docs/GPU_COST_MODEL.md),
#              to set beside what was measured.
#  5 wheel     the prebuilt wheel (else one built for this GPU's architecture) installed alone,
#              smoke test and GPU tests against it; only when FASTLSTM_WHEEL_STAGE_NEEDS (150)
#              seconds are left.
#
# OUTDIR gets at most 8 files (the device tool's limit): summary.txt (one line per stage: PASS,
# FAIL or SKIP, with the reason; rewritten after every stage), session.log (every stage's output,
# long logs cut in the middle), junit.xml, and the benchmark's <tag>.json, <tag>.md and two PNGs.
# Knobs (environment): FASTLSTM_TEST_CAP (the test stage, 240 s), FASTLSTM_GPU_TEST_CAP (per
# test; default from the plan), FASTLSTM_GPU_HANG_GRACE (10 s), FASTLSTM_GPU_TEST_GROUPS (see
# scripts/gpu_tests_plugin.py), FASTLSTM_SANITIZE_CAP (120 s), FASTLSTM_SANITIZE_CASE_CAP (20 s),
# FASTLSTM_SANITIZER_KERNELS (fastlstm), FASTLSTM_BENCH_CAP (200 s), FASTLSTM_BENCH_TAIL (25 s),
# FASTLSTM_BENCH_TIME_LIMIT (cap - tail), FASTLSTM_TIME_PLAN_LIMIT (540 s).
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
# STAGE: all, one stage, or a comma-separated list (run in the order given, the plan first, or
# right after the build).
IFS=, read -ra stages <<< "$stage"
[ ${#stages[@]} -gt 0 ] || stages=(none)
for s in "${stages[@]}"; do
  case "$s" in
    build|test|sanitize|bench|wheel) ;;
    all) [ ${#stages[@]} = 1 ] && continue ;&
    *) echo "usage: $0 [--rehearse] all|STAGE[,STAGE...] [OUTDIR]; STAGE: build|test|sanitize|bench|wheel" >&2; exit 2 ;;
  esac
done
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
machine=$("$PY" - 2>/dev/null <<'EOF' || printf 'python/torch not importable\n9.0\n0\n\n'
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
print((torch.version.cuda or "").split(".")[0])
EOF
)
device_line=$(sed -n 1p <<< "$machine")
arch=$(sed -n 2p <<< "$machine")
has_gpu=$(sed -n 3p <<< "$machine")
# The CUDA major version torch is built for (13 for torch 2.11.0+cu130): the wheel to install.
torch_cuda=$(sed -n 4p <<< "$machine")
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
# The prebuilt wheel: FASTLSTM_WHEEL, else the abi3 wheel in .whl/ whose CUDA major version is
# torch's (+cu13 for torch 2.11.0+cu130, +cu12 for a +cu12x torch; make gpu-wheel puts CI's
# recipe's wheels there; the device tool carries them with `carry: [".whl"]`). None fits a
# torch without CUDA: the build stage then compiles.
prebuilt_wheel() {
  [ -n "${FASTLSTM_WHEEL:-}" ] && { echo "$FASTLSTM_WHEEL"; return; }
  [ -n "$torch_cuda" ] || return 0
  ls "${FASTLSTM_WHEEL_DIR:-$root/.whl}"/fastlstm-*+cu"$torch_cuda"-cp310-abi3-*.whl 2>/dev/null |
    head -n 1
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
    # the library, and the record of what it needs (fastlstm/_cuda_check.py reads it)
    names = [n for n in z.namelist() if n.startswith("fastlstm/_C") and n.endswith(".so")
             or n == "fastlstm/_build_info.py"]
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

# ---------------------------------------------------------------- plan
# The time plan (scripts/time_plan.py) and the test groups it writes for run_test.
groups_file="$work/groups.tsv"
run_plan() {
  local cap rc t0=$SECONDS how=source v
  cap=$(cap_for "${FASTLSTM_PLAN_CAP:-60}")
  no_time plan "$cap" && return 1
  section "plan (cap ${cap}s)"
  [ -n "$(prebuilt_wheel)" ] && how=wheel
  rm -f "$groups_file"
  PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$cap" "$PY" \
    scripts/time_plan.py --groups-out "$groups_file" --build "$how" \
    --bench-config "${FASTLSTM_BENCH_CONFIG:-benchmarks/configs/gpu_session.json}" \
    --bench-cap "${FASTLSTM_BENCH_CAP:-200}" --bench-tail "${FASTLSTM_BENCH_TAIL:-25}" \
    --sanitize-cap "${FASTLSTM_SANITIZE_CAP:-120}" \
    --limit "${FASTLSTM_TIME_PLAN_LIMIT:-540}" > "$work/plan.log" 2>&1
  rc=$?
  # Printed too: the rehearsal's (and CI's) output shows the plan.
  grep -v '^time plan: ' "$work/plan.log" | tee -a "$log"
  v=$(grep '^time plan: ' "$work/plan.log" | tail -n 1)
  v=${v#time plan: }
  v=${v#PASS: }
  v=${v#FAIL: }
  [ -n "$v" ] || v="no plan (rc=$rc$([ $rc = 124 ] && echo ', timeout')): see session.log"
  if [ $rc -eq 0 ]; then record plan PASS $((SECONDS - t0)) "$v"
  else record plan FAIL $((SECONDS - t0)) "$v"; return 1; fi
}

# ---------------------------------------------------------------- 2 test
run_test() {
  local t0=$SECONDS stage_cap cap rc line name gcap est count tcap files specs=() lines=()
  local grace="${FASTLSTM_GPU_HANG_GRACE:-10}" bench_flag merged verdict=PASS
  stage_cap=$(cap_for "${FASTLSTM_TEST_CAP:-240}")
  no_time test "$stage_cap" && return 1
  section "test (cap ${stage_cap}s)"
  if [ -s "$groups_file" ]; then
    mapfile -t lines < "$groups_file"
  else
    # No groups from the plan: one group of every candidate file (the plugin keeps the GPU tests).
    echo "gpu_session: no test groups from the plan: one group of every GPU test file" | tee -a "$log"
    lines=("$(printf 'all\t%s\t0\t?\t90\t%s' "$stage_cap" "$( { echo tests/test_cuda.py
      grep -l -E 'mark\.gpu\b' tests/test_*.py benchmarks/test_*.py 2>/dev/null; } | sort -u | tr '\n' ' ')")")
  fi
  rm -f "$out/junit.xml"
  for line in "${lines[@]}"; do
    IFS=$'\t' read -r name gcap est count tcap files <<< "$line"
    tcap=${FASTLSTM_GPU_TEST_CAP:-$tcap}
    # The group's cap, within what is left of the stage's and of the budget.
    cap=$((stage_cap - (SECONDS - t0)))
    [ "$(left)" -lt "$cap" ] && cap=$(left)
    if [ "$cap" -lt 5 ]; then
      echo "gpu_session: test group $name not run: no time left" | tee -a "$log"
      specs+=("$name:notrun:0:$work/junit_$name.xml:$work/test_$name.log")
      continue
    fi
    [ "$gcap" -lt "$cap" ] && cap=$gcap
    bench_flag=""
    if grep -q 'benchmarks/' <<< "$files" && "$PY" -c 'import pytest_benchmark' 2>/dev/null; then
      bench_flag=--benchmark-disable
    fi
    section "test group $name: $count tests, cap ${cap}s (plan: ${est}s), per-test cap ${tcap}s"
    # shellcheck disable=SC2086
    PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" timeout -s INT --kill-after=10 "$cap" \
      "$PY" -m pytest -p gpu_tests_plugin -p no:cacheprovider -v -rfEs --durations=5 \
      --continue-on-collection-errors --gpu-group "$name" --gpu-test-cap "$tcap" \
      --gpu-hang-grace "$grace" --junitxml="$work/junit_$name.xml" $bench_flag $files \
      < /dev/null > "$work/test_$name.log" 2>&1
    rc=$?
    echo "--- test group $name: pytest rc=$rc$([ $rc = 124 ] && echo ' (its cap: SIGINT)')$([ $rc = 137 ] && echo ' (killed)')" >> "$log"
    append_log "$work/test_$name.log"
    specs+=("$name:$rc:$cap:$work/junit_$name.xml:$work/test_$name.log")
  done
  local req=()
  # On the GPU machine, nothing passed means no GPU was seen: not a pass.
  [ "$rehearse" = 0 ] && req=(--require-passed)
  merged=$("$PY" scripts/junit_groups.py --out "$out/junit.xml" "${req[@]}" "${specs[@]}" 2>&1) || verdict=FAIL
  echo "$merged" >> "$log"
  record test $verdict $((SECONDS - t0)) "$merged"
  [ $verdict = PASS ]
}

# ---------------------------------------------------------------- 3 sanitize
# Only fastlstm's kernels are instrumented: compute-sanitizer's --kernel-name takes
# key=value filters, kns (kernel_substring) matching a substring of the kernel's mangled name
# (fastlstm's kernels live in namespace fastlstm: _ZN8fastlstm4cuda...). Torch's and cuBLAS's
# kernels still run, unchecked, which keeps each tool's run short. If this syntax were wrong,
# the tool would refuse its command line and print no summary line: the verdict then says
# "the sanitizer rejected its command line". FASTLSTM_SANITIZER_KERNELS= (empty) checks every
# kernel. (initcheck: should it report reads, in fastlstm's kernels, of memory that torch's
# unchecked kernels wrote, rerun it with the filter off before suspecting fastlstm.)
sanitizer_kernels="${FASTLSTM_SANITIZER_KERNELS-fastlstm}"
run_sanitize() {
  local cap t0=$SECONDS tool rc=0 shapes_rc=0 v verdicts="" failed=0 each
  local case_cap="${FASTLSTM_SANITIZE_CASE_CAP:-20}" filter=() fc
  cap=$(cap_for "${FASTLSTM_SANITIZE_CAP:-120}")
  no_time sanitize "$cap" && return 1
  section "sanitize (cap ${cap}s)"
  [ -n "$sanitizer_kernels" ] && filter=(--kernel-name "kns=$sanitizer_kernels")
  if [ -n "$sanitizer_kernels" ]; then
    # The filter must take every kernel of the extension the tools will load (a filter that
    # matches nothing would check nothing and pass).
    v=$("$PY" scripts/sanitizer_verdict.py --filter-covers "$sanitizer_kernels" \
        "$root"/fastlstm/_C*.so 2>&1)
    fc=$?
    echo "$v" >> "$log"
    [ $fc -eq 0 ] && verdicts+="filter kns=$sanitizer_kernels: $(grep -o 'all [0-9]* kernels' <<< "$v"); "
    if [ $fc -ne 0 ]; then
      if [ "$rehearse" = 1 ] && [[ "$v" == *"no kernel launch stub"* ]]; then
        verdicts+="filter not checked here (no CUDA kernels in this build); "
      else failed=1; verdicts+="${v#kernel filter }; "; fi
    fi
  fi
  if [ "$rehearse" = 1 ]; then
    # The verdict parser on sample logs (pass, fail, missing line, timeout, refused device,
    # rejected option, a case past its cap), and the shapes script on the CPU, whose output then
    # stands in for each tool's log.
    "$PY" scripts/sanitizer_verdict.py --self-test >> "$log" 2>&1 || { failed=1; verdicts+="parser self-test FAILED; "; }
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$cap" "$PY" scripts/sanitize_shapes.py \
      --device cpu --case-cap "$case_cap" > "$work/shapes_cpu.log" 2>&1
    shapes_rc=$?
  fi
  local tools=(memcheck racecheck synccheck initcheck) i cmd gpu_cmd stand_in refused=""
  for i in "${!tools[@]}"; do
    tool=${tools[$i]}
    # What is left of the stage's cap, shared out over the tools still to run.
    each=$(( (cap - (SECONDS - t0)) / (${#tools[@]} - i) ))
    if [ "$each" -lt 10 ]; then verdicts+="$tool: no time left; "; failed=1; continue; fi
    if [ -n "${refused:-}" ]; then verdicts+="$tool: not run ($refused); "; failed=1; continue; fi
    # PYTHONPATH: the checkout's fastlstm (a script's folder, not the cwd, heads sys.path).
    gpu_cmd=(env PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$sanitizer" --tool "$tool"
             "${filter[@]}" "$PY" scripts/sanitize_shapes.py --case-cap "$case_cap")
    if [ "$rehearse" = 1 ]; then
      echo "--- rehearsal: on the GPU machine: ${gpu_cmd[*]}" >> "$log"
      stand_in="========= ERROR SUMMARY: 0 errors [rehearsal stand-in]"
      [ "$tool" = racecheck ] && stand_in="========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings) [rehearsal stand-in]"
      cmd=(bash -c 'cat "$1"; echo "$2"; exit "$3"' _ "$work/shapes_cpu.log" "$stand_in" "$shapes_rc")
    else
      echo "--- command: ${gpu_cmd[*]}" >> "$log"
      cmd=("${gpu_cmd[@]}")
    fi
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 10 "$each" "${cmd[@]}" > "$work/san_$tool.log" 2>&1
    rc=$?
    echo "--- compute-sanitizer --tool $tool: rc=$rc, cap ${each}s" >> "$log"
    append_log "$work/san_$tool.log"
    v=$("$PY" scripts/sanitizer_verdict.py "$tool" "$work/san_$tool.log" "$rc") || failed=1
    verdicts+="$tool $v; "
    [[ "$v" == PASS* ]] || failed=1
    # A sanitizer that refuses the device (seen on gVisor machines) or its command line refuses
    # every tool: skip them.
    [[ "$v" == *"could not run"* || "$v" == *"rejected its command line"* ]] && refused="as for $tool"
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
  # (The rehearsal's plan loaded and expanded benchmarks/configs/gpu_session.json for cuda.)
  # SIGTERM at the cap: the suite stops after the job in progress and writes every output for
  # the jobs done (--incremental); the JSON is also rewritten after every job, should it be killed.
  local extra=()
  # The CPU's memory probe is not what the GPU runs (and costs a second a job): off in rehearsal.
  [ "$rehearse" = 1 ] && extra=(--no-memory)
  # --time-limit: the suite stops by itself, cleanly, once it has run that long, leaving the job
  # in progress (seconds on the GPU) and the outputs (tables, plots) FASTLSTM_BENCH_TAIL (25) s
  # before the cap; the cap's SIGTERM and kill remain the backstop.
  local limit=$((cap - ${FASTLSTM_BENCH_TAIL:-25}))
  [ "$limit" -lt 1 ] && limit=1
  limit="${FASTLSTM_BENCH_TIME_LIMIT:-$limit}"   # (0: one job, then stop: the rehearsal's test)
  timeout -k 30 "$cap" "$PY" -m benchmarks --config "$bench_config" --device "$device" \
    --out "$out" --incremental --time-limit "$limit" "${extra[@]}" > "$work/bench.log" 2>&1
  rc=$?
  tr '\r' '\n' < "$work/bench.log" | grep -v '^bench .*\[' > "$work/bench_clean.log"
  append_log "$work/bench_clean.log"
  rm -f "$out"/*.tmp
  json=$(ls -t "$out"/*.json 2>/dev/null | head -n 1)
  # finished / cut with N of M workloads / failed (scripts/bench_status.py)
  state=$("$PY" scripts/bench_status.py "${json:-/nonexistent}" "$rc" 2>&1)
  echo "--- bench: rc=$rc$([ $rc = 124 ] && echo ' (the cap)'): $state" >> "$log"
  # Beside the measurement, the cost model's prediction (docs/GPU_COST_MODEL.md), to compare.
  echo "--- bench: the cost model's prediction (python -m benchmarks --gpu-model):" >> "$log"
  timeout 30 "$PY" -m benchmarks --gpu-model >> "$log" 2>&1 || echo "--- (no prediction)" >> "$log"
  if [[ "$state" == PASS* ]]; then
    record bench PASS $((SECONDS - t0)) "${state#PASS }"
  else
    record bench FAIL $((SECONDS - t0)) "${state#FAIL }"
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
    run_plan || status=1
    run_test || status=1
    run_sanitize || status=1
    run_bench || status=1
    run_wheel || status=1 ;;
  *)
    [[ ",$stage," == *,build,* ]] || { run_plan || status=1; }
    for s in "${stages[@]}"; do
      "run_$s" || status=1
      [ "$s" = build ] && { run_plan || status=1; }
    done ;;
esac
write_summary
cat "$summary"
exit $status
