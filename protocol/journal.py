"""Reading an append-only journal: signed records as a CBOR sequence, and its torn tail.

A journal file is a CBOR sequence of byte strings, each holding one encoded signed record,
appended and fsynced one at a time. After a power loss the last append may be incomplete
or garbled. The torn tail starts at the first item that is incomplete, is not a byte
string, or does not hold a well-formed record envelope, and runs to the end of the file.
A whole envelope that names an algorithm other than EdDSA is not torn: it is yielded, and
the record parser reports the algorithm.
It is never truncated away: the next boot's recovery record names it as
``<journal path>@<offset>`` with its length and SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from protocol import cose
from protocol.cbor import MAX_OBJECT_BYTES, TruncatedItemError, _head_length
from protocol.errors import AlgorithmError, DecodeError


@dataclass(frozen=True, slots=True)
class TornTail:
    """Bytes at the end of a file that are not a whole item: kept and accounted for."""

    name: str
    offset: int
    length: int
    hash: bytes


class JournalScan:
    """Iterate the items of a journal; afterwards :attr:`torn` holds its torn tail, if any."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self.name = name
        self.torn: TornTail | None = None
        self.end = 0

    def items(self) -> Iterator[bytes]:
        """Yield each whole item; stop at the torn tail."""
        for _, body in self.entries():
            yield body

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, item)`` for each whole item; stop at the torn tail."""
        stream = self._stream
        offset = 0
        while True:
            first_b = stream.read(1)
            if not first_b:
                self.end = offset
                return
            # What this item has read so far: the torn tail is hashed from its first byte
            # without seeking back (a zip member, for one, cannot seek).
            head = _Recording(stream)
            body = b""
            try:
                first = first_b[0]
                if first >> 5 != 2:
                    raise DecodeError("not a byte string")
                length, _ = _head_length(head, first)
                if length > MAX_OBJECT_BYTES:
                    raise DecodeError("item too long")
                body = stream.read(length)
                if len(body) != length:
                    raise TruncatedItemError(len(body))
                # Whole, but under a forbidden algorithm: whoever parses it reports that.
                with contextlib.suppress(AlgorithmError):
                    cose.decode(body, cose.ContentType.RECORD)
            except DecodeError:
                self._tail(offset, first_b + head.data + body)
                return
            start = offset
            offset += 1 + len(head.data) + length
            yield start, body

    def _tail(self, offset: int, read: bytes) -> None:
        h = hashlib.sha256(read)
        total = len(read)
        while block := self._stream.read(1 << 16):
            h.update(block)
            total += len(block)
        self.end = offset
        self.torn = TornTail(f"{self.name}@{offset}", offset, total, h.digest())


class _Recording:
    """A reader that keeps what it has read (an item head: at most 8 bytes)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.data = b""

    def read(self, size: int) -> bytes:
        block = self._stream.read(size)
        self.data += block
        return block
