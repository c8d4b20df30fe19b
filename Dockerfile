# syntax=docker/dockerfile:1
# ftbench on a GPU machine: the image holds the dependencies, the repo is bind-mounted at /workspace
# and `dvc repro` (the default command) runs on it. See compose.yaml and docs/container.md.
#
# Base: python:3.11-slim-bookworm, not an nvidia/cuda image. The lock's torch (PyPI's CUDA 13 build)
# brings its own CUDA runtime, cuBLAS, cuDNN and NCCL (nvidia-* wheels) and bitsandbytes ships its
# CUDA kernels in its wheel, so the container needs only the host driver (NVIDIA >= 580), which the
# NVIDIA Container Toolkit mounts in. An nvidia/cuda base would add a second CUDA that torch never
# loads and a system Python other than the Makefile's 3.11.

# ---------------------------------------------------------------- builder: /opt/venv
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies come from the GPU lock, requirements/gpu.txt, exactly as `make install GPU=1` takes
# them: every package at its locked version and hash, nothing resolved at build time. Only the lock
# and pyproject.toml are copied: with a stub package and README (pip needs the readme file) this
# layer is rebuilt when the dependencies change, not on every code or README edit.
# The project is installed editable, as the Makefile does, from /workspace: the path where the runtime
# mounts the repo. pip then writes the `ftbench` command ([project.scripts]) and a .pth entry for
# /workspace/src into the venv, so the command runs the mounted code, and no stub package is left
# in site-packages to shadow it.
WORKDIR /workspace
COPY pyproject.toml ./
COPY requirements/gpu.txt requirements/
RUN mkdir -p src/ftbench && touch README.md src/ftbench/__init__.py

# The pip cache is a BuildKit cache mount: these RUNs are root's, so its cache is /root/.cache/pip
# (none is left in the image).
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --no-deps -r requirements/gpu.txt \
    && pip install --no-deps --no-build-isolation --editable . \
    && pip check

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime

# git: DVC reads the mounted repo's history and commits experiments (refs/exps), so it needs an
# identity (system-wide, any uid; a repo's own user.name/email still wins) and must trust a repo owned
# by the host user (safe.directory). make: `make -o /opt/venv/.installed seed` (README).
# gcc and libc6-dev: Triton (liger-kernel's fused loss, train.fused_cross_entropy, on by default)
# compiles a small C launcher on first use with the system compiler, against the libc headers (gcc's
# Debian package only recommends libc6-dev, so --no-install-recommends would leave them out) and
# Python.h (the python base image ships it). The -lcuda it links is the driver's libcuda.so, which the
# NVIDIA Container Toolkit mounts in with the driver.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system user.name "ftbench" \
    && git config --system user.email "ftbench@localhost" \
    && git config --system --add safe.directory '*'

# A non-root user. Give it the host user's uid/gid (compose passes HOST_UID/HOST_GID) so files it
# writes in the bind-mounted repo belong to that user. /data/hf (HF_HOME) and /mlflow are created
# here owned by it, so the named volumes compose mounts there start out writable (a volume copies
# the ownership of the image's folder).
ARG HOST_UID=1000
ARG HOST_GID=1000
RUN groupadd --non-unique --gid "$HOST_GID" ftbench \
    && useradd --non-unique --uid "$HOST_UID" --gid "$HOST_GID" --create-home --shell /bin/bash ftbench \
    && mkdir -p /workspace /data/hf /mlflow \
    && chown ftbench:ftbench /workspace /data/hf /mlflow

# State that outlives a container: hub downloads and MLflow's runs. Declared after the chown above
# (changes to a volume's folder after VOLUME are lost), so even a plain `docker run` without compose's
# named volumes writes them to a volume, not the container layer. /workspace is not a volume: without
# the repo mounted there, `dvc repro` must fail at once, not run on an empty anonymous volume.
VOLUME ["/data/hf", "/mlflow"]

COPY --from=builder /opt/venv /opt/venv

# The bind-mounted src/ is what runs (the editable install above), so a code change needs no rebuild.
# `src` comes first on PYTHONPATH and is relative: Python resolves it against the working directory
# at start-up, which DVC sets to the root of the tree it runs (/workspace, or the temporary copy a
# queued `dvc exp run` runs in), so each experiment runs its own snapshot of the code;
# /workspace/src covers commands started elsewhere.
# VENV: the Makefile's `VENV ?= .venv` then means the image's venv, not a .venv in the mounted repo.
# NVIDIA_DRIVER_CAPABILITIES: compute for CUDA, utility for NVML (nvidia-ml-py) and nvidia-smi.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    VENV=/opt/venv \
    PYTHONPATH=src:/workspace/src \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/data/hf \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Tokenizers' thread pool off, as the Makefile sets it (DL3064 takes the "TOKEN" in the name for a secret).
# hadolint ignore=DL3064
ENV TOKENIZERS_PARALLELISM=false

USER ${HOST_UID}:${HOST_GID}
WORKDIR /workspace
CMD ["dvc", "repro"]
