# syntax=docker/dockerfile:1
# The HTTP gateway: FastAPI + the Celery client + PyAV (to probe uploads). No torch, no ONNX
# Runtime: the image stays small and starts in a second.
#
#   docker build -f docker/gateway.Dockerfile -t hamnet-gateway:0.1.0 .
#   docker run -p 8000:8000 -e HAMNET_REDIS_URL=redis://redis:6379/0 hamnet-gateway:0.1.0

FROM python:3.12.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the pins change), then the project.
COPY docker/requirements/gateway.txt /tmp/requirements.txt
RUN pip install --no-compile -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY model ./model
# Only the job contract of worker/: the gateway never runs (nor installs) the Celery tasks.
COPY worker/hamnet_jobs ./worker/hamnet_jobs
COPY service ./service
RUN pip install --no-compile --constraint /tmp/requirements.txt ".[service]" \
    && pip check \
    && python -m compileall -q /opt/venv/lib \
    && python -c "import hamnet_service.app, importlib.util as u; assert all(u.find_spec(m) is None for m in ('torch', 'onnxruntime', 'hamnet_worker'))"

FROM python:3.12.10-slim-bookworm
LABEL org.opencontainers.image.title="hamnet-gateway" \
      org.opencontainers.image.description="HAM-Net temporal action localization: REST gateway" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 hamnet \
    && useradd --system --uid 10001 --gid hamnet --home-dir /home/hamnet --create-home --shell /usr/sbin/nologin hamnet \
    && mkdir -p /data /bundles \
    && chown hamnet:hamnet /data /bundles
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HAMNET_HOST=0.0.0.0 \
    HAMNET_PORT=8000 \
    HAMNET_DATA_DIR=/data
USER hamnet
WORKDIR /home/hamnet
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]
ENTRYPOINT ["hamnet"]
CMD ["serve"]
