"""Real-world shaped messages for the FETCH transcripts (multipart, nested message/rfc822,
base64 and quoted-printable bodies, RFC 2047 and 8-bit headers)."""

from __future__ import annotations

import base64

ATTACHMENT = bytes(range(256)) * 2  # binary data with NUL octets
_B64 = base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")

MIXED = (
    b"From: =?iso-8859-1?q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\r\n"
    b"To: Keld <keld@dkuug.dk>, undisclosed-recipients:;\r\n"
    b'Cc: "Joe Q. Public" <john.q.public@example.com>\r\n'
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a report\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <B27397-0100000@example.com>\r\n"
    b"In-Reply-To: <earlier@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=E9 cr=E8me, a long line that is soft=\r\n"
    b" broken.\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="data.bin"\r\n'
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://example.com/data.bin\r\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    b"Content-ID: <part2@example.com>\r\n"
    b"Content-Description: some bytes\r\n"
    b"\r\n" + _B64 + b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Inner <inner@example.net>\r\n"
    b"Subject: inner\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain text\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=x-unknown\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)

# Raw UTF-8 in the header (RFC 6532) and a single base64 text part.
EIGHT_BIT = (
    "From: Jürgen Müller <jm@example.de>\r\n"
    "To: alice@example.org\r\n"
    "Subject: Grüße aus Köln\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
).encode() + base64.encodebytes("Hallo Welt, schöne Grüße!\n".encode()).replace(b"\n", b"\r\n")
