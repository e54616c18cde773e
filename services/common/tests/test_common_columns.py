"""Integer columns as little-endian bytes (ListMessageFlagsResponse's packed fields)."""

from __future__ import annotations

from array import array

import pytest

from postmesh.common import columns


def test_columns_round_trip_little_endian() -> None:
    assert columns.pack(columns.U32, [1, 2**32 - 1]) == b"\x01\x00\x00\x00\xff\xff\xff\xff"
    assert columns.pack(columns.U64, array(columns.U64, [2**40])) == (2**40).to_bytes(8, "little")
    for code, values in ((columns.U32, [0, 7, 2**31]), (columns.U64, [0, 3, 2**63])):
        assert list(columns.unpack(code, columns.pack(code, values))) == values
    assert list(columns.unpack(columns.U32, b"")) == []


def test_values_that_do_not_fit_and_torn_bytes_are_refused() -> None:
    with pytest.raises(OverflowError):
        columns.pack(columns.U32, [2**32])
    with pytest.raises(ValueError):
        columns.unpack(columns.U64, b"\x00" * 12)
