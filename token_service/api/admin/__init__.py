"""The admin API (DESIGN section 4, "Admin API"): JSON at /admin/..., for clients holding
`admin.read` or `admin.manage`.

- routing: the blueprint and `@operation`, which authenticates, documents and commits;
- auth: bearer tokens (RFC 6750) verified like a resource server, plus the client as it is now;
- schema: the pydantic base models and field types; request bodies validated strictly,
  errors in our format;
- query: query parameters and keyset (cursor) pagination;
- errors, representations (a pydantic model per response, and its builder): what goes out;
- one module per resource: legal_entities, customers (with assignments, sessions and the
  effective-scope preview), groups (with members), catalogue, clients, signing_keys,
  audit_events.

Changes with an effect on live tokens go through `token_service.lifecycle` or
`token_service.revocation`, as the CLI's do.
"""

from . import (  # noqa: F401  (importing a module registers its routes)
    audit_events,
    catalogue,
    clients,
    customers,
    groups,
    initial_access_tokens,
    legal_entities,
    signing_keys,
)
from .routing import OPERATIONS, bp

__all__ = ["OPERATIONS", "bp"]
