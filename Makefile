# fedx: `make demo` sets up and runs the anti-fraud example; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedx-installed
DEMO_OUT ?= runs/finance-antifraud

export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast bench bench-big bench-dp clean

# --force over a finished run, --resume into an interrupted one, nothing for a new folder.
again = $(if $(wildcard $(1)/result.json),--force,$(if $(wildcard $(1)/checkpoint/index.json),--resume,))

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The example as shipped (encrypted), the same run in plaintext for the cost of encryption, then the
# results table and per-bank plot (runs/finance-antifraud/table.md and per_bank.png). An interrupted
# run resumes from its checkpoint.
demo: setup
	$(VENV)/bin/fedx run examples/finance_antifraud/fedx.yaml --out $(DEMO_OUT) $(call again,$(DEMO_OUT))
	$(VENV)/bin/fedx run examples/finance_antifraud/fedx.yaml --out $(DEMO_OUT)-plain $(call again,$(DEMO_OUT)-plain) \
		--set security.encryption=none --set security.masking=none --set 'report.baselines=[]'
	$(PY) examples/finance_antifraud/make_table.py $(DEMO_OUT) --plain $(DEMO_OUT)-plain

# Three workers on two cores, one test file each at a time: the deployment tests spend most of their time
# waiting on Flower's polling, and the other workers fill that time.
test: setup
	$(PY) -m pytest -q -n 3 --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not deployment"

# Each benchmark prints its goals with PASS or the measured gap, and exits 1 when one is not met; the next
# benchmark runs all the same (the leading '-').
bench: setup
	-$(PY) benchmarks/he_bench.py
	-$(PY) benchmarks/he_round_bench.py
	-$(PY) benchmarks/he_sensitivity_bench.py --bits 15,16,17,19
	-$(PY) benchmarks/aggregators_bench.py
	-$(PY) benchmarks/scaling_bench.py

# A 10M-parameter model under bfv-compact, in simulation and over a TLS deployment (5 institutions).
bench-big: setup
	$(PY) benchmarks/bigmodel_bench.py

# Utility against epsilon on both examples: long (about 40 minutes on 2 cores).
bench-dp: setup
	$(PY) benchmarks/dp_bench.py

clean:
	rm -rf runs .pytest_cache
