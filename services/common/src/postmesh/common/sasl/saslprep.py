"""SASLprep (RFC 4013): the stringprep profile SCRAM (RFC 5802 §2.2) applies to passwords."""

from __future__ import annotations

import stringprep
import unicodedata


class SaslPrepError(ValueError):
    """The string holds a character SASLprep prohibits (RFC 4013 §2.3) or breaks the bidi rule."""


_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str) -> str:
    """Map (§2.1), normalise with NFKC (§2.2), check prohibited output (§2.3) and bidi (§2.4).

    Unassigned code points are allowed (the "query" profile of RFC 3454 §7): the same rule is
    applied when keys are derived at password change and when a client logs in.
    """
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing maps, nothing is prohibited
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    for c in normal:
        if any(table(c) for table in _PROHIBITED):
            raise SaslPrepError(f"prohibited character U+{ord(c):04X}")
    # RFC 3454 §6: RandALCat text has no LCat characters and starts and ends with RandALCat.
    if any(stringprep.in_table_d1(c) for c in normal) and (
        any(stringprep.in_table_d2(c) for c in normal)
        or not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1]))
    ):
        raise SaslPrepError("string violates the bidirectional rule")
    return normal
