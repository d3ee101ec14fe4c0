"""End-to-end tests: the service under gunicorn, driven by third-party OAuth/JOSE clients."""
