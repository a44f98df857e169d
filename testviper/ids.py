"""Run identifiers: UUIDv7 (RFC 9562), so ids sort by creation time."""

import os
import time
import uuid


def new_run_id(now_ns: int | None = None) -> str:
    """Return a UUIDv7 string: 48-bit Unix milliseconds, then random bits.

    Python 3.11 has no ``uuid.uuid7``; the layout is short enough to build here.
    """
    millis = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))
