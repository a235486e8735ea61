"""SHA-256 helpers and the textual key fingerprint ``sha256:<hex>``."""

from __future__ import annotations

import hashlib
import re
from typing import IO

from protocol.errors import DecodeError

HASH_LEN = 32
ZERO_HASH = bytes(HASH_LEN)
_FINGERPRINT = re.compile(r"^sha256:([0-9a-f]{64})$")


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def sha256_stream(stream: IO[bytes], *, chunk: int = 1 << 16) -> tuple[bytes, int]:
    """Hash a stream in fixed-size chunks; return the digest and the number of bytes read."""
    h = hashlib.sha256()
    total = 0
    while True:
        block = stream.read(chunk)
        if not block:
            return h.digest(), total
        h.update(block)
        total += len(block)


def fingerprint(public_key: bytes) -> str:
    """The fingerprint of a raw public key: ``sha256:`` and the hex SHA-256 of its bytes."""
    return "sha256:" + sha256(public_key).hex()


def parse_fingerprint(text: str) -> bytes:
    """Parse ``sha256:<64 hex>`` (case-insensitive) into the 32-byte digest."""
    match = _FINGERPRINT.match(text.strip().lower())
    if not match:
        raise DecodeError(f"not a key fingerprint (expected sha256:<64 hex digits>): {text!r}")
    return bytes.fromhex(match.group(1))


def require_hash(value: object, what: str) -> bytes:
    """Check that ``value`` is a 32-byte digest."""
    if not isinstance(value, bytes) or len(value) != HASH_LEN:
        raise DecodeError(f"{what}: expected a {HASH_LEN}-byte hash")
    return value
