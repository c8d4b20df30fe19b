# Quickstart: `make repro` runs the study on the embedded model; `make test` runs the tests.
# Both set up .venv on their own. Dependencies come from pyproject.toml (one source of truth).
# On a GPU machine: `make repro GPU=1` (docs/container.md).
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# GPU=1: torch's CUDA build from PyTorch's index (the image's default, tests/test_docker.py checks
# they agree) as an exact local version (torch==2.13.0+cu128), so a CPU build already in the venv is
# replaced rather than taken as satisfying the pin; plus the `gpu` extra (liger-kernel, the fused loss).
# Without it pip takes `$(TORCH)` from wherever it finds it: PyPI's Linux wheel is a CUDA build of
# PyTorch's choosing, this project's CI machines have the CPU build on local disk.
GPU        ?=
CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
COMMA  := ,
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed$(if $(GPU),-gpu)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: install repro test lint seed mlflow image-check

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pin; pyproject's range then adds nothing (see README).
	$(PY) -m pip install -q $(if $(GPU),--index-url $(CUDA_INDEX) "$(TORCH)+$(notdir $(CUDA_INDEX))","$(TORCH)")
	$(PY) -m pip install -q -e '.[dev$(if $(GPU),$(COMMA)gpu)]'
	touch $@

install: $(STAMP)

repro: install
	@test -d .git || { echo "make repro needs a git checkout (DVC tracks runs in git)"; exit 2; }
	@test -n "$(GPU)" || ! command -v nvidia-smi > /dev/null \
	  || echo "make repro: a GPU is present; \`make repro GPU=1\` installs CUDA torch and liger-kernel for it"
	$(PY) -m ftbench.warm dvc repro  # stages run in a warm server's children: imports paid once (ftbench/warm.py)

lint: install
	ruff check src tests bench
	ruff format --check src tests bench

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

# For a machine with Docker, an NVIDIA GPU and the NVIDIA Container Toolkit: builds the image compose
# uses (as you, like compose.yaml's build), then runs a --shape tiny bench in it on the GPU, with the
# repo mounted read-only; bench/image_check.py fails unless the GPU path ran (docs/container.md).
IMAGE ?= ftbench:latest
image-check:
	DOCKER_BUILDKIT=1 docker build --build-arg HOST_UID=$$(id -u) --build-arg HOST_GID=$$(id -g) -t $(IMAGE) .
	docker run --rm --gpus all --ipc host -v "$(CURDIR)":/workspace:ro $(IMAGE) python bench/image_check.py
