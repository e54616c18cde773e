"""Auth service: domains, users, passwords; gRPC for the edges and an admin REST API."""
