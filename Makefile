# Quick start: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LAWTAP := $(VENV)/bin/lawtap
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

samples/demo.pcap: $(STAMP) src/lawtap/generate.py
	$(LAWTAP) generate --seed 7 --sessions 300 -o samples/demo.pcap

demo: $(STAMP) samples/demo.pcap
	rm -rf demo-case
	$(LAWTAP) analyze samples/demo.pcap -o demo-case --json
	$(LAWTAP) summary demo-case

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-case bench/work
