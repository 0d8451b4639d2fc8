"""Random identifiers for requests, messages and traces: unique, not secret.

`uuid.uuid4()` makes a system call for its 16 bytes; the service drew five or more per request.
These come from one generator seeded from the operating system (again in a forked child), which is
as unique and costs no system call. Nothing here may be used for keys, tokens or masks.
"""

from __future__ import annotations

import os
import random

_draw = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _draw.seed(os.urandom(32)))

_VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def hex_id() -> str:
    """32 random hex digits (like `uuid4().hex`)."""
    return f"{_draw.getrandbits(128):032x}"


def uuid_text() -> str:
    """A random version 4 UUID in its dashed form (like `str(uuid4())`)."""
    digits = f"{(_draw.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
