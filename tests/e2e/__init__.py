"""End-to-end tests: the service under `token-service serve`, driven by third-party OAuth/JOSE
clients."""
