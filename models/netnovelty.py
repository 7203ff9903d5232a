"""Identity features of a call, and compact bounded "seen" sets for novelty checks.

Networks are compared at three levels: the address, its /24 and its /16 (the /16 stands in for
an ASN: a new address in a known /24 is a new CI runner, a new /16 is somebody else). IPv6 uses
/64, /48 and /32. User agents are split into a family (`openai-python`) and a version, so an
SDK upgrade is not novel. Model ids are reduced to a family (`claude-sonnet`) so an upgrade
within the family is not novel either.

>>> net_parts("203.0.113.7") == (0xCB007107, 0xCB0071, 0xCB00)
True
>>> ua_parts("openai-python/1.52.0"), ua_parts("Boto3/1.35.2 md/Botocore#1.35.2 ua/2.0")
(('openai-python', '1.52'), ('boto3', '1.35'))
>>> model_family("claude-3-5-sonnet-20241022"), model_family("anthropic.claude-3-5-sonnet-20240620-v1:0")
('claude-sonnet', 'claude-sonnet')
>>> model_family("gpt-4o-2024-11-20"), is_expensive("claude-3-opus-20240229"), is_expensive("gpt-4o-mini")
('gpt-4o', True, False)
>>> s = SeenSet(3)
>>> for t, x in enumerate([5, 6, 7, 8]): _ = s.add(x, t)
>>> 5 in s, 8 in s, len(s)
(False, True, 3)
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from array import array

# Addresses already parsed (valid ones only): event validation (models/events.py) and key theft
# share it, so an address is parsed once and remembered once. An IPv4 address is held as its
# int (32 B), its parts made when asked for: a tuple of three ints held 120 B more, and key theft
# asks once per distinct caller (its own cache of callers keeps the tuple).
_NET_CACHE: dict[str, int | tuple[int, int, int]] = {}
_UA_CACHE: dict[str, tuple[str, str]] = {}
_MODEL_CACHE: dict[str, tuple[int, str, bool]] = {}
_CACHE_MAX = 200_000


def h32(text: str) -> int:
    """A stable 32-bit hash (crc32): the same across processes, unlike `hash()`."""
    return zlib.crc32(text.encode("utf-8", "replace"))


def net_parts(ip: str) -> tuple[int, int, int] | None:
    """(address, /24, /16) as 32-bit ints (IPv6: folded /64, /48, /32); None if `ip` is not an
    IPv4 or IPv6 address (`ipaddress`'s rules: what event validation rejects).

    >>> net_parts("10.0.0.1") == (0x0A000001, 0x0A0000, 0x0A00), net_parts("10.0.0.256"), net_parts("1_0.0.0.1")
    (True, None, None)
    """
    hit = _NET_CACHE.get(ip)
    if hit is None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        n = int(addr)
        if addr.version == 4:
            hit = n
        else:
            hit = ((n >> 64) & 0xFFFFFFFF ^ (n >> 96), (n >> 80) & 0xFFFFFFFF, (n >> 96) & 0xFFFFFFFF | 0x1_0000)
        if len(_NET_CACHE) >= _CACHE_MAX:
            _NET_CACHE.clear()
        _NET_CACHE[ip] = hit
    return (hit, hit >> 8, hit >> 16) if hit.__class__ is int else hit


_UA_VER = re.compile(r"v?(\d+)(?:\.(\d+))?")


def ua_parts(ua: str) -> tuple[str, str]:
    """(family, major.minor) of a user agent's first product token."""
    hit = _UA_CACHE.get(ua)
    if hit is not None:
        return hit
    token = ua.strip().split(None, 1)[0] if ua.strip() else ""
    fam, _, rest = token.partition("/")
    m = _UA_VER.match(rest)
    fam = fam[:48].lower()
    ver = f"{m.group(1)}.{m.group(2) or 0}" if m else ""
    if len(_UA_CACHE) > _CACHE_MAX:
        _UA_CACHE.clear()
    _UA_CACHE[ua] = (fam, ver)
    return fam, ver


_VENDOR = re.compile(r"^(?:[a-z]{2}\.)?(?:anthropic|amazon|meta|mistral|cohere|ai21|openai|google|models)[./]")
_NOISE = re.compile(r"^(?:v?\d[\d.]*[a-z]?|\d{4,}|latest|preview|instruct|chat|v\d+:\d+)$")
_EXPENSIVE = re.compile(r"opus|^o1(?!-mini)|^o3-pro|^gpt-4(?:-32k|-0\d|$)|gpt-4\.5|ultra|-pro\b|premier|405b")


def model_info(model: str) -> tuple[int, str, bool]:
    """(hash of the family, family, expensive?) for a raw model id."""
    hit = _MODEL_CACHE.get(model)
    if hit is not None:
        return hit
    name = _VENDOR.sub("", model.lower())
    name = name.split(":")[0]
    parts = [p for p in re.split(r"[-_@/]", name) if p]
    # Keep the tier words and the generation letter suffixes ("4o"), drop dates and versions.
    keep = [p for p in parts if not _NOISE.match(p)]
    fam = "-".join(keep) or name
    if fam.startswith("gpt") and len(parts) > 1 and re.match(r"^\d[\d.]*o$", parts[1]):
        fam = "gpt-" + parts[1] + ("-" + "-".join(keep[1:]) if len(keep) > 1 else "")
    out = (h32(fam), fam, bool(_EXPENSIVE.search(name)))
    if len(_MODEL_CACHE) > _CACHE_MAX:
        _MODEL_CACHE.clear()
    _MODEL_CACHE[model] = out
    return out


def model_family(model: str) -> str:
    return model_info(model)[1]


def is_expensive(model: str) -> bool:
    return model_info(model)[2]


def country_code(cc: str) -> int:
    return (ord(cc[0]) << 8) | ord(cc[1]) if len(cc) == 2 else h32(cc)


class SeenSet:
    """A bounded set of 32-bit values with last-seen hours; the least recently seen is evicted.

    Two `array`s of 4-byte entries ("I": "L" is 8 bytes here) instead of a Python set of
    strings. A project's identity sets (`IdentitySets`, models/features.py) are eight of these;
    a key's are packed further (models/keyids.py).
    """

    __slots__ = ("cap", "vals", "last")

    def __init__(self, cap: int, code: str = "I") -> None:
        self.cap = cap
        self.vals = array(code)  # every value fits 32 bits (`net_parts`, `h32`, `country_code`), hours too
        self.last = array(code)

    def __contains__(self, v: int) -> bool:
        return v in self.vals

    def __len__(self) -> int:
        return len(self.vals)

    def add(self, v: int, hour: int) -> bool:
        """Insert or refresh `v`; return True (kept)."""
        vals = self.vals
        try:
            i = vals.index(v)
        except ValueError:
            if len(vals) >= self.cap:
                j = self.last.index(min(self.last))
                vals[j] = v
                self.last[j] = hour
            else:
                vals.append(v)
                self.last.append(hour)
            return True
        self.last[i] = hour
        return True

    def __getstate__(self):
        return (self.cap, self.vals.tobytes(), self.last.tobytes())

    def __setstate__(self, st) -> None:
        """Pickles from before the 4-byte arrays hold 8-byte ("L") ones."""
        self.cap = st[0]
        self.vals, self.last = array("L"), array("L")
        self.vals.frombytes(st[1])
        self.last.frombytes(st[2])
        if max(self.vals, default=0) <= 0xFFFFFFFF and max(self.last, default=0) <= 0xFFFFFFFF:
            self.vals, self.last = array("I", self.vals), array("I", self.last)
