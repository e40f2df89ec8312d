# Fresh-machine entry points. Each target creates .venv, installs what it needs, builds
# fastlstm (CPU always; CUDA too when nvcc and a CUDA build of torch are present), then runs.
#   make bench   the main job: the benchmark suite, fastlstm vs nn.LSTM (padded, packed and
#                length-bucketed) on this machine's device; results in benchmarks/results/
#   make test    the test suite (GPU tests skip, with the reason, when there is no GPU), one
#                pytest-xdist worker per core; TEST_WORKERS=0 runs it in one process
#   make wheel   the wheel in dist/: cp310-abi3 (PyTorch's stable ABI), for every torch >= 2.10 and
#                Python >= 3.10, manylinux_2_28; CUDA (+cu13) for FASTLSTM_CUDA_ARCHS (default:
#                setup.py's DEFAULT_ARCHS, sm_80 to sm_100 + PTX) when nvcc is present, else CPU
#                only (+cpu)
#   make wheel CUDA=12          the +cu12 wheel beside it: CUDA 12.4 (scripts/cuda12_toolkit.sh; sm_80
#                to sm_90 + PTX) against the same torch's stable-ABI headers, for torch >= 2.10
#                built for CUDA 12
#   make audit-wheels           scripts/wheel_audit.py on every wheel in dist/: auditwheel's glibc
#                floor (manylinux_2_28 at most) and the CUDA libraries each links
#   make ci-wheel [CUDA=12]     that wheel, no rebuild, in a clean venv with torch 2.11.0 (Python
#                3.12), or for +cu12 torch 2.10.0 (cu128, Python 3.11); CI_WHEEL_ENVS for others:
#                smoke test and the parity subset (tests/wheel_subset.py)
#   make gpu-wheel [CUDA=12]    an sm_90 wheel in .whl/, which the GPU session installs instead of
#                compiling when it fits that machine's torch (carry .whl to the GPU machine)
#   make gpu-session OUT=dir    on the borrowed GPU machine: scripts/gpu_session.sh all (build,
#                GPU tests, compute-sanitizer, benchmark subset, wheel if time is left; ~10 min)
#   make gpu-rehearsal          the same here without a GPU, GPU-only steps skipped (no rebuild)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test bench build wheel ci-wheel gpu-wheel audit-wheels clean gpu-session gpu-rehearsal
OUT ?= gpu_out
# make test's pytest-xdist workers: auto (one per core) or a number; 0 runs the suite in-process.
TEST_WORKERS ?= auto
# CUDA=12: the +cu12 wheel (a CUDA 12 toolkit of its own); empty: torch's CUDA major (+cu13 with
# requirements-dev.txt's torch), or +cpu without nvcc.
CUDA ?=
ifeq ($(CUDA),)
FLAVOUR_WHEELS = dist/fastlstm-*+cu13-*.whl dist/fastlstm-*+cpu-*.whl
WHEEL_ENV =
else ifeq ($(CUDA),12)
FLAVOUR_WHEELS = dist/fastlstm-*+cu12-*.whl
WHEEL_ENV = cuda12=$$(PYTHON=$(PY) scripts/cuda12_toolkit.sh) && CUDA_HOME=$$cuda12 \
	FASTLSTM_CUDA_MAJOR=12 FASTLSTM_FORCE_CUDA=1
else
$(error CUDA=$(CUDA): only CUDA=12, or none (torch's CUDA major version))
endif

# --no-compile: Python compiles each module as it is first imported; compiling all of torch's
# at install time cost about 40 s of every fresh venv on the 2-core CI machine.
$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	scripts/pip_retry.sh $(PY) --upgrade pip
	scripts/pip_retry.sh $(PY) --no-compile -r requirements-dev.txt
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install --no-build-isolation --no-deps -e .

test: build
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) tests

bench: build
	$(PY) -m benchmarks

# Against the torch in .venv (never an isolated build that would pull in another torch).
# Each flavour (+cu13, +cu12, +cpu) has its own name, so the wheels sit side by side in dist/
# (pip replaces a wheel of the same name); make ci-wheel takes the newest of the flavour.
wheel: $(VENV)/.deps
	$(WHEEL_ENV) $(PY) -m pip wheel --no-build-isolation --no-deps --wheel-dir dist .
	@ls -t dist/fastlstm-*.whl

audit-wheels: $(VENV)/.deps
	$(PY) scripts/wheel_audit.py dist/fastlstm-*.whl

gpu-session:
	bash scripts/gpu_session.sh all $(OUT)

gpu-rehearsal: build
	PYTHON=$(PY) bash scripts/gpu_session.sh --rehearse all $(OUT)

ci-wheel:
	scripts/ci_wheel.sh "$$(ls -t $(FLAVOUR_WHEELS) 2>/dev/null | head -n 1)" $(WHEEL_FLAGS)

gpu-wheel:
	TORCH_CUDA_ARCH_LIST=9.0 FASTLSTM_FORCE_CUDA=1 $(MAKE) wheel CUDA=$(CUDA)
	mkdir -p .whl && rm -f $(FLAVOUR_WHEELS:dist/%=.whl/%)
	cp "$$(ls -t $(FLAVOUR_WHEELS) 2>/dev/null | head -n 1)" .whl/ && ls .whl/

clean:
	rm -rf build dist *.egg-info fastlstm/_C*.so
