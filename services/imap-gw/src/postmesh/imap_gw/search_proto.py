"""Typed SEARCH criteria (parser.search) as the store's ``SearchKey`` tree (store.proto).

The criteria must already be resolved by the session: message sequence numbers and ``$`` are
UID sets by now (the store knows UIDs only).
"""

from __future__ import annotations

import datetime

from postmesh.api.store.v1 import store_pb2
from postmesh.imap_gw.parser import search as s
from postmesh.imap_gw.parser.sequence import STAR, SequenceSet

_EPOCH = datetime.date(1970, 1, 1)
# "*" alone as a UidRange: from the highest UID (last = 0) up to the largest possible UID,
# which the store's "a range is the same in either order" turns into just the highest UID.
_MAX_UID = 2**32 - 1

_DATE_FIELDS = {
    (s.DateField.INTERNAL, s.DateOp.BEFORE): "before",
    (s.DateField.INTERNAL, s.DateOp.ON): "on",
    (s.DateField.INTERNAL, s.DateOp.SINCE): "since",
    (s.DateField.SENT, s.DateOp.BEFORE): "sent_before",
    (s.DateField.SENT, s.DateOp.ON): "sent_on",
    (s.DateField.SENT, s.DateOp.SINCE): "sent_since",
}


def uid_ranges(seq: SequenceSet) -> store_pb2.UidRangeList:
    """UidRange (inclusive, ``last`` 0 = "*"): ``a:*`` and ``*:a`` are both a..highest; ``4:2``
    is sent as 2..4 (RFC 9051 §9: either order; the store refuses first > last)."""
    out = store_pb2.UidRangeList()
    for a, b in seq.ranges:
        if a == STAR and b == STAR:
            out.ranges.add(first=_MAX_UID, last=0)
        elif a == STAR or b == STAR:
            out.ranges.add(first=b if a == STAR else a, last=0)
        else:
            out.ranges.add(first=min(a, b), last=max(a, b))
    return out


def to_proto(key: s.SearchKey) -> store_pb2.SearchKey:
    """The store's SearchKey for ``key``; ValueError for unresolved sequence numbers or ``$``."""
    if isinstance(key, s.All):
        return store_pb2.SearchKey(all=True)
    if isinstance(key, s.Flag):
        if key.present:
            return store_pb2.SearchKey(flag_set=key.flag)
        return store_pb2.SearchKey(flag_unset=key.flag)
    if isinstance(key, s.Recent):
        # \Recent is a session's (RFC 3501 §2.3.2): a session sends its recent UIDs instead
        # (commands/search.py). Without a session's view nothing is recent, so RECENT matches
        # no message and OLD/UNRECENT every message.
        return _not(store_pb2.SearchKey(all=True))
    if isinstance(key, s.Date):
        days = (key.day - _EPOCH).days
        out = store_pb2.SearchKey()
        setattr(out, _DATE_FIELDS[(key.field, key.op)], days)
        return out
    if isinstance(key, s.Size):
        if key.larger:
            return store_pb2.SearchKey(larger=key.octets)
        return store_pb2.SearchKey(smaller=key.octets)
    if isinstance(key, s.Header):
        return store_pb2.SearchKey(header=store_pb2.HeaderMatch(name=key.name, value=key.value))
    if isinstance(key, s.Body):
        return store_pb2.SearchKey(body=key.text)
    if isinstance(key, s.Text):
        return store_pb2.SearchKey(text=key.text)
    if isinstance(key, s.Uid):
        if key.sequence.saved:
            raise ValueError("$ must be resolved before the search")
        return store_pb2.SearchKey(uid=uid_ranges(key.sequence))
    if isinstance(key, s.ModSeq):
        return store_pb2.SearchKey(modseq=key.modseq)
    if isinstance(key, s.Not):
        return _not(to_proto(key.key))
    if isinstance(key, s.Or):
        out = store_pb2.SearchKey()
        getattr(out, "or").keys.extend([to_proto(key.left), to_proto(key.right)])
        return out
    if isinstance(key, s.And):
        out = store_pb2.SearchKey()
        getattr(out, "and").keys.extend(to_proto(k) for k in key.keys)
        return out
    if isinstance(key, s.Seq):
        raise ValueError("message sequence numbers must be resolved to UIDs before the search")
    raise ValueError(f"unknown search key {type(key).__name__}")


def _not(inner: store_pb2.SearchKey) -> store_pb2.SearchKey:
    out = store_pb2.SearchKey()
    getattr(out, "not").CopyFrom(inner)
    return out
