# fedx: `make demo` sets up and runs the anti-fraud example; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedx-installed
DEMO_OUT ?= runs/finance-antifraud

export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fedx run examples/finance_antifraud/fedx.yaml --out $(DEMO_OUT) $(if $(wildcard $(DEMO_OUT)/result.json),--force,$(if $(wildcard $(DEMO_OUT)/checkpoint/index.json),--resume,))
	$(PY) examples/finance_antifraud/make_table.py $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not deployment"

bench: setup
	$(PY) benchmarks/he_bench.py
	$(PY) benchmarks/scaling_bench.py

clean:
	rm -rf runs .pytest_cache
