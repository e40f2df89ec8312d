# Fresh-machine entry points. Each target creates .venv, installs what it needs, builds
# fastlstm (CPU always; CUDA too when nvcc and a CUDA build of torch are present), then runs.
#   make bench   the main job: the benchmark suite, fastlstm vs nn.LSTM (padded, packed and
#                length-bucketed) on this machine's device; results in benchmarks/results/
#   make test    the test suite (GPU tests skip, with the reason, when there is no GPU)
#   make wheel   a wheel in dist/ for this torch: CUDA for FASTLSTM_CUDA_ARCHS (default: setup.py's
#                DEFAULT_ARCHS, sm_80 to sm_100 + PTX) when nvcc is present, else CPU only
#   make gpu-session OUT=dir    on the borrowed GPU machine: scripts/gpu_session.sh all (build,
#                GPU tests, compute-sanitizer, benchmark subset, wheel if time is left; ~10 min)
#   make gpu-rehearsal          the same here without a GPU, GPU-only steps skipped (no rebuild)
#   make torch211               build and smoke-test against torch 2.11.0, the GPU machine's
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test bench build wheel clean gpu-session gpu-rehearsal torch211
OUT ?= gpu_out

$(VENV)/.deps: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
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

torch211:
	scripts/ci_torch211.sh

clean:
	rm -rf build dist *.egg-info fastlstm/_C*.so
