# slatrack: `slatrack serve` in a slim image, as a non-root user.
#
#   docker build -t slatrack:local .
#   docker run --rm -e SLATRACK_KAFKA_BOOTSTRAP=kafka:9092 -e SLATRACK_API_TOKENS='[...]' slatrack:local
#
# The image has no embedded broker: SLATRACK_KAFKA_BOOTSTRAP must name a Kafka
# cluster. The whole stack (Kafka, PostgreSQL, workers, API, Prometheus,
# Grafana) is in docker-compose.yml; see deploy/README.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the wheel, and a virtual environment with it and its dependencies --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore too).
COPY pyproject.toml README.md ./
COPY events ./events
COPY projections ./projections
COPY services ./services
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/slatrack \
 && /opt/slatrack/bin/pip install /wheels/slatrack-*.whl

# --- runtime ------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN groupadd --system --gid "${UID}" slatrack \
 && useradd --system --uid "${UID}" --gid slatrack --home-dir /var/lib/slatrack \
        --no-create-home --shell /usr/sbin/nologin slatrack \
 && install -d -o slatrack -g slatrack -m 0750 /var/lib/slatrack
COPY --from=build /opt/slatrack /opt/slatrack
ENV PATH=/opt/slatrack/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLATRACK_HTTP_HOST=0.0.0.0 \
    SLATRACK_HTTP_PORT=8000 \
    SLATRACK_DATA_DIR=/var/lib/slatrack
WORKDIR /var/lib/slatrack
USER ${UID}:${UID}
EXPOSE 8000
# Slim has no curl: ask /healthz with Python's urllib (any error or non-2xx fails).
# Every role listens on SLATRACK_HTTP_PORT (a worker serves health and metrics only).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SLATRACK_HTTP_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["slatrack"]
CMD ["serve"]
