# Two-command quick start: `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export MPLBACKEND := Agg
# OpenMP spin-waiting makes torch ~15x slower on 2 cores with one busy neighbour.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install test test-slow lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# On a CPU-only machine this resolves to the local CPU build; CUDA users may preinstall their own torch.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[gen,dev]"
	touch $(STAMP)

lint: install
	$(PY) -m ruff check lib generation demo tests benchmarks *.py
	$(PY) -m ruff format --check lib generation demo tests benchmarks *.py

test: install lint
	$(PY) -m pytest -q

# The long end-to-end runs (the real ToyShift demo and its claims for both architectures, ~9-10 min on 2 quiet cores).
test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(PY) -m demo --out outputs/demo

bench: install
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
