# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if absent and installs what it needs (nothing is assumed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pyrovae-installed

.PHONY: demo test test-all bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pyrovae demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## the slow studies too
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) scripts/benchmark_training.py
	$(PY) scripts/benchmark_evaluation.py

clean:
	rm -rf $(VENV) runs build *.egg-info
