from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from postmesh.common.config import ServiceSettings


class AuthSettings(ServiceSettings):
    ops_port: int = Field(default=9106, ge=0, le=65535)
    # gRPC listen address (edges reach it through POSTMESH_AUTH_ADDRESS).
    auth_listen: str = "127.0.0.1:50062"
    # sqlite (embedded, file under data_dir) or mongodb (production; MongoDB 6+ or FerretDB).
    auth_backend: Literal["sqlite", "mongodb"] = "sqlite"
    auth_sqlite_path: Path = Path("auth.sqlite3")
    # MongoDB connection string and database, when POSTMESH_AUTH_BACKEND=mongodb.
    mongodb_url: str = "mongodb://127.0.0.1:27017"
    mongodb_database: str = "postmesh"
    # The admin REST API (FastAPI); keep it on an internal network.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token of the admin API. Unset: one is generated and kept in <data_dir>/admin-token.
    admin_token: str | None = Field(default=None, min_length=16)
    # Failed-login lockout, shared by all replicas (docs/operations.md "Login lockout"):
    # this many failures within the window lock the account / the client IP for lockout_seconds.
    auth_lockout_account_failures: int = Field(default=10, ge=1)
    auth_lockout_ip_failures: int = Field(default=100, ge=1)
    auth_lockout_window_seconds: float = Field(default=900.0, gt=0)
    auth_lockout_seconds: float = Field(default=900.0, ge=0)
    # Back-off before answering a failed login: base * 2^(failures-1) seconds, capped; 0: none.
    auth_backoff_base_seconds: float = Field(default=0.25, ge=0)
    auth_backoff_max_seconds: float = Field(default=4.0, ge=0, le=8)
    # PBKDF2 iterations of new SCRAM-SHA-256 keys (RFC 7677: at least 4096).
    auth_scram_iterations: int = Field(default=4096, ge=4096, le=1_000_000)
