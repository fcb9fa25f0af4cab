"""One way to derive seeds: a stable 63-bit integer from any parts (independent of
Python's hash salt), so a resumed or re-distributed run draws the same numbers."""
from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """A stable seed from ``parts`` (ints and strings), e.g. ``derive_seed("init", seed)``."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1
