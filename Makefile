# blockprune: the README's two commands are `make figures` and `make test`.
# Both create/refresh the virtual environment (.venv) from requirements.txt first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
$(if $(word 2,$(VENV)),$(error VENV='$(VENV)' has a space: give a virtual environment path without spaces))
# $(call q,PATH): PATH quoted for the shell (it may hold spaces or quotes).
q = '$(subst ','\'',$(1))'
# $(call absolute,PATH): PATH made absolute against this folder, kept as one string
# (make's $(abspath) would split a path with spaces into several); the notebooks'
# Python resolves '..' and links.
absolute = $(if $(filter /%,$(firstword $(1))),$(1),$(CURDIR)/$(1))
# One data root for everything; torchvision downloads here when online.  Results and
# figures folders likewise.  Relative paths (also given on the command line, hence
# `override`) become absolute here, because notebooks run in notebooks/.  Paths may
# hold spaces: recipes pass them quoted, or through the environment.
DATA_DIR ?= data
RESULTS_DIR ?= results
FIGURES_DIR ?= figures
QUICK_FIGURES_DIR ?= build/figures-quick
override DATA_DIR := $(call absolute,$(or $(DATA_DIR),data))
override RESULTS_DIR := $(call absolute,$(or $(RESULTS_DIR),results))
override FIGURES_DIR := $(call absolute,$(or $(FIGURES_DIR),figures))
override QUICK_FIGURES_DIR := $(call absolute,$(or $(QUICK_FIGURES_DIR),build/figures-quick))
export DATA_DIR RESULTS_DIR FIGURES_DIR QUICK_FIGURES_DIR
# paper: the full study (about an hour on 2 CPU cores); quick: minutes, what the tests run.
PROFILE ?= paper
# LeNet sweep: data sets, and local worker processes (default: one per core).
DATASETS ?= mnist fashion_mnist
WORKERS ?=
SCHEDULER ?=
SWEEP_OPTS := $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(call q,$(SCHEDULER)))
NB_OUT := build/notebooks
PAPERMILL := $(PY) -m papermill --log-output --no-progress-bar --cwd notebooks

BOOK_OUT := build/book

.PHONY: book help venv paths test test-fast figures figures-lenet render-lenet figures-lenet-mnist figures-lenet-fashion_mnist figures-bsr figures-budget figures-cifar sweep-lenet bench lint clean clean-results lab lab-student lab-grade

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATA_DIR=$(DATA_DIR)  PROFILE=$(PROFILE)  WORKERS=$(or $(WORKERS),<one per core>)  SCHEDULER=$(SCHEDULER)"

paths: ## show the data, results and figures folders (full and quick runs) as the notebooks see them
	@cd notebooks && $(call q,$(call absolute,$(PY))) -c "from blockprune_utils.infra import paths as p; print(f'DATA_DIR={p.data_dir()}'); print(f'RESULTS_DIR={p.results_dir()}'); print(f'FIGURES_DIR={p.figures_dir()}'); print(f'QUICK_FIGURES_DIR={p.quick_figures_dir()}')"

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

# Compute first (LeNet sweep on every core), then the timing benchmark alone (it must
# not share the CPU with training), then render every notebook from the warm cache.
figures: $(STAMP) ## compute what the results store lacks, then render every figure into figures/ (PROFILE=paper)
	$(MAKE) --no-print-directory sweep-lenet
	$(MAKE) --no-print-directory figures-bsr
	$(MAKE) --no-print-directory figures-budget
	$(MAKE) --no-print-directory render-lenet figures-cifar

figures-lenet: $(STAMP) ## LeNet-300-100 on MNIST and Fashion-MNIST: the sweep on every core, then the notebooks
	$(MAKE) --no-print-directory sweep-lenet
	$(MAKE) --no-print-directory render-lenet

render-lenet: $(addprefix figures-lenet-,$(DATASETS))
	$(PY) -m blockprune_utils.studies.lenet.publish --profile $(PROFILE) --dataset $(DATASETS)

figures-lenet-mnist figures-lenet-fashion_mnist: figures-lenet-%: $(STAMP)
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/01_lenet_mnist.ipynb $(NB_OUT)/01_lenet_mnist-$*.ipynb -p profile $(PROFILE) -p dataset $*

figures-bsr: $(STAMP) ## BSR vs CSR vs dense speed, cache and storage (run it on an otherwise idle machine)
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/02_bsr_speed.ipynb $(NB_OUT)/02_bsr_speed.ipynb -p profile $(PROFILE)

figures-budget: $(STAMP) ## accuracy for the time: epochs-per-round scan, budget, neuron/narrow nets, latency Pareto (it times: idle machine)
	@mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/05_accuracy_for_the_time.ipynb $(NB_OUT)/05_accuracy_for_the_time.ipynb -p profile $(PROFILE)

# PROFILE=cpu first computes experiment A on this machine (about 90 minutes on 2 cores; a stopped run resumes at its
# last finished epoch or round) and writes figures/cifar_cpu_experiment_a.csv; every profile then renders notebook 03.
figures-cifar: $(STAMP) ## ResNet18 on CIFAR-10: plots the committed result CSVs (PROFILE=cpu: runs experiment A on this CPU first)
	@mkdir -p $(NB_OUT)
	$(if $(filter cpu,$(PROFILE)),$(PY) -m blockprune_utils.sweep --study cifar --profile cpu --to-figures)
	$(PAPERMILL) notebooks/03_cifar10_resnet18.ipynb $(NB_OUT)/03_cifar10_resnet18.ipynb -p profile $(PROFILE)

sweep-lenet: $(STAMP) ## the LeNet sweep on every core, or a Dask cluster (PROFILE, DATASETS, WORKERS, SCHEDULER)
	$(PY) -m blockprune_utils.sweep --study lenet --profile $(PROFILE) --dataset $(DATASETS) $(SWEEP_OPTS)

book: $(STAMP) ## offline HTML edition of the executed notebooks in build/book (runs what make figures has not)
	$(PY) -m blockprune_utils.book --executed $(NB_OUT) --out $(BOOK_OUT)

bench: $(STAMP) ## BSR speed benchmark ratio table (quick)
	$(PY) -m blockprune_utils.bench --quick

# JupyterLab serves the repository root (so notebooks' links to docs/ and figures/ work) and opens on notebooks/;
# containers often run as root, which Jupyter refuses without --allow-root.
JUPYTER_OPTS := --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root)
LAB_NB := notebooks/10_lab_block_pruning.ipynb
LAB_OUT := build/lab

lab: $(STAMP) ## open JupyterLab on notebooks/ (00 the walkthrough, 10 the graded lab: about 2.5 h of student work)
	$(VENV)/bin/jupyter lab $(JUPYTER_OPTS)

lab-student: $(STAMP) ## write the lab's student version (solutions stripped) and its autograder into build/lab/
	$(PY) -m blockprune_utils.lab student $(LAB_NB) --out $(LAB_OUT)

lab-grade: $(STAMP) ## grade a submitted lab notebook: make lab-grade SUBMISSION=path/to/10_lab_block_pruning.ipynb
	@test -n $(call q,$(SUBMISSION)) || { echo "give the notebook to grade: make lab-grade SUBMISSION=path/to/notebook.ipynb"; exit 2; }
	sub=$(call q,$(SUBMISSION)); $(PY) -m blockprune_utils.lab grade "$$sub" --out "$${sub%.ipynb}.grades.json"

lint: $(STAMP) ## ruff over the package, tests and notebooks
	$(VENV)/bin/ruff check blockprune_utils tests notebooks

clean: ## remove build products (executed notebooks, caches); keeps .venv and results/
	rm -rf build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

# Removes the one folder RESULTS_DIR names (quoted: a path with spaces stays one path),
# and refuses a folder that holds this repository (RESULTS_DIR=/, .., or empty).
clean-results: ## forget every cached run (results/)
	@d="$$(realpath -m -- $(call q,$(RESULTS_DIR)))"; d="$${d%/}/"; case $(call q,$(CURDIR))/ in "$$d"*) \
	  echo "make clean-results: refusing to remove RESULTS_DIR=$$d: it holds this repository" >&2; exit 2;; esac
	rm -rf -- $(call q,$(RESULTS_DIR))
