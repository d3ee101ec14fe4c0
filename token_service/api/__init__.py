"""HTTP blueprints: `public` (discovery, keys, health), `oauth` (token, introspection,
revocation). Admin routes live apart from these."""
