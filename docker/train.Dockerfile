# syntax=docker/dockerfile:1
# The training module (torch + the video extra) for `hamnet demo` (builds the default bundle:
# docker-compose.yml's one-shot `bundle` service uses this image with CPU torch), `hamnet train`,
# `export`, `export-i3d` and `bundle`. Not needed to serve. torch comes from the PyTorch index
# named by TORCH_INDEX_URL (CUDA 12.8 wheels by default; https://download.pytorch.org/whl/cpu for
# a CPU-only image).
#
#   docker build -f docker/train.Dockerfile -t hamnet-train:0.1.0 .
#   docker run --gpus all -v "$PWD/data:/work/data" -v "$PWD/runs:/work/runs" hamnet-train:0.1.0 train --help

FROM python:3.12.10-slim-bookworm AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/requirements/train.txt /tmp/requirements.txt
RUN pip install --no-compile -r /tmp/requirements.txt
# The training worker (`hamnet worker --queues train`, compose service `trainer`) also runs
# Celery on Redis: the worker image's pins, without its ONNX Runtime build (this image has
# its own, pinned above).
COPY docker/requirements/worker.txt /tmp/worker-requirements.txt
RUN grep -v '^onnxruntime' /tmp/worker-requirements.txt > /tmp/trainer-requirements.txt \
    && pip install --no-compile -r /tmp/trainer-requirements.txt --constraint /tmp/requirements.txt
# torch's own dependencies are already pinned above; only torch (and, for CUDA builds, its
# nvidia-* libraries) comes from the PyTorch index.
RUN pip install --no-compile --index-url "${TORCH_INDEX_URL}" --constraint /tmp/requirements.txt \
    "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY model ./model
COPY worker ./worker
COPY trainer ./trainer
COPY service ./service
RUN pip install --no-compile --no-deps . && pip check

FROM python:3.12.10-slim-bookworm
LABEL org.opencontainers.image.title="hamnet-train" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 hamnet \
    && useradd --system --uid 10001 --gid hamnet --home-dir /home/hamnet --create-home --shell /usr/sbin/nologin hamnet \
    && mkdir -p /work /bundles \
    && chown hamnet:hamnet /work /bundles
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER hamnet
WORKDIR /work
ENTRYPOINT ["hamnet"]
CMD ["--help"]
