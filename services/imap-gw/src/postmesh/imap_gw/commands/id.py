"""ID (RFC 2971): the server says who it is; what the client says about itself is logged."""

from __future__ import annotations

import importlib.metadata

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw import response
from postmesh.imap_gw.commands import ANY, handles
from postmesh.imap_gw.parser.mailbox import Id
from postmesh.imap_gw.session import Result, Session, ok

log = get_logger(__name__)

try:
    _VERSION = importlib.metadata.version("postmesh-imap-gw")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    _VERSION = "0"

# RFC 2971 §3.3: name and version; nothing that would help an attacker more than that.
_LOGGED = 200
SERVER_ID = (("name", "Postmesh"), ("vendor", "Postmesh"), ("version", _VERSION))


def _id_list(pairs: tuple[tuple[str, str], ...]) -> bytes:
    return b"(" + b" ".join(response.string(k) + b" " + response.string(v) for k, v in pairs) + b")"


@handles(Id, ANY)
async def id_(session: Session, cmd: Id) -> Result:
    # Valid in every state (RFC 2971 §3.1); one log line per ID, fields as the client sent.
    # Values cut short in the log: a client may send 30 of 1024 octets each.
    client = {} if cmd.params is None else {k.lower(): v and v[:_LOGGED] for k, v in cmd.params}
    log.info("client id", extra=kv(client_id=client))
    await session.untagged(b"ID " + _id_list(SERVER_ID))
    return ok("ID completed")
