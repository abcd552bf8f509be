# The two commands a newcomer runs: `make run` and `make test`. Both build .venv/ first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk; an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[worker,embedded,test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/spacetime up

test: setup
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) var build *.egg-info
