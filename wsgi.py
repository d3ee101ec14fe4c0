"""WSGI entry point: `granian --interface wsgi wsgi:app` (`token-service serve` is what deploys)."""

from token_service import create_app

app = create_app()
