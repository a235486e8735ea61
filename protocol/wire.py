"""Shape checks shared by the wire types: maps with known keys, typed fields, identifiers.

Wire types are frozen dataclasses that validate on construction and parse from CBOR maps
that must hold exactly their known keys (unknown keys are rejected, not ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from protocol.errors import DecodeError, VersionError

FORMAT_VERSION = 1
T = TypeVar("T")

_DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Largest integer a field may hold (CBOR uint64 range is wider; times in µs fit easily).
MAX_INT = (1 << 63) - 1
MAX_TEXT = 4096


def check_map(
    value: object,
    what: str,
    required: set[str] | frozenset[str],
    optional: set[str] | frozenset[str] = frozenset(),
) -> Mapping[str, Any]:
    """Check that ``value`` is a map with text keys: all of ``required``, some of ``optional``.

    A versioned map (``"v"`` required) has its version checked first: another version may
    well have other fields, and "unknown version" is the finding that explains them.
    """
    if not isinstance(value, Mapping):
        raise DecodeError(f"{what}: expected a map, got {type(value).__name__}")
    keys = set(value)
    if not all(isinstance(k, str) for k in keys):
        raise DecodeError(f"{what}: map keys must be text")
    if "v" in required and "v" in keys:
        check_version(value, what)
    missing = required - keys
    if missing:
        raise DecodeError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise DecodeError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    return value


def check_version(value: Mapping[str, Any], what: str) -> None:
    """Require the ``v`` field to be the one format version this code knows."""
    version = value.get("v")
    if type(version) is not int:
        raise DecodeError(f"{what}: format version must be an integer")
    if version != FORMAT_VERSION:
        raise VersionError(
            f"{what}: unknown format version {version} (this code knows {FORMAT_VERSION})"
        )


def get_int(value: Mapping[str, Any], key: str, what: str, *, minimum: int = 0) -> int:
    """An integer field within ``[minimum, MAX_INT]`` (bool is not an integer here)."""
    item = value[key]
    if type(item) is not int or not minimum <= item <= MAX_INT:
        raise DecodeError(f"{what}: field {key!r} must be an integer in [{minimum}, {MAX_INT}]")
    return item


def get_text(value: Mapping[str, Any], key: str, what: str, *, limit: int = MAX_TEXT) -> str:
    """A text field of at most ``limit`` characters."""
    item = value[key]
    if not isinstance(item, str) or len(item) > limit:
        raise DecodeError(f"{what}: field {key!r} must be text of at most {limit} characters")
    return item


def get_bytes(
    value: Mapping[str, Any], key: str, what: str, *, size: int | None = None, limit: int = 1 << 20
) -> bytes:
    """A byte-string field, of exactly ``size`` bytes when given."""
    item = value[key]
    if not isinstance(item, bytes):
        raise DecodeError(f"{what}: field {key!r} must be a byte string")
    if size is not None and len(item) != size:
        raise DecodeError(f"{what}: field {key!r} must be {size} bytes")
    if len(item) > limit:
        raise DecodeError(f"{what}: field {key!r} exceeds {limit} bytes")
    return item


def get_bool(value: Mapping[str, Any], key: str, what: str) -> bool:
    """A boolean field."""
    item = value[key]
    if not isinstance(item, bool):
        raise DecodeError(f"{what}: field {key!r} must be a boolean")
    return item


def check_device_id(device: object, what: str = "device id") -> str:
    """Device ids are 1-63 characters of ``a-z 0-9 -``, starting with a letter or digit."""
    if not isinstance(device, str) or not _DEVICE_ID.fullmatch(device):
        raise DecodeError(f"{what}: {device!r} is not a device id (1-63 of a-z, 0-9, '-')")
    return device


def optional_text(value: Mapping[str, Any], key: str, what: str) -> str | None:
    """An optional text field: absent means None."""
    return get_text(value, key, what) if key in value else None


def without_none(items: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values: optional fields are absent, never null, in the encoding."""
    return {k: v for k, v in items.items() if v is not None}
