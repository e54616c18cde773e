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
