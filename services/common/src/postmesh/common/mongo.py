"""Settings of a MongoDB connection (store and auth) and the PyMongo client arguments they make.

The URL may carry credentials, so it is a secret like the password; it can come whole from a
mounted Secret file, or the user name, password and TLS files can be given apart from a URL
without any (docs/adr/0032-secrets-of-the-bus-and-database-connections.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr, field_validator, model_validator

from postmesh.common.config import ServiceSettings
from postmesh.common.secrets import check_secret_file, read_secret, redact_url
from postmesh.common.service import StartupError


class MongoSettings(ServiceSettings):
    """What a service with a MongoDB backend adds to the common settings."""

    # MongoDB connection string, when the backend is mongodb. It may carry user and password
    # (then prefer POSTMESH_MONGODB_URL_FILE); logs show it with the password replaced.
    mongodb_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    # A file holding the whole connection string (a mounted Secret); wins over the URL.
    mongodb_url_file: Path | None = None
    # User name, when the URL carries none (SCRAM-SHA-256 against MongoDB; FerretDB 1.x passes
    # it on to PostgreSQL).
    mongodb_username: str = ""
    # Password of POSTMESH_MONGODB_USERNAME; prefer POSTMESH_MONGODB_PASSWORD_FILE.
    mongodb_password: SecretStr | None = None
    # A file holding that password (a mounted Secret; read when the client is made).
    mongodb_password_file: Path | None = None
    # TLS to MongoDB with this CA certificate(s) for the server's certificate (implies tls=true;
    # "?tls=true" in the URL with no CA file uses the system's trusted CAs).
    mongodb_tls_ca_file: Path | None = None
    # Client certificate and its private key in one PEM file (PyMongo's tlsCertificateKeyFile),
    # for servers that require one (MONGODB-X509 or net.tls.mode requireTLS with CAFile).
    mongodb_tls_cert_key_file: Path | None = None

    @field_validator("mongodb_url_file", "mongodb_password_file")
    @classmethod
    def _readable_mongo_secret(cls, v: Path | None) -> Path | None:
        return check_secret_file(v)

    @model_validator(mode="after")
    def _mongo_credentials_consistent(self) -> MongoSettings:
        if self.mongodb_password is not None and self.mongodb_password_file is not None:
            raise ValueError(
                "set POSTMESH_MONGODB_PASSWORD or POSTMESH_MONGODB_PASSWORD_FILE, not both"
            )
        has_password = self.mongodb_password is not None or self.mongodb_password_file is not None
        if has_password and not self.mongodb_username:
            raise ValueError("POSTMESH_MONGODB_PASSWORD(_FILE) needs POSTMESH_MONGODB_USERNAME")
        return self

    def mongodb_url_value(self) -> str:
        if self.mongodb_url_file is not None:
            return self.mongodb_url_file.read_text().strip()
        return self.mongodb_url.get_secret_value()

    def mongodb_url_redacted(self) -> str:
        """The URL for log lines: user name and hosts, never the password."""
        return redact_url(self.mongodb_url_value())

    def mongo_client_args(self) -> tuple[str, dict[str, Any]]:
        """``AsyncMongoClient(url, **kwargs)`` for these settings."""
        kwargs: dict[str, Any] = {"serverSelectionTimeoutMS": 5000}
        password = read_secret(self.mongodb_password, self.mongodb_password_file)
        if self.mongodb_username:
            kwargs["username"] = self.mongodb_username
        if password is not None:
            kwargs["password"] = password
        if self.mongodb_tls_ca_file is not None or self.mongodb_tls_cert_key_file is not None:
            kwargs["tls"] = True
        if self.mongodb_tls_ca_file is not None:
            kwargs["tlsCAFile"] = str(self.mongodb_tls_ca_file)
        if self.mongodb_tls_cert_key_file is not None:
            kwargs["tlsCertificateKeyFile"] = str(self.mongodb_tls_cert_key_file)
        return self.mongodb_url_value(), kwargs


@contextlib.asynccontextmanager
async def mongo_startup(settings: MongoSettings) -> AsyncIterator[None]:
    """Wrap the first calls to MongoDB at start: a refusal (wrong password, TLS mismatch, no
    server) becomes a :class:`StartupError` naming the database and the settings to check."""
    try:
        yield
    except Exception as exc:
        # PyMongo is a dependency of the services with a MongoDB backend, not of this package.
        if not type(exc).__module__.startswith("pymongo"):
            raise
        raise StartupError(
            f"MongoDB at {settings.mongodb_url_redacted()} refused or failed the connection: "
            f"{type(exc).__name__}: {exc}; check POSTMESH_MONGODB_URL(_FILE), "
            "POSTMESH_MONGODB_USERNAME, the password and POSTMESH_MONGODB_TLS_CA_FILE"
        ) from exc
