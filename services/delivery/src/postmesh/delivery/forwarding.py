"""Remote targets of a local alias become envelope recipients of their own."""

from __future__ import annotations

from collections.abc import Iterable

from postmesh.api.events.v1 import events_pb2
from postmesh.delivery.smtp_client import xtext


def forwarded(original: events_pb2.Recipient, targets: Iterable[str]) -> list[events_pb2.Recipient]:
    """One recipient per remote target, keeping the client's NOTIFY and naming the address it
    gave as ORCPT (RFC 3461 §6.2.7.3: an alias copies the DSN parameters to each target; §4.2
    keeps the original recipient so a bounce can say which address was written)."""
    orcpt = original.orcpt or f"rfc822;{xtext(original.address)}"
    return [
        events_pb2.Recipient(address=t, notify=list(original.notify), orcpt=orcpt) for t in targets
    ]
