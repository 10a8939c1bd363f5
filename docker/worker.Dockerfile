# syntax=docker/dockerfile:1
# The Celery worker: decode -> features -> HAM-Net head with ONNX Runtime. CUDA 12 + cuDNN 9
# runtime base and onnxruntime-gpu; no torch. The CUDA execution provider is preferred and the
# worker falls back to the CPU provider (and reports it in /v1/models) when no GPU is visible,
# so the same image runs on CPU-only hosts. For a much smaller CPU-only image:
#
#   docker build -f docker/worker.Dockerfile \
#       --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg ORT_PACKAGE=onnxruntime -t hamnet-worker:cpu .

ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS build
ARG ORT_PACKAGE=onnxruntime-gpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/requirements/worker.txt /tmp/requirements.txt
# ORT_PACKAGE=onnxruntime swaps the GPU build for the CPU build of the same pinned version.
RUN sed -i "s/^onnxruntime-gpu==/${ORT_PACKAGE}==/" /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY model ./model
COPY worker ./worker
COPY service ./service
# The [worker] extra names the CPU onnxruntime; its GPU twin (same pinned version, same
# module) is already installed, so the project goes in without its dependencies, then pip
# check proves nothing is missing.
RUN pip install --no-compile --no-deps . \
    && pip check \
    && python -c "import onnxruntime, av, cv2, hamnet_worker; print(onnxruntime.get_available_providers())"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="hamnet-worker" \
      org.opencontainers.image.description="HAM-Net temporal action localization: Celery worker (ONNX Runtime, CUDA with CPU fallback)" \
      org.opencontainers.image.licenses="MIT"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hamnet \
    && useradd --system --uid 10001 --gid hamnet --home-dir /home/hamnet --create-home --shell /usr/sbin/nologin hamnet \
    && mkdir -p /data /bundles \
    && chown hamnet:hamnet /data /bundles
COPY --from=build /opt/venv /opt/venv
# REMAP_SIGTERM: `docker stop` (SIGTERM) starts Celery's cold shutdown, which first waits
# HAMNET_SOFT_SHUTDOWN_S for the running job, then puts it back on the queue for another worker.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REMAP_SIGTERM=SIGQUIT \
    HAMNET_DATA_DIR=/data \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER hamnet
WORKDIR /home/hamnet
ENTRYPOINT ["hamnet"]
CMD ["worker"]
