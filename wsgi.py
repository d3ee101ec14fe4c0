"""gunicorn entry point: `gunicorn wsgi:app`."""

from token_service import create_app

app = create_app()
