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
ENV PORT=8000 \
    TOKEN_SERVICE_KEYS_DIR=/app/keys \
    TOKEN_SERVICE_LOG_FORMAT=json \
    TOKEN_SERVICE_METRICS_DIR=/tmp/token-service-metrics
EXPOSE 8000
# Migrations and the first key are the one-shot `token-service init` (compose's init service),
# run once before any server; servers only serve. The gunicorn settings prepare the metrics
# directory, drop dead workers' series, and serve /metrics on TOKEN_SERVICE_METRICS_PORT if set.
CMD ["sh", "-c", "exec gunicorn --config python:token_service.gunicorn_conf --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-4} wsgi:app"]
