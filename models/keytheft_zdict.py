"""Preset zlib dictionaries for packed key-theft state (models/keytheft_cold.py).

Idle keys' state is a pickle of a few hundred bytes, compressed alone; most of what zlib can
find in it is the structure every such pickle shares: class paths, the packed number records,
runs of zeros in the hourly arrays. A preset dictionary holding one typical pickle lets each
blob refer to that instead of spelling it out: ≈ 24 % smaller for the simulation's keys
(569 → 435 B), 29 % for the bench's (394 → 279 B).

A zlib stream names its dictionary by Adler-32 (RFC 1950), so `DICTIONARIES` is keyed by it:
a dictionary, once used, must stay listed unchanged, or blobs packed with it (in memory and in
snapshots) no longer unpack. A better one is added beside it, with `CURRENT` pointing at it.
"""

from __future__ import annotations

import base64
import zlib

# The pickled state of one simulated key (`keywatch simulate`, provider azure_openai, a day of
# traffic), protocol 5: its ids are the simulator's, nothing real.
_V1 = base64.b64decode(
    "gAWVnQMAAAAAAACMHmtleXdhdGNoLm1vZGVscy5rZXl0aGVmdF9zdGF0ZZSMCEtleVN0YXRllJOUKYGUKIwYa2V5d2F0Y2gu"
    "bW9kZWxzLmZlYXR1cmVzlIwLS2V5QmFzZWxpbmWUk5QpgZQojAxhenVyZV9vcGVuYWmUjAhwcm9qLTAwM5SMFmtleXdhdGNo"
    "Lm1vZGVscy5rZXlpZHOUjAZLZXlJZHOUk5QpgZRDMUkAEAAADAAACAAABgAABgAACAACCgDIEw7vTsWY9nmaBwB0mgcAAQQA"
    "fAOf/HmaBwCUYkOAAESOmaEBAACABg2roQEAAIMBAAAAAAAAfDTIAQAAAAB5mgcAAAAAAKoBAAAAAAAAapoHAAAAAAAAAAAA"
    "AAAAAAAAAAAAAPA/J6CJsOHpZT9GQKiWK6yzPyZJDuTm2S0/AAAAAAAAAAAAAAAAAAAAAFWvlqe7l+a/j6WcDD99wj+UQrAB"
    "AAAJ+WA82YQhO9mEITuMJb87LbIdPAAAAAAAAAAAAAAAABYdCTwAAAAALbIdPAAAAADsUbg8YVdgPlqrgz74mls+vLuDPkco"
    "Uz46tHg+lBh0Ph6FSz4qFYc+uklMPpx9eDwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAuSDY4bKQwNeucKTcLfPg3T7tKNwAA"
    "AAAAAAAAAAAAAC1hHzgAAAAAWL2UOAAAAACbskE4m9EVOjkoTzrgzSs6pao0OjyjMTpXChA6Pt1POi7xFDqqjGo6hRkNOi0h"
    "ODgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEBAQEBAQEBAQDAwMDAwMDAwMDAwMDAwMAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AACUdJRiTk5DgAAAAAAAAPA/EwAAAAAA8D/STJcwOhnwP23eWFA2AGY/AAAAAAAAAAAAAAAAAAAAACegibDh6WU/AAAAAAAA"
    "AAACAAAAAAAAAIAGDauhAQAAfDTIAQAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAlE50lGIu")

DICTIONARIES: dict[int, bytes] = {zlib.adler32(_V1): _V1}
CURRENT = _V1
