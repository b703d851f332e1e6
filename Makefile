# Quick start: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LAWTAP := $(VENV)/bin/lawtap
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean kernels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Ahead-of-time copies of the packet-path kernels (src/lawtap/aot.py): rebuilt only when their
# sources changed; without them (no C compiler) lawtap runs the same kernels through numba.
kernels: $(STAMP)
	$(PY) -m lawtap.aot build --if-stale

samples/demo.pcap: $(STAMP) src/lawtap/generate.py
	$(LAWTAP) generate --seed 7 --sessions 300 -o samples/demo.pcap

demo: kernels samples/demo.pcap
	rm -rf demo-case
	$(LAWTAP) analyze samples/demo.pcap -o demo-case --json
	$(LAWTAP) summary demo-case

test: kernels
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: kernels
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: kernels
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-case bench/work
