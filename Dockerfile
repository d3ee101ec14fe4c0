FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md wsgi.py ./
COPY token_service ./token_service
RUN pip install --no-cache-dir . && useradd --system --uid 10001 tokensvc
USER tokensvc
ENV PORT=8000 TOKEN_SERVICE_KEYS_DIR=/app/keys
EXPOSE 8000
# Migrations run once before the workers start; gunicorn preloads nothing stateful.
CMD ["sh", "-c", "token-service migrate && exec gunicorn --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-4} --access-logfile - wsgi:app"]
