"""Deterministic CBOR (RFC 8949 section 4.2.1, core deterministic encoding).

Everything this project signs or hashes is encoded here. Decoding is strict: bounded input
size and nesting depth, no indefinite lengths, no duplicate map keys, no tags unless asked
for, and the input must be exactly the deterministic encoding of what it decodes to (so
that one value has one byte string, and no signature covers two readings).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import IO, Any, Protocol

import cbor2

from protocol.errors import DecodeError

#: Largest single CBOR object the decoders accept (records, certificates, proofs, manifests).
#: Media is never CBOR-encoded, so 1 MiB leaves ample room.
MAX_OBJECT_BYTES = 1 << 20
MAX_DEPTH = 16


def encode(value: Any) -> bytes:
    """Encode ``value`` deterministically (sorted map keys, shortest lengths)."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"value cannot be encoded as CBOR: {exc}") from exc


def _tag_of(args: tuple[Any, ...]) -> cbor2.CBORTag:
    # cbor2 5.x calls tag_hook(decoder, tag), 6.x calls tag_hook(tag, immutable).
    for arg in args:
        if isinstance(arg, cbor2.CBORTag):
            return arg
    raise DecodeError("CBOR tag hook called without a tag")


def _reject_tags(*args: Any) -> Any:
    raise DecodeError(f"unexpected CBOR tag {_tag_of(args).tag}")


def _keep_tag(*args: Any) -> Any:
    return _tag_of(args)


#: The integers plain CBOR heads can carry; anything wider came from a bignum tag.
_INT_RANGE = range(-(1 << 64), 1 << 64)


def _check_data_model(value: Any, allow_tags: bool, what: str, depth: int) -> None:
    """Reject what cbor2 built from a semantic tag (datetime, bignum, set, UUID, decimal, ...)
    or from a simple value other than false, true and null: the format has none of them."""
    if depth <= 0:
        raise DecodeError(f"{what}: nested too deeply")
    if value is None or isinstance(value, bool | str | bytes | float):
        return
    if type(value) is int:
        if value not in _INT_RANGE:
            raise DecodeError(f"{what}: integer outside the CBOR integer range (a bignum tag)")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_data_model(item, allow_tags, what, depth - 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_data_model(key, allow_tags, what, depth - 1)
            _check_data_model(item, allow_tags, what, depth - 1)
        return
    if allow_tags and isinstance(value, cbor2.CBORTag):
        _check_data_model(value.value, allow_tags, what, depth - 1)
        return
    raise DecodeError(f"{what}: holds a value outside the format ({type(value).__name__})")


def decode(data: bytes, *, allow_tags: bool = False, what: str = "object") -> Any:
    """Decode one deterministic CBOR item that spans exactly ``data``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError(f"{what}: empty input")
    if len(data) > MAX_OBJECT_BYTES:
        raise DecodeError(f"{what}: {len(data)} bytes exceeds the limit of {MAX_OBJECT_BYTES}")
    try:
        value = cbor2.loads(
            data,
            tag_hook=_keep_tag if allow_tags else _reject_tags,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except DecodeError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise DecodeError(f"{what}: not valid CBOR ({exc})") from exc
    _check_data_model(value, allow_tags, what, MAX_DEPTH + 1)
    try:
        canonical = cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"{what}: holds values outside the format ({exc})") from exc
    if canonical != data:
        raise DecodeError(f"{what}: not in deterministic CBOR encoding (or trailing bytes)")
    return value


class Readable(Protocol):
    """What the sequence readers need of a stream."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end."""
        ...


def _head_length(stream: Readable, first: int) -> tuple[int, bytes]:
    """Read the argument of a CBOR head whose first byte is ``first``; return it and its bytes."""
    info = first & 0x1F
    if info < 24:
        return info, b""
    sizes = {24: 1, 25: 2, 26: 4, 27: 8}
    if info not in sizes:
        raise DecodeError("indefinite or reserved CBOR length in a sequence item")
    raw = stream.read(sizes[info])
    if len(raw) != sizes[info]:
        raise TruncatedItemError(len(raw) + 1)
    value = int.from_bytes(raw, "big")
    # Deterministic encoding: the shortest head, so that one sequence has one byte string.
    if value < (24 if info == 24 else 1 << (4 * sizes[info])):
        raise DecodeError("CBOR length not in its shortest form in a sequence item")
    return value, raw


class TruncatedItemError(DecodeError):
    """The stream ended inside an item: a torn tail of an append-only file."""

    def __init__(self, have: int) -> None:
        super().__init__(f"stream ends inside an item after {have} bytes")
        self.have = have


def read_bstr_sequence(stream: IO[bytes], *, limit: int = MAX_OBJECT_BYTES) -> Iterator[bytes]:
    """Yield the items of a CBOR sequence (RFC 8742) of byte strings, one at a time.

    Each item is a definite-length byte string; its content is yielded. Memory use is one
    item. A stream that ends inside an item raises :class:`TruncatedItemError` carrying the
    number of bytes of the partial item, so that a caller can account for a torn tail.
    """
    while True:
        first_b = stream.read(1)
        if not first_b:
            return
        first = first_b[0]
        if first >> 5 != 2:
            raise DecodeError(f"sequence item is not a byte string (initial byte 0x{first:02x})")
        length, head = _head_length(stream, first)
        if length > limit:
            raise DecodeError(f"sequence item of {length} bytes exceeds the limit of {limit}")
        body = stream.read(length)
        if len(body) != length:
            raise TruncatedItemError(1 + len(head) + len(body))
        yield body


def bstr_item(payload: bytes) -> bytes:
    """Encode ``payload`` as one byte-string item of a CBOR sequence."""
    return cbor2.dumps(bytes(payload))


def iter_bstr_sequence(data: bytes) -> Iterator[bytes]:
    """Decode a whole in-memory CBOR sequence of byte strings."""
    yield from read_bstr_sequence(io.BytesIO(data))
