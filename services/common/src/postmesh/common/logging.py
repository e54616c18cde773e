"""Structured JSON logs, one event per line, carrying the session id / queue id of the context."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039
_service = "postmesh"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (session_id=..., queue_id=...) to every log line emitted inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields for the rest of the current task (each asyncio task has its own context)."""
    _context.set({**_context.get(), **fields})


def unbind_log_context(*names: str) -> None:
    """Drop fields bound by :func:`bind_log_context` (a queue id once its transaction ends)."""
    _context.set({k: v for k, v in _context.get().items() if k not in names})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": _service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_context.get())
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            event.update(extra)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    global _service
    _service = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO drowns the service's own events.
    for noisy in ("aiokafka", "kafka", "mail.log", "uvicorn.access", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def kv(**fields: Any) -> dict[str, Any]:
    """``log.info("msg", extra=kv(rcpt=...))``: structured fields for one line."""
    return {"fields": fields}
