# The code-location image: locked runtime dependencies only, served over gRPC to Dagster.
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:${PATH}" \
    DAGSTER_ENVIRONMENT=production

WORKDIR /app

# Dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project

COPY defs.yaml ./
COPY .dlt/config.toml ./.dlt/config.toml
COPY edxorg_s3_ingest ./edxorg_s3_ingest
RUN uv sync --locked --no-dev \
    && groupadd --gid 1000 dagster \
    && useradd --create-home --uid 1000 --gid 1000 dagster \
    && chown -R 1000:1000 /app/.dlt
# Numeric, so that Kubernetes' runAsNonRoot can verify it (deploy/helm/values.yaml).
USER 1000:1000

EXPOSE 4000
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "4000", "--module-name", "edxorg_s3_ingest.definitions"]
