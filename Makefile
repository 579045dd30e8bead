# `make train` and `make test` work on a fresh clone with only python3: they create .venv and install the
# project (pinned versions from constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-all bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m ssl_lightning.train $(ARGS)

# the default suite (what CI runs, about 10 minutes on 2 cores); test-all adds the tests marked slow
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

bench: $(STAMP)
	$(PY) -m ssl_lightning.bench $(ARGS)

# On a machine with NVIDIA GPUs: GPU tests, every method in bf16 on 1 and all GPUs, the bf16 bench and the eval
# protocols on 2 devices; writes gpu-check.md (under 10 minutes on one GPU). Without CUDA it says so and exits 0.
gpu-check: $(STAMP)
	$(PY) -m ssl_lightning.gpu_check $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
