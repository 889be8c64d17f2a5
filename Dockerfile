# syntax=docker/dockerfile:1
# One image for every agentmon command: `docker run IMAGE migrate | api | enricher ...`
# (docker-compose.yml runs one container per command).
FROM python:3.11-slim

# AGENTMON_DATA_DIR: embedded state (ingest journal, queues; the SQLite registry when no
# AGENTMON_REGISTRY_URL is given). Mount a volume there to keep it across restarts.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AGENTMON_DATA_DIR=/data

WORKDIR /src

# Only what the package build needs (pyproject.toml names README.md as the readme), listed
# explicitly so that a local .venv, data/ or .git never end up in the image.
COPY pyproject.toml README.md ./
COPY agentmon ./agentmon
COPY enricher ./enricher
COPY registry_api ./registry_api
COPY migrations ./migrations
COPY clickhouse ./clickhouse
COPY integrations ./integrations

# A regular (non-editable) install: the image runs from site-packages, so the sources are
# removed afterwards. Non-Python files reach the image only if pyproject.toml lists them as
# package-data (tests/test_deploy_files.py checks this). The enricher's C request scanner
# needs a compiler at install time only; the import check fails the build if it is missing
# (the enricher would run, but on its slower pure-Python path).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && cd / && python -c "import enricher.receive._wirescan" \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* /src

# Unprivileged runtime user; it owns the data directory so that a named volume mounted there
# starts out writable by it (Docker copies the image directory's ownership into a new volume).
RUN groupadd --system --gid 10001 agentmon \
    && useradd --system --uid 10001 --gid agentmon --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin agentmon \
    && mkdir -p /data \
    && chown agentmon:agentmon /data

USER agentmon:agentmon
WORKDIR /data

# enricher: OTLP gRPC 4317, OTLP HTTP + /metrics 4318; api: 8000.
EXPOSE 4317 4318 8000

ENTRYPOINT ["agentmon"]
CMD ["--help"]
