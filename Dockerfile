FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md wsgi.py ./
COPY token_service ./token_service
RUN pip install --no-cache-dir . && useradd --system --uid 10001 tokensvc
USER tokensvc
# Sizing (docs/operations.md): WEB_CONCURRENCY workers, one per vCPU, each with
# TOKEN_SERVICE_THREADS threads (gthread, keep-alive).
ENV PORT=8000 HOST=0.0.0.0 TOKEN_SERVICE_KEYS_DIR=/app/keys TOKEN_SERVICE_THREADS=4
EXPOSE 8000
# Migrations run once before the workers start; gunicorn preloads nothing stateful.
CMD ["sh", "-c", "token-service migrate && exec token-service serve"]
