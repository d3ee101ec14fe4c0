"""The OAuth 2 protocol layer: request parsing, client authentication, grants, token issuing.

Protocol code here knows nothing of Flask; it reaches storage through `storage` only.
Errors are authlib's RFC 6749 error types, rendered by the public blueprint.
"""
