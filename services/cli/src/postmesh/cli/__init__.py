"""``postmesh``: domains, users, aliases, quotas, DKIM keys, tokens and the delivery queue from
the command line, over the admin REST APIs of auth and delivery (docs/operations.md "CLI")."""
