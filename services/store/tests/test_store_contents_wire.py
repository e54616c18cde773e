"""GetMessageContents' and GetMessageMeta's hand-made responses are the protobuf encoding of the
same messages."""

from __future__ import annotations

import random

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.contents_wire import ResponseBuilder, meta_response, varint

CASES = [
    [],
    [dict(uid=1, data=b"x", last=True)],
    [dict(uid=7, last=True, missing=True)],
    [dict(uid=300, data=b"a" * 200), dict(uid=300, data=b"b" * 70_000, last=True)],
    [dict(uid=2**32 - 1, data=b"\r\n.\r\n", last=True, wire_ready=True)],
    [dict(uid=5, data=b"", last=True, wire_ready=True)],  # empty data: left out, as protobuf
]


@pytest.mark.parametrize("parts", CASES)
def test_same_bytes_as_protobuf(parts: list[dict[str, object]]) -> None:
    out = ResponseBuilder()
    for p in parts:
        out.part(**p)  # type: ignore[arg-type]
    want = store_pb2.MessageContents(parts=[store_pb2.MessagePart(**p) for p in parts])  # type: ignore[arg-type]
    assert out.octets == sum(len(p.get("data", b"")) for p in parts)  # type: ignore[arg-type]
    assert out.take() == want.SerializeToString()
    assert not out and out.octets == 0 and out.take() == b""


def test_random_parts_parse_back() -> None:
    rng = random.Random(42)
    for _ in range(200):
        out = ResponseBuilder()
        parts = [
            dict(
                uid=rng.choice([1, 127, 128, 16_384, rng.randrange(1, 2**32)]),
                data=rng.randbytes(rng.choice([0, 1, 127, 128, 300, 20_000])),
                last=rng.random() < 0.5,
                missing=rng.random() < 0.1,
                wire_ready=rng.random() < 0.5,
            )
            for _ in range(rng.randrange(1, 6))
        ]
        for p in parts:
            out.part(**p)  # type: ignore[arg-type]
        got = store_pb2.MessageContents.FromString(out.take())
        assert [
            dict(uid=g.uid, data=g.data, last=g.last, missing=g.missing, wire_ready=g.wire_ready)
            for g in got.parts
        ] == parts


def test_varint() -> None:
    assert [varint(n) for n in (0, 1, 127, 128, 300, 2**32 - 1)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\xff\xff\xff\xff\x0f",
    ]  # fmt: skip
    # The one- and two-octet shortcuts agree with the general loop at their edges.
    for n in (0x3FFF, 0x4000, 0x4001, 2**21 - 1, 2**21):
        out, m = bytearray(), n
        while m > 0x7F:
            out.append((m & 0x7F) | 0x80)
            m >>= 7
        out.append(m)
        assert varint(n) == bytes(out)


def _meta(subject: str, header: bytes, uid: int = 0) -> bytes:
    m = store_pb2.MessageMeta(uid=uid, header=header, body_offset=len(header))
    m.envelope.subject = subject
    m.envelope.has_subject = True
    m.body.type, m.body.subtype, m.body.size = "text", "plain", 12
    return m.SerializeToString()


def test_meta_response_is_what_parsing_and_setting_the_uid_gave() -> None:
    """Each stored meta (uid 0, or a stale one: the UID given wins) gets its UID, as
    ``m.ParseFromString(meta); m.uid = uid`` did before (ADR 0056)."""
    found = [
        (1, _meta("one", b"Subject: one\r\n\r\n")),
        (300, _meta("", b"")),
        (2**32 - 1, _meta("big", b"X: " + b"y" * 70_000 + b"\r\n\r\n", uid=9)),
    ]
    want = store_pb2.GetMessageMetaResponse()
    for uid, meta in found:
        m = want.messages.add()
        m.ParseFromString(meta)
        m.uid = uid
    got = store_pb2.GetMessageMetaResponse.FromString(meta_response(found))
    assert got == want
    assert [m.uid for m in got.messages] == [1, 300, 2**32 - 1]
    assert meta_response([]) == b""
