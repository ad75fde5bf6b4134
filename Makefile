# Quick start: `make demo`, then `make ui`; `make test` runs the test suite.
# Each target creates .venv with Python 3.11 and installs the project when missing.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PULSE_HOME ?= $(CURDIR)/.pulse
export DAGSTER_HOME := $(PULSE_HOME)/dagster
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= 1
UI_PORT ?= 3000
# The Dagster instance settings of $PULSE_PROFILE (configs/deploy/<profile>/dagster.yaml), or
# ./dagster.yaml when unset; an unknown profile stops the target with the known ones.
INSTANCE_YAML = $$($(BIN)/python -c 'from pulse_assets.config import instance_yaml_path as p; print(p())')

MLFLOW_PORT ?= 5000

.PHONY: install demo ui mlflow-ui test lint bench check-defs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pulse_assets.cli demo

ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME) && cp "$(INSTANCE_YAML)" $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

mlflow-ui: $(STAMP)
	mkdir -p $(PULSE_HOME)
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(PULSE_HOME)/mlflow.db} \
		--default-artifact-root $(PULSE_HOME)/mlartifacts -h 127.0.0.1 -p $(MLFLOW_PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check pulse_assets pulse_assets_tests bench
	$(BIN)/ruff format --check pulse_assets pulse_assets_tests bench
	$(BIN)/mypy

check-defs: $(STAMP)
	mkdir -p $(DAGSTER_HOME) && cp "$(INSTANCE_YAML)" $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/dg check defs

bench: $(STAMP)
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/features_bench.py
	$(BIN)/python bench/backfill_bench.py
	$(BIN)/python bench/walk_forward_bench.py
	$(BIN)/python bench/drift_bench.py
	$(BIN)/python bench/training_bench.py
	$(BIN)/python bench/rules_bench.py
	$(BIN)/python bench/rule_language_bench.py
	$(BIN)/python bench/rules_rounds_bench.py
	$(BIN)/python bench/curriculum_bench.py
	$(BIN)/python bench/s3_bench.py
	$(BIN)/python bench/event_storage_bench.py
	$(BIN)/python bench/celery_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
