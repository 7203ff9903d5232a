"""Raw provider secrets never stored: where they are recognised and replaced by a keyed hash.

A key id that is itself a secret (`looks_like_secret`) becomes its `fingerprint`; a secret inside
free text (user agents, principals, error codes, dead-letter payloads) is replaced in place
(`scrub_text`, `scrub_bytes`). The decoder (stream/decode.py) asks `may_hold_secret` first, on
the whole message, so that the regexes run only on messages that may need them.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# Raw provider secrets that must never be stored: OpenAI (sk-, sk-proj-, sk-svcacct-),
# Anthropic (sk-ant-…), AWS secret access keys (40 chars base64-ish), Google API keys (AIza…),
# bearer tokens. Key *ids* (key_…, AKIA…, apikey_01…) are fine.
_SECRET_RE = re.compile(
    r"^(sk-[A-Za-z0-9_\-]{20,}|AIza[0-9A-Za-z_\-]{30,}|[A-Za-z0-9/+]{40}|Bearer\s+\S{16,}|"
    r"ABSK[A-Za-z0-9+/=]{40,}|eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)$"
)
# The same secrets *inside* free text (user agents, principals, error codes, dead-letter
# payloads): replaced by their keyed fingerprint. An AWS secret here must mix upper, lower and
# digits, so hex hashes and ordinary words of 40 characters are left alone.
_IN_TEXT = (
    r"sk-[A-Za-z0-9_\-]{20,}|AIza[0-9A-Za-z_\-]{30,}|Bearer\s+[A-Za-z0-9._~+/=\-]{16,}|"
    r"ABSK[A-Za-z0-9+/=]{40,}|eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+|"
    r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[0-9])(?=[A-Za-z0-9/+]{0,39}[a-z])(?=[A-Za-z0-9/+]{0,39}[A-Z])"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
SECRET_IN_TEXT = re.compile(_IN_TEXT)
_SECRET_BYTES = re.compile(_IN_TEXT.encode())
# Fast pre-check on a whole message (the regex above costs as much as decoding it): the fixed
# prefixes, a 40-character run of base64 characters, or any JSON escape (it could hide either).
# It may say yes when nothing matches (it only decides whether the fields get a look), never no
# when a field would match. Four of the prefixes are looked for in the message with every byte
# that none of them contains deleted: a prefix present in the message is still present there
# (its bytes are all kept), and the copy is a fifth of the size, so five scans cost about one.
# Literal regexes, not `in`: same answer, but `re` jumps to a (mostly rare) first byte: twice as fast.
_B64_RUN = bytes(0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "/+") else 0x20 for i in range(256))
_NOT_PREFIX_BYTE = bytes(c for c in range(256) if c not in b"\\ABIJKSaeryz")
_FIND_SK, *_FIND_FEW = (re.compile(p).search for p in (b"sk-", b"eyJ", b"AIza", b"ABSK", b"Bearer"))


def may_hold_secret(data: bytes) -> bool:
    """Could a string field of this message hold a secret? (True when unsure.)

    >>> [may_hold_secret(m) for m in (b'{"a":"sk-x"}', b'{"ua":"x Bearer y"}', b'{"a":"\\\\/"}', b'{"a":"b"}')]
    [True, True, True, False]
    >>> may_hold_secret(b'{"a":"' + b"Ab1" * 14 + b'"}'), may_hold_secret(b'{"a":"A B e r e r"}')
    (True, False)
    """
    if _FIND_SK(data):
        return True
    few = data.translate(None, _NOT_PREFIX_BYTE)
    return b"\\" in few or any(find(few) for find in _FIND_FEW) or b"a" * 40 in data.translate(_B64_RUN)


def fingerprint(secret_like: str, key: bytes) -> str:
    """Keyed hash used in place of a raw secret that arrived where a key id belongs.

    >>> fingerprint("sk-proj-abc", b"k")[:3]
    'kh_'
    """
    return "kh_" + hmac.new(key, secret_like.encode(), hashlib.sha256).hexdigest()[:24]


def looks_like_secret(value: str) -> bool:
    return bool(_SECRET_RE.match(value))


def scrub_text(text: str, key: bytes) -> str:
    """Replace every secret-shaped substring by its keyed fingerprint.

    >>> scrub_text("curl/8 Bearer abcdefghijklmnopqrstuvwxyz", b"k")[:10]
    'curl/8 kh_'
    """
    return SECRET_IN_TEXT.sub(lambda m: fingerprint(m.group(0), key), text) if SECRET_IN_TEXT.search(text) else text


def scrub_bytes(data: bytes, key: bytes) -> bytes:
    """`scrub_text` for raw bytes (dead-letter payloads may not even be UTF-8)."""
    return _SECRET_BYTES.sub(lambda m: fingerprint(m.group(0).decode("latin-1"), key).encode(), data)
