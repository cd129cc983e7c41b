# syntax=docker/dockerfile:1
# Image of the SDXL-Turbo generation worker: `python -m consumer run` (Kafka consumer + sidecar).
#
#   docker build -t sdxl-worker .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t sdxl-worker:cpu .
#
# The host needs the NVIDIA driver and the NVIDIA Container Toolkit; the CUDA runtime itself comes
# with the torch wheels, so a slim Python base is enough (no nvidia/cuda base image).
FROM python:3.11-slim

# torch is installed on its own, first, from the official PyTorch index: PyPI's default wheel is not
# the CUDA build one may want, and this big layer stays cached while the project changes.
# TORCH_VERSION must stay inside the project's range (pyproject.toml: torch>=2.4,<2.15). The
# constraint file written next keeps `pip install .` below from swapping this torch for PyPI's build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
ARG TORCH_VERSION=2.6.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && echo "torch==${TORCH_VERSION}" > /etc/pip-torch-constraint.txt

WORKDIR /build

# Dependencies first, against empty package stubs, so that editing the code does not reinstall
# diffusers/transformers; then the real packages, without touching the dependencies again.
COPY pyproject.toml ./
RUN mkdir -p consumer schemas storage \
    && touch consumer/__init__.py schemas/__init__.py storage/__init__.py \
    && pip install --constraint /etc/pip-torch-constraint.txt . \
    && pip uninstall --yes sdxl-worker \
    && rm -rf /build/*
COPY consumer ./consumer
COPY schemas ./schemas
COPY storage ./storage
RUN pip install --no-deps . && rm -rf /build

# Non-root user. /data is created here, owned by that user, so a fresh named volume mounted on it
# inherits the ownership and stays writable.
WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group worker \
    && mkdir -p /data/hf \
    && chown -R worker:worker /data /app

# APP_HOST: the default (127.0.0.1) would make the sidecar unreachable from outside the container.
# HF_HOME: downloaded models live in the volume, so a restart does not fetch ~7 GB again.
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8001 \
    DATA_DIR=/data \
    HF_HOME=/data/hf

USER worker
VOLUME ["/data"]
EXPOSE 8001

# Liveness only: /health answers 200 while the process serves (readiness is /ready).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('APP_PORT', '8001'), timeout=4)"]

CMD ["python", "-m", "consumer", "run"]
