FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md wsgi.py ./
COPY token_service ./token_service
# /app/keys belongs to the service's user: a fresh named volume mounted there starts with this
# owner, so the init service can write the first key without a chown by hand.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 tokensvc \
    && mkdir -p /app/keys /app/instance \
    && chown tokensvc /app/keys /app/instance
USER tokensvc
# Sizing (docs/operations.md): WEB_CONCURRENCY workers, one per vCPU, each running
# TOKEN_SERVICE_THREADS requests at once (granian, keep-alive).
ENV PORT=8000 \
    HOST=0.0.0.0 \
    TOKEN_SERVICE_KEYS_DIR=/app/keys \
    TOKEN_SERVICE_THREADS=4 \
    TOKEN_SERVICE_LOG_FORMAT=json \
    TOKEN_SERVICE_METRICS_DIR=/tmp/token-service-metrics
EXPOSE 8000
# Migrations and the first key are the one-shot `token-service init` (compose's init service),
# run once before any server; servers only serve (`token-service serve`: granian, started by
# token_service/serve.py, which prepares the metrics directory and serves /metrics on
# TOKEN_SERVICE_METRICS_PORT if set).
CMD ["token-service", "serve"]
