# The two commands a newcomer runs: `make run` and `make test`. Both build .venv/ first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser run test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel on disk; an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[worker,embedded,test]'
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the browser tests (tests/browser/ skips, saying why, where it is absent).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is absent and cannot be installed here (needs root + apt): browser tests will skip"; fi; }

run: setup
	$(VENV)/bin/spacetime up

test: setup browser
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) var build *.egg-info
