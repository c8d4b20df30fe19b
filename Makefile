# Quickstart: `make repro` runs the study on the embedded model; `make test` runs the tests.
# Both set up .venv on their own. Dependencies come from pyproject.toml (one source of truth).
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: install repro test lint seed mlflow

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pinned CPU build; pyproject's range then adds nothing (see README).
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

repro: install
	@test -d .git || { echo "make repro needs a git checkout (DVC tracks runs in git)"; exit 2; }
	dvc repro

lint: install
	ruff check src tests
	ruff format --check src tests

test: lint
	pytest

# The seed study: Gemma-3-1b-it from the hub (set HF_TOKEN), 5k train / 2k test, 512 tokens, on a GPU.
seed: install
	dvc exp run -n seed -S model.source=google/gemma-3-1b-it -S model.dtype=bfloat16 \
	  -S data.sizes.train=5000 -S data.sizes.validation=200 -S data.sizes.test=2000 \
	  -S data.max_length=512 -S evaluate.max_new_tokens=256 -S evaluate.batch_size=64

# The MLflow UI on the default store (every stage of every run), at http://127.0.0.1:5000
mlflow: install
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000
