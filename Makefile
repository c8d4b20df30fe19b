# Quickstart: `make repro` runs the study on the embedded model; `make test` runs the tests.
# Both set up .venv on their own, exactly from the lock: requirements/cpu.txt, or requirements/gpu.txt
# with GPU=1 (docs/environment.md). `make lock` regenerates both from pyproject.toml's ranges.
VENV  ?= .venv
GPU   ?=
LOCK  := requirements/$(if $(GPU),gpu,cpu).txt
# torch's CPU build (2.13.0+cpu) is not on PyPI: pip finds it on PyTorch's CPU index, or in a wheel
# folder pip's own configuration names. Elsewhere: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(notdir $(LOCK))
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock repro test lint seed mlflow image-check

# Every package at the lock's version and hash, nothing resolved here; then the project itself.
$(STAMP): $(LOCK)
	rm -f $(VENV)/.installed-*
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r $(LOCK) \
	  || { echo "make install: pip could not install $(LOCK) (see above); if it found no torch 2.13.0+cpu, add TORCH_INDEX=https://download.pytorch.org/whl/cpu" >&2; exit 1; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

install: $(STAMP)

# Both locks from pyproject.toml's ranges, each version kept where it still fits them; UPGRADE=1 takes
# the newest (then `make repro` and commit the lock with the metrics it made: docs/environment.md).
# The CPU lock needs torch 2.13.0+cpu where uv finds it (TORCH_INDEX, or UV_FIND_LINKS=<wheel folder>).
LOCK_FLAGS = --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade)
lock: install
	echo "torch==2.13.0+cpu" | uv pip compile pyproject.toml - --extra dev $(LOCK_FLAGS) \
	  $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -o requirements/cpu.txt
	echo "torch==2.13.0" | uv pip compile pyproject.toml - --extra dev --extra gpu $(LOCK_FLAGS) -o requirements/gpu.txt

repro: install
	@test -d .git || { echo "make repro needs a git checkout (DVC tracks runs in git)"; exit 2; }
	@test -n "$(GPU)" || ! command -v nvidia-smi > /dev/null \
	  || echo "make repro: a GPU is present; \`make repro GPU=1\` installs CUDA torch and liger-kernel for it"
	dvc repro

lint: install
	ruff check src tests tools bench
	ruff format --check src tests tools bench

# -n auto: one worker per core (pytest-xdist), each with one torch thread (two threads a worker made the
# suite 20% slower on 2 cores); loadgroup keeps an xdist_group's tests on one worker; --durations: where
# the time goes
test: lint
	OMP_NUM_THREADS=1 pytest -n auto --dist loadgroup --durations=10

# The study the project was specified with, as the DVC experiment `seed`, on a GPU: Gemma-3-1b-it from
# the hub (accept its licence there, set HF_TOKEN) on GSM8K from the hub (question/answer rows), 5,000
# train / 200 validation / 2,000 test examples, 512 tokens. SEED_MODEL and SEED_DATA take local copies
# (a model folder, a .jsonl of the same rows); SEED_TARGETS runs the experiment up to those stages only.
SEED_MODEL   ?= google/gemma-3-1b-it
SEED_DATA    ?= hf:openai/gsm8k
SEED_TARGETS ?=
seed: install
	dvc exp run -n seed -S model.source=$(SEED_MODEL) -S model.dtype=bfloat16 \
	  -S '~data.datasets.builtin' \
	  -S '+data.datasets.gsm8k={source: "$(SEED_DATA)", subset: main, fields: {instruction: question, output: answer}}' \
	  -S data.sizes.train=5000 -S data.sizes.validation=200 -S data.sizes.test=2000 \
	  -S data.max_length=512 -S evaluate.max_new_tokens=256 $(SEED_TARGETS)

# The MLflow UI on the default store (every stage of every run), at http://127.0.0.1:5000
mlflow: install
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# For a machine with Docker, an NVIDIA GPU and the NVIDIA Container Toolkit: builds the image compose
# uses (as you, like compose.yaml's build), then runs a --shape tiny bench in it on the GPU, with the
# repo mounted read-only; tools/image_check.py fails unless the GPU path ran (docs/container.md).
IMAGE ?= ftbench:latest
image-check:
	DOCKER_BUILDKIT=1 docker build --build-arg HOST_UID=$$(id -u) --build-arg HOST_GID=$$(id -g) -t $(IMAGE) .
	docker run --rm --gpus all --ipc host -v "$(CURDIR)":/workspace:ro $(IMAGE) python tools/image_check.py
