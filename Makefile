# blockprune: the README's two commands are `make figures` and `make test`.
# Both create/refresh the virtual environment (.venv) from requirements.txt first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One data root for everything; torchvision downloads here when online.
DATA_DIR ?= data
export DATA_DIR := $(abspath $(DATA_DIR))
# paper: the full study (hours on a CPU); quick: minutes, what the tests run.
PROFILE ?= paper
NB_OUT := build/notebooks
PAPERMILL := $(PY) -m papermill --log-output --no-progress-bar --cwd notebooks

.PHONY: help venv test test-fast figures figures-lenet figures-lenet-mnist figures-lenet-fashion_mnist figures-bsr figures-cifar sweep-lenet bench lint clean clean-results lab

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATA_DIR=$(DATA_DIR)  PROFILE=$(PROFILE)"

venv: $(STAMP) ## create or refresh .venv (cheap when current)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

test: $(STAMP) ## run the unit/property tests and execute every notebook (quick profile)
	$(PY) -m pytest -q tests

test-fast: $(STAMP) ## unit/property tests only, no notebooks
	$(PY) -m pytest -q -m "not notebook" tests

figures: figures-lenet figures-bsr figures-cifar ## render every figure into figures/ (PROFILE=paper)

figures-lenet: figures-lenet-mnist figures-lenet-fashion_mnist ## LeNet-300-100 on MNIST and Fashion-MNIST (runs what the cache lacks; -j2 runs both at once)

figures-lenet-mnist figures-lenet-fashion_mnist: figures-lenet-%: $(STAMP)
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/01_lenet_mnist.ipynb $(NB_OUT)/01_lenet_mnist-$*.ipynb -p profile $(PROFILE) -p dataset $*

figures-bsr: $(STAMP) ## BSR vs CSR vs dense speed, cache and storage
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/02_bsr_speed.ipynb $(NB_OUT)/02_bsr_speed.ipynb -p profile $(PROFILE)

figures-cifar: $(STAMP) ## ResNet18 on CIFAR-10 (plots the committed GPU result CSVs)
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/03_cifar10_resnet18.ipynb $(NB_OUT)/03_cifar10_resnet18.ipynb -p profile $(PROFILE)

sweep-lenet: $(STAMP) ## the LeNet sweep without Jupyter (PROFILE, DATASET=mnist)
	$(PY) -m blockprune_utils.sweep --study lenet --profile $(PROFILE) --dataset $(or $(DATASET),mnist)

bench: $(STAMP) ## BSR speed benchmark ratio table (quick)
	$(PY) -m blockprune_utils.bench --quick

lab: $(STAMP) ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP) ## ruff over the package, tests and notebooks
	$(VENV)/bin/ruff check blockprune_utils tests notebooks

clean: ## remove build products (executed notebooks, caches); keeps .venv and results/
	rm -rf build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

clean-results: ## forget every cached run (results/)
	rm -rf results
