"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208) on the user's one quota root.

Every mailbox of a user shares one root, named "" (RFC 9208 §3.1 lets a server pick any
name); its resources are STORAGE (units of 1024 octets) and MESSAGE. A resource without a
limit is left out; a user with no limit at all has no quota root. Limits are the
administrator's business (the admin API): SETQUOTA is refused, and QUOTASET not advertised.
"""

from __future__ import annotations

from postmesh.imap_gw import response
from postmesh.imap_gw.backend import MailboxNotFound, Quota
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.parser.mailbox import GetQuota, GetQuotaRoot, SetQuota
from postmesh.imap_gw.session import MailboxNameError, Result, Session, bad, no, ok

ROOT = ""


def _resources(q: Quota) -> list[str]:
    out = []
    if q.storage_limit:
        # RFC 9208 §5.1: STORAGE counts KiB; usage rounds up so a full mailbox looks full.
        out.append(f"STORAGE {(q.storage_used + 1023) // 1024} {q.storage_limit // 1024}")
    if q.message_limit:
        out.append(f"MESSAGE {q.messages_used} {q.message_limit}")  # RFC 9208 §5.2
    return out


def _quota_line(resources: list[str]) -> bytes:
    return b"QUOTA " + response.string(ROOT) + f" ({' '.join(resources)})".encode()


@handles(GetQuotaRoot, AUTHENTICATED)
async def getquotaroot(session: Session, cmd: GetQuotaRoot) -> Result:
    assert session.user is not None
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    try:
        await session.store.get_mailbox(session.user, name)
    except MailboxNotFound:
        return no(f"Mailbox does not exist: {name}", "NONEXISTENT")
    resources = _resources(await session.store.get_quota(session.user))
    line = b"QUOTAROOT " + session.encode_mailbox(name)
    if not resources:
        await session.untagged(line)  # no quota root (RFC 9208 §4.1.2)
        return ok("GETQUOTAROOT completed")
    await session.send(
        response.untagged(line + b" " + response.string(ROOT))
        + response.untagged(_quota_line(resources))
    )
    return ok("GETQUOTAROOT completed")


@handles(GetQuota, AUTHENTICATED)
async def getquota(session: Session, cmd: GetQuota) -> Result:
    assert session.user is not None
    resources = _resources(await session.store.get_quota(session.user))
    if cmd.root != ROOT.encode() or not resources:
        return no("No such quota root", "NONEXISTENT")
    await session.untagged(_quota_line(resources))
    return ok("GETQUOTA completed")


@handles(SetQuota, AUTHENTICATED)
async def setquota(session: Session, cmd: SetQuota) -> Result:
    # RFC 9208 §4.1.3: a server may refuse; users do not set their own limits.
    return no("Quota limits are set by the administrator", "NOPERM")
