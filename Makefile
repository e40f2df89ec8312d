# Fresh-machine entry points. Each target creates .venv, installs what it needs, builds
# fastlstm (CPU always; CUDA too when nvcc and a CUDA build of torch are present), then runs.
#   make bench   the main job: fastlstm vs nn.LSTM (padded and packed) on this machine's device
#   make test    the test suite (GPU tests skip, with the reason, when there is no GPU)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test bench build clean

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

clean:
	rm -rf build *.egg-info fastlstm/_C*.so
