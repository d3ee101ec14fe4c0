"""The OAuth 2 protocol layer: request parsing, client authentication, grants, introspection,
token issuing.

The grants and introspection know nothing of Flask or the database: they reach storage through
the session store they are given (`sessions.SessionStore`) only. Errors are authlib's RFC 6749
error types, mapped to responses in one place (api/errors.py). docs/architecture.md draws it.
"""
