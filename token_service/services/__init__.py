"""The services: one module per domain, each the one place its rules live.

- `customers`: customers and their credentials;
- `legal_entities`: companies, their subsidiaries and customers' assignments to them;
- `groups`: customer groups, their scopes and members; `catalogue`: the scopes they may hold;
- `clients`: clients, their metadata and redirect-URI rules, secrets and lifetimes;
- `sessions`: which live sessions a change reaches, and signing a customer out;
- `company`: what a customer may do to their own company (self-service), and invitations.

A service checks its rules, works in the caller's transaction (it flushes, never commits: the
surface that called it ends the transaction) and records its audit event in the name of the
actor it is given. Every surface (the admin API, self-service, the Emporix layer, the hosted
pages, the CLI) calls these functions and holds no rule of its own. `base.ServiceError` is
the refusal each surface renders in its own error shape.
"""
