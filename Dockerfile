# syntax=docker/dockerfile:1.7
#
# Spacetime images, one Dockerfile, three targets:
#
#   gateway     python:3.11-slim + the gateway's dependencies only (no torch): small, starts in < 1 s
#   worker      CUDA runtime + Python 3.11 + torch (CUDA wheel) + the worker extra; one GPU per container
#   worker-cpu  python:3.11-slim + torch (CPU wheel) + the worker extra; runs the tiny model on the CPU
#
#   docker build --target gateway    -t spacetime-gateway .
#   docker build --target worker     -t spacetime-worker .
#   docker build --target worker-cpu -t spacetime-worker-cpu .
#
# All three run as the unprivileged user `spacetime` (uid 10001). The package (and with it the
# tiny model's weights under model/weights/spacetime-tiny/) is copied in; real model folders are
# mounted read-only at /models by docker-compose.yml. Videos go to /videos (a shared volume) or S3.
# tests/e2e/test_compose_files.py checks the parts of this file that can be checked without an engine.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
ARG TORCH_VERSION=2.13.0
# Extra pip packages for every image, e.g. EXTRA_PIP=boto3 for SPACETIME_STORAGE=s3.
ARG EXTRA_PIP=""

# ----------------------------------------------------------------------------- shared: the source
FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml ./
COPY service ./service
COPY workers ./workers
COPY model ./model
COPY deploy/healthcheck.py ./deploy/healthcheck.py

# ----------------------------------------------------------------------------- gateway
FROM ${PYTHON_IMAGE} AS gateway
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 spacetime \
 && useradd --system --uid 10001 --gid spacetime --home-dir /var/lib/spacetime --create-home spacetime \
 && mkdir -p /videos && chown spacetime:spacetime /videos
COPY --from=source /src /src
# Base dependencies only: the gateway never imports torch (no [worker] extra here, on purpose).
ARG EXTRA_PIP
RUN pip install /src && rm -rf /src && if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP; fi
COPY --from=source /src/deploy/healthcheck.py /usr/local/bin/spacetime-healthcheck
USER spacetime
WORKDIR /var/lib/spacetime
ENV SPACETIME_DATA_DIR=/videos
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "/usr/local/bin/spacetime-healthcheck", "gateway", "--url", "http://127.0.0.1:8000/healthz"]
CMD ["spacetime", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

# ----------------------------------------------------------------------------- worker (CUDA)
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_VERSION
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 22.04 ships Python 3.10; 3.11 comes from the deadsnakes archive. ffmpeg is not needed:
# PyAV's wheel carries its own libav.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and pinned: PyPI's Linux wheel is the CUDA 12 build (it brings its own CUDA libraries).
RUN pip install "torch==${TORCH_VERSION}"
COPY --from=source /src /src
ARG EXTRA_PIP
RUN pip install "/src[worker]" && rm -rf /src && if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP; fi
RUN groupadd --system --gid 10001 spacetime \
 && useradd --system --uid 10001 --gid spacetime --home-dir /var/lib/spacetime --create-home spacetime \
 && mkdir -p /videos /models /var/lib/spacetime/signing \
 && chown spacetime:spacetime /videos /var/lib/spacetime/signing
COPY --from=source /src/deploy/healthcheck.py /usr/local/bin/spacetime-healthcheck
USER spacetime
WORKDIR /var/lib/spacetime
ENV SPACETIME_DATA_DIR=/videos SPACETIME_DEVICE=cuda SPACETIME_SIGNING_DIR=/var/lib/spacetime/signing \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Healthy = this container's pool process has loaded its pipeline and heartbeats into Redis.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "/usr/local/bin/spacetime-healthcheck", "worker"]
CMD ["spacetime", "worker", "--models", "spacetime-tiny", "--concurrency", "1", "--device", "cuda"]

# ----------------------------------------------------------------------------- worker (CPU)
FROM ${PYTHON_IMAGE} AS worker-cpu
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
COPY --from=source /src /src
ARG EXTRA_PIP
RUN pip install "/src[worker]" && rm -rf /src && if [ -n "$EXTRA_PIP" ]; then pip install $EXTRA_PIP; fi
RUN groupadd --system --gid 10001 spacetime \
 && useradd --system --uid 10001 --gid spacetime --home-dir /var/lib/spacetime --create-home spacetime \
 && mkdir -p /videos /models /var/lib/spacetime/signing \
 && chown spacetime:spacetime /videos /var/lib/spacetime/signing
COPY --from=source /src/deploy/healthcheck.py /usr/local/bin/spacetime-healthcheck
USER spacetime
WORKDIR /var/lib/spacetime
ENV SPACETIME_DATA_DIR=/videos SPACETIME_DEVICE=cpu SPACETIME_SIGNING_DIR=/var/lib/spacetime/signing \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/usr/local/bin/spacetime-healthcheck", "worker"]
CMD ["spacetime", "worker", "--models", "spacetime-tiny", "--concurrency", "1", "--device", "cpu"]
