# Fresh-machine entry points. Each target creates .venv, installs what it needs, builds
# fastlstm (CPU always; CUDA too when nvcc and a CUDA build of torch are present), then runs.
#   make bench   the main job: the benchmark suite, fastlstm vs nn.LSTM (padded, packed and
#                length-bucketed) on this machine's device; results in benchmarks/results/
#   make test    the test suite (GPU tests skip, with the reason, when there is no GPU)
#   make wheel   the wheel in dist/: cp310-abi3 (PyTorch's stable ABI), for every torch >= 2.10 and
#                Python >= 3.10; CUDA (+cu13) for FASTLSTM_CUDA_ARCHS (default: setup.py's
#                DEFAULT_ARCHS, sm_80 to sm_100 + PTX) when nvcc is present, else CPU only (+cpu)
#   make ci-wheel               that wheel, no rebuild, in a clean venv with torch 2.11.0 (Python
#                3.12; CI_WHEEL_ENVS for others): smoke test and the parity subset
#                (tests/wheel_subset.py)
#   make gpu-wheel              an sm_90 wheel in .whl/, which the GPU session installs instead of
#                compiling (carry .whl to the GPU machine)
#   make gpu-session OUT=dir    on the borrowed GPU machine: scripts/gpu_session.sh all (build,
#                GPU tests, compute-sanitizer, benchmark subset, wheel if time is left; ~10 min)
#   make gpu-rehearsal          the same here without a GPU, GPU-only steps skipped (no rebuild)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test bench build wheel ci-wheel gpu-wheel clean gpu-session gpu-rehearsal
OUT ?= gpu_out

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	scripts/pip_retry.sh $(PY) --upgrade pip
	scripts/pip_retry.sh $(PY) -r requirements-dev.txt
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install --no-build-isolation --no-deps -e .

test: build
	$(PY) -m pytest -q -rs tests

bench: build
	$(PY) -m benchmarks

# Against the torch in .venv (never an isolated build that would pull in another torch).
wheel: $(VENV)/.deps
	rm -f dist/fastlstm-*.whl
	$(PY) -m pip wheel --no-build-isolation --no-deps --wheel-dir dist .
	@ls dist/fastlstm-*.whl

gpu-session:
	bash scripts/gpu_session.sh all $(OUT)

gpu-rehearsal: build
	PYTHON=$(PY) bash scripts/gpu_session.sh --rehearse all $(OUT)

ci-wheel:
	scripts/ci_wheel.sh $(lastword $(sort $(wildcard dist/fastlstm-*.whl))) $(WHEEL_FLAGS)

gpu-wheel:
	TORCH_CUDA_ARCH_LIST=9.0 FASTLSTM_FORCE_CUDA=1 $(MAKE) wheel
	rm -rf .whl && mkdir -p .whl && cp dist/fastlstm-*.whl .whl/

clean:
	rm -rf build dist *.egg-info fastlstm/_C*.so
