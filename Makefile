# forecast: `make help` lists the targets. `make demo` and `make test` set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch: small and quick to install; CUDA users install their own torch first.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= forecasts
MODEL_NAME ?= forecast-lstm
# make forecast: AS_OF=YYYY-MM-DD (or today: the UTC date); OVERWRITE=true redoes a day already done
AS_OF ?= today
OVERWRITE ?= false
# make test: pytest-xdist workers, a module per worker at a time (TEST_WORKERS= runs in one process)
TEST_WORKERS ?= -n 2 --dist loadfile
# make serve: the scoring server's port (make ui takes 5000)
SERVE_PORT ?= 5001

.DEFAULT_GOAL := help
.PHONY: help install lint format test test-fast demo demo-covariates forecast backtest promote nightly serve ui bench-quick gpu-wheels wheel clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with dev tools

lint: $(STAMP) ## ruff lint and format check, and the import layers (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) ## run the whole test suite (unit + end-to-end; docs/testing.md)
	$(PY) -m pytest -q $(TEST_WORKERS)

test-fast: $(STAMP) ## the inner loop: no server, no subprocess, no real training (docs/testing.md)
	$(PY) -m pytest -q $(TEST_WORKERS) -m "not slow"

demo: $(STAMP) ## train on the embedded data, track + register in MLflow, batch-forecast
	$(PY) pipelines/train.py register=true registry.name=$(MODEL_NAME)
	$(PY) pipelines/batch_forecast.py model_uri=models:/$(MODEL_NAME)@champion \
		input=$$($(PY) -c "from forecast.datasets import dataset_path; print(dataset_path('m4_hourly_sample'))") \
		output=$(DEMO_DIR)/forecast.parquet
	$(PY) pipelines/demo_summary.py --forecast $(DEMO_DIR)/forecast.parquet --model-name $(MODEL_NAME)

EPF_MODEL ?= forecast-epf

demo-covariates: $(STAMP) ## covariates example: day-ahead prices with their load and wind forecasts (bundled EPF data)
	$(PY) pipelines/train.py data=epf_np_sample register=true registry.name=$(EPF_MODEL)
	mkdir -p $(DEMO_DIR)
	$(PY) -c "from forecast.datasets import load_dataset; d = load_dataset('epf_np_sample'); \
		d.iloc[:-24].to_parquet('$(DEMO_DIR)/epf_history.parquet'); \
		d.iloc[-24:].drop(columns='y').to_parquet('$(DEMO_DIR)/epf_future.parquet')"
	$(PY) pipelines/batch_forecast.py model_uri=models:/$(EPF_MODEL)@champion \
		input=$(DEMO_DIR)/epf_history.parquet future=$(DEMO_DIR)/epf_future.parquet \
		output=$(DEMO_DIR)/epf_forecast.parquet

DEMO_DATA = $$($(PY) -c "from forecast.datasets import dataset_path; print(dataset_path('m4_hourly_sample'))")

forecast: $(STAMP) ## batch forecast of the demo model as of AS_OF (default today) into forecasts/as_of=<date>/
	$(PY) pipelines/batch_forecast.py model_uri=models:/$(MODEL_NAME)@champion input=$(DEMO_DATA) \
		"output='$(DEMO_DIR)/as_of={as_of}/forecast.parquet'" as_of=$(AS_OF) overwrite=$(OVERWRITE)

backtest: $(STAMP) ## backtest the demo model (@champion) on the embedded data, 5 cutoffs (after make demo)
	$(PY) pipelines/backtest.py model_uri=models:/$(MODEL_NAME)@champion input=$(DEMO_DATA) \
		n_windows=5 output=$(DEMO_DIR)/backtest.parquet

promote: $(STAMP) ## promotion gate: the demo model @candidate against @champion (exit 3: champion kept)
	$(PY) pipelines/promote.py name=$(MODEL_NAME) input=$(DEMO_DATA)

nightly: $(STAMP) ## the nightly loop once on the bundled data: fine-tune @champion (-> @candidate), gate, forecast
	@$(PY) -c "import mlflow; from forecast.tracking.store import use_store; use_store('.'); \
		mlflow.MlflowClient().get_model_version_by_alias('$(MODEL_NAME)', 'champion')" >/dev/null 2>&1 \
		|| { echo "no $(MODEL_NAME)@champion yet: training one (as make demo does)"; \
		     $(PY) pipelines/train.py register=true registry.name=$(MODEL_NAME); }
	MODEL=$(MODEL_NAME) DATA=$(DEMO_DATA) OUT=$(DEMO_DIR) AS_OF=$(AS_OF) PY=$(PY) bash pipelines/nightly.sh

# MLflow starts `uvicorn` by name, so the venv's bin goes on PATH; the store is MLFLOW_TRACKING_URI when set.
serve: $(STAMP) ## MLflow's scoring server for the champion model on http://127.0.0.1:5001 (SERVE_PORT)
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		$(VENV)/bin/mlflow models serve -m "models:/$(MODEL_NAME)@champion" --env-manager local \
		--host 127.0.0.1 --port $(SERVE_PORT)

ui: $(STAMP) ## open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

bench-quick: $(STAMP) ## smoke-run the benchmark scripts with a reduced budget
	$(PY) bench/m4_hourly.py --quick
	$(PY) bench/etth1.py --quick

gpu-wheels: $(STAMP) ## wheels of what a GPU machine lacks, into .whl/ for bench/gpu.sh (bench/README.md, GPU)
	$(PY) bench/gpu_wheels.py --download .whl

wheel: $(STAMP) ## build dist/forecast-*.tar.gz and the wheel from it, as python -m build does (no build/)
	rm -f dist/forecast-*
	$(PY) -c "import sys; from setuptools import build_meta as b; b.build_sdist(sys.argv[1])" dist >/dev/null
	$(PY) -m pip wheel --no-deps --no-build-isolation -q -w dist dist/forecast-*.tar.gz
	@ls dist/forecast-*

clean: ## remove run outputs and build folders (keeps .venv and the MLflow store)
	rm -rf logs outputs multirun $(DEMO_DIR) build dist
