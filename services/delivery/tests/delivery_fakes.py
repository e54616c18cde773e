"""Stand-ins for the unit tests (the integration tests use a real dnsmasq and Postfix): a
scripted SMTP peer on loopback that records the raw bytes of every transaction, and an
in-memory DNS resolver with dnspython's interface."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from postmesh.common.tls import ensure_dev_certificate


@dataclass
class Transaction:
    mail: bytes = b""
    rcpts: list[bytes] = field(default_factory=list)
    data: bytes = b""  # raw, as on the wire (dot-stuffed), without the final ".\r\n"
    tls: bool = False  # the transaction ran under STARTTLS
    # BDAT (RFC 3030): the chunk sizes as sent; data is then the chunks joined.
    bdat_chunks: list[int] = field(default_factory=list)


@dataclass
class FakeSmtp:
    extensions: tuple[str, ...] = ("8BITMIME", "SMTPUTF8", "DSN", "SIZE 10000000")
    greeting: bytes = b"220 fake.test ESMTP\r\n"
    mail_reply: bytes = b"250 2.1.0 ok\r\n"
    # RCPT replies by address (default 250).
    rcpt_replies: dict[str, bytes] = field(default_factory=dict)
    data_reply: bytes = b"250 2.0.0 queued\r\n"
    # Replies to BDAT chunks by their index in the transaction (default 250; LAST: data_reply).
    bdat_replies: dict[int, bytes] = field(default_factory=dict)
    transactions: list[Transaction] = field(default_factory=list)
    connections: int = 0
    commands: list[bytes] = field(default_factory=list)
    port: int = 0
    # STARTTLS is offered with this server context (RFC 3207).
    tls: ssl.SSLContext | None = None
    # Offered only in the EHLO after STARTTLS (as REQUIRETLS, RFC 8689 §4.2.1).
    tls_extensions: tuple[str, ...] = ()
    tls_sessions: int = 0
    # A peer that closed an idle connection just as the client reused it: the MAIL after
    # this many transactions on one connection gets ``idle_close_reply`` (b"": no reply) and
    # the connection is closed. None: never.
    idle_close_after: int | None = None
    idle_close_reply: bytes = b"421 4.4.2 fake.test idle timeout\r\n"
    # PIPELINING (RFC 2920) offered, with Postfix's answers to a group that went wrong: RCPT
    # without an accepted MAIL is 503, DATA without an accepted RCPT is 554.
    pipelining: bool = False
    # With pipelining: no reply is written before DATA arrives, so a client that waits for
    # MAIL's reply before sending RCPT and DATA gets nothing (it did not pipeline).
    replies_at_data: bool = False
    # With pipelining: DATA is taken (354) even without an accepted RCPT, as some servers do.
    data_without_rcpt: bool = False
    _server: asyncio.Server | None = None

    async def start(self) -> FakeSmtp:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        w.write(self.greeting)
        tx = Transaction()
        secure = False
        done = 0  # transactions on this connection
        mail_ok = False
        accepted = 0
        held: list[bytes] = []  # replies not yet written (replies_at_data)

        def reply(data: bytes) -> None:
            if self.pipelining and self.replies_at_data and verb in (b"MAIL", b"RCPT"):
                held.append(data)
                return
            w.write(b"".join(held) + data)
            held.clear()

        try:
            while line := await r.readline():
                self.commands.append(line)
                verb = line[:4].upper()
                if verb == b"STAR" and self.tls is not None and not secure:
                    w.write(b"220 2.0.0 ready for TLS\r\n")
                    await w.drain()
                    await w.start_tls(self.tls)
                    secure = True
                    self.tls_sessions += 1
                    continue
                if verb == b"EHLO":
                    offered = list(self.extensions)
                    if self.tls is not None and not secure:
                        offered.append("STARTTLS")
                    if self.pipelining:
                        offered.append("PIPELINING")
                    if secure:
                        offered += self.tls_extensions
                    ext = [b"250-fake.test"] + [b"250-" + e.encode() for e in offered]
                    ext[-1] = b"250 " + ext[-1][4:]
                    w.write(b"\r\n".join(ext) + b"\r\n")
                elif verb == b"MAIL":
                    if done == self.idle_close_after:
                        w.write(self.idle_close_reply)
                        await w.drain()
                        break
                    tx = Transaction(mail=line, tls=secure)
                    mail_ok, accepted = self.mail_reply.startswith(b"2"), 0
                    reply(self.mail_reply)
                elif verb == b"RCPT":
                    tx.rcpts.append(line)
                    addr = line.partition(b"<")[2].partition(b">")[0].decode()
                    answer = self.rcpt_replies.get(addr, b"250 2.1.5 ok\r\n")
                    if self.pipelining and not mail_ok:
                        answer = b"503 5.5.1 Error: need MAIL command\r\n"
                    accepted += answer.startswith(b"2")
                    reply(answer)
                elif verb == b"DATA":
                    if self.pipelining and not accepted and not self.data_without_rcpt:
                        reply(b"554 5.5.1 Error: no valid recipients\r\n")
                        await w.drain()
                        continue
                    reply(b"354 go ahead\r\n")
                    await w.drain()
                    chunks = []
                    while (chunk := await r.readline()) != b".\r\n":
                        if not chunk:
                            return
                        chunks.append(chunk)
                    tx.data = b"".join(chunks)
                    mail_ok = False
                    if self.pipelining and not accepted:
                        w.write(b"554 5.5.1 Error: no valid recipients\r\n")
                        await w.drain()
                        continue
                    self.transactions.append(tx)
                    done += 1
                    w.write(self.data_reply)
                elif verb == b"BDAT":
                    # RFC 3030 §2: the chunk is read whatever the reply will be.
                    size, _, last = line[5:].strip().partition(b" ")
                    chunk = await r.readexactly(int(size))
                    tx.bdat_chunks.append(len(chunk))
                    tx.data += chunk
                    refusal = self.bdat_replies.get(len(tx.bdat_chunks) - 1)
                    if refusal is not None:
                        w.write(refusal)
                        tx = Transaction()
                    elif last.upper() == b"LAST":
                        self.transactions.append(tx)
                        w.write(self.data_reply)
                    else:
                        w.write(b"250 2.0.0 %d octets\r\n" % len(chunk))
                elif verb == b"RSET":
                    tx = Transaction()
                    mail_ok = False
                    w.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    w.write(b"221 2.0.0 bye\r\n")
                    await w.drain()
                    break
                else:
                    w.write(b"502 5.5.2 unknown\r\n")
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()


class _Signed(list[Any]):
    """An answer a validating resolver vouched for: its response has the AD bit."""

    response = dns.message.make_response(dns.message.make_query("x.", "A"))
    response.flags |= dns.flags.AD


class FakeResolver:
    """``zone[(name, "MX")] = ["10 mx1.example.", ...]``; an exception instance is raised.
    Answers for names in ``signed`` (NODATA ones too) carry the AD bit."""

    def __init__(self) -> None:
        self.zone: dict[tuple[str, str], list[str] | Exception] = {}
        self.queries: list[tuple[str, str]] = []
        self.signed: set[str] = set()

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.zone[(name.lower().rstrip("."), rdtype)] = list(values)

    def sign(self, *names: str) -> None:
        self.signed.update(n.lower().rstrip(".") for n in names)

    async def resolve(
        self, name: str, rdtype: Any, search: bool = False, raise_on_no_answer: bool = True
    ) -> list[Any]:
        rdtype_text = rdtype if isinstance(rdtype, str) else dns.rdatatype.to_text(rdtype)
        key = (str(name).lower().rstrip("."), rdtype_text)
        self.queries.append(key)
        answer: list[Any] = _Signed() if key[0] in self.signed else []
        if key not in self.zone:
            if any(n == key[0] for n, _ in self.zone):
                if not raise_on_no_answer:
                    return answer  # as dnspython's Answer without an RRset iterates
                raise dns.resolver.NoAnswer()
            raise dns.resolver.NXDOMAIN()
        value = self.zone[key]
        if isinstance(value, Exception):
            raise value
        t = dns.rdatatype.from_text(rdtype_text)
        answer += [dns.rdata.from_text(dns.rdataclass.IN, t, v) for v in value]
        return answer


def timeout() -> Exception:
    return dns.exception.Timeout()


def tls_pair(directory: Path, *names: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for ``names``, and the path of that
    certificate, for the client to trust as its CA file."""
    cert, key = ensure_dev_certificate(directory, names[0], alt_names=names[1:])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, str(cert)
