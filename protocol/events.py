"""Signed MQTT payloads: status, events and telemetry, all signed by the device key.

Every payload is a COSE_Sign1 (content type ``event``) over the deterministic CBOR map
``{"v", "device", "boot", "n", "kind", "time", "body"}``, where ``n`` counts the device's
messages within one boot. Consumers drop duplicates and replays by ``(device, boot, n)``
and reject a payload whose signer is not the device named in its topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import cose
from protocol.errors import DecodeError
from protocol.keys import Signer
from protocol.wire import (
    FORMAT_VERSION,
    check_device_id,
    check_map,
    check_version,
    get_bytes,
    get_int,
)

MAX_EVENT_BYTES = 16 * 1024


class EventKind(StrEnum):
    """What a device announces."""

    STATUS = "status"
    TELEMETRY = "telemetry"
    RECORDING_STARTED = "recording_started"
    RECORDING_STOPPED = "recording_stopped"
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_CLOSED = "incident_closed"
    SELF_CHECK = "self_check"
    DELETION_REFUSED = "deletion_refused"
    STORAGE_FULL = "storage_full"
    CLOCK_FAULT = "clock_fault"
    MEDIA_FAILING = "media_failing"
    COMMAND = "command"


#: Fields of a telemetry body. Integers only, so that the encoding is exact.
TELEMETRY_FIELDS = frozenset(
    {
        "battery_permille",
        "battery_mv",
        "charging",
        "storage_free",
        "storage_total",
        "record_seconds_left",
        "clock_offset_us",
        "clock_synced",
        "temperature_mc",
        "backlog_records",
        "backlog_bytes",
        "last_receipt_seq",
        "last_receipt_time",
        "recording",
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One signed announcement."""

    device: str
    boot: bytes
    n: int
    kind: EventKind
    time: int
    body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_device_id(self.device, "event")
        if len(self.boot) != 16:
            raise DecodeError("event: boot id must be 16 bytes")
        if self.kind is EventKind.TELEMETRY:
            check_map(self.body, "telemetry", set(), TELEMETRY_FIELDS)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return {
            "v": FORMAT_VERSION,
            "device": self.device,
            "boot": self.boot,
            "n": self.n,
            "kind": self.kind.value,
            "time": self.time,
            "body": dict(self.body),
        }

    def sign(self, signer: Signer) -> bytes:
        """The encoded COSE_Sign1 to publish."""
        return cose.sign_object(signer, cose.ContentType.EVENT, self.to_cbor())

    @property
    def key(self) -> tuple[str, bytes, int]:
        """What duplicates share: (device, boot, n)."""
        return (self.device, self.boot, self.n)

    @classmethod
    def parse(cls, data: bytes) -> tuple[Event, cose.Sign1]:
        """Parse a payload (signature unchecked: the caller knows the device key)."""
        if len(data) > MAX_EVENT_BYTES:
            raise DecodeError(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
        msg = cose.decode(data, cose.ContentType.EVENT)
        what = "event"
        body = check_map(msg.body(what), what, {"v", "device", "boot", "n", "kind", "time", "body"})
        check_version(body, what)
        try:
            kind = EventKind(body["kind"])
        except ValueError as exc:
            raise DecodeError(f"{what}: unknown kind {body['kind']!r}") from exc
        inner = body["body"]
        if not isinstance(inner, Mapping) or not all(isinstance(k, str) for k in inner):
            raise DecodeError(f"{what}: body must be a map with text keys")
        event = cls(
            check_device_id(body["device"], what),
            get_bytes(body, "boot", what, size=16),
            get_int(body, "n", what),
            kind,
            get_int(body, "time", what),
            dict(inner),
        )
        return event, msg
