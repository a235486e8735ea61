"""Announcements in: check a signed status, event or telemetry message and apply it once.

The same checks whether it came through the broker (:mod:`server.mqtt`) or over HTTP
(``POST /devices/{device}/events``): the payload is a :class:`protocol.events.Event` signed
by the device key; it is accepted only if the device in the payload is the device in the
topic and the signature verifies against that device's enrolled key. Duplicates and replays
are dropped by ``(device, boot, n)``, which the ``event`` table holds unique. Accepted events
go to an :class:`EventSink` (the fleet state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

from protocol import topics
from protocol.errors import ProtocolError
from protocol.events import Event, EventKind
from protocol.keys import key_id
from server import models
from server.alerts import AlertKind, Severity, raise_alert
from server.db import IntegrityError
from server.metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], int]


class EventSink(Protocol):
    """Where checked, first-seen announcements go (the fleet state)."""

    async def event(self, event: Event) -> None:
        """Apply one announcement."""
        ...


class Outcome(StrEnum):
    """What became of one message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"
    WRONG_DEVICE = "wrong_device"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_SIGNATURE = "bad_signature"
    REVOKED = "revoked"


def _json_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Event bodies are CBOR maps; keep them as JSON (byte strings as hex)."""

    def convert(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return {str(k): convert(v) for k, v in body.items()}


class EventIntake:
    """Checks announcements and passes the first-seen ones to the fleet state."""

    def __init__(self, sink: EventSink, metrics: Metrics, clock: Clock) -> None:
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def drop(self, outcome: Outcome, topic: str, why: str) -> Outcome:
        """Count and log a message not taken; return ``outcome``."""
        self.counts[outcome] += 1
        self.metrics.event_dropped(outcome.value)
        log.info("dropped an announcement on %s: %s (%s)", topic, outcome.value, why)
        return outcome

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Check one message and pass it on; return what became of it."""
        try:
            where = topics.parse(topic)
            event, msg = Event.parse(payload)
        except ProtocolError as exc:
            return self.drop(Outcome.MALFORMED, topic, str(exc))
        if event.device != where.device:
            return self.drop(Outcome.WRONG_DEVICE, topic, f"payload is signed as {event.device!r}")
        telemetry = event.kind is EventKind.TELEMETRY
        status = event.kind is EventKind.STATUS
        if (where.channel is topics.Channel.TELEMETRY) != telemetry or (
            where.channel is topics.Channel.STATUS
        ) != status:
            return self.drop(Outcome.MALFORMED, topic, f"{event.kind.value} on the wrong topic")
        device = await models.Device.get_or_none(id=where.device)
        if device is None:
            return self.drop(Outcome.UNKNOWN_DEVICE, topic, "not enrolled")
        public_key = bytes(device.public_key)
        try:
            if msg.kid != key_id(public_key):
                raise ProtocolError("not signed by the device key")
            msg.verify(public_key)
        except ProtocolError as exc:
            await raise_alert(
                f"event_rejected:{where.device}",
                AlertKind.EVENT_REJECTED,
                Severity.WARNING,
                f"an announcement on {where.device}'s topic is not signed by its key ({exc})",
                self.clock(),
                where.device,
            )
            return self.drop(Outcome.BAD_SIGNATURE, topic, str(exc))
        if device.revoked is not None:
            await raise_alert(
                f"revoked_announcement:{where.device}",
                AlertKind.REVOKED_UPLOAD,
                Severity.CRITICAL,
                f"revoked {where.device} is still announcing ({event.kind.value})",
                self.clock(),
                where.device,
            )
            return self.drop(Outcome.REVOKED, topic, "device revoked")
        try:
            await models.Event.create(
                device=event.device,
                boot=event.boot,
                n=event.n,
                kind=event.kind.value,
                time=event.time,
                received=self.clock(),
                body=_json_body(event.body),
            )
        except IntegrityError:
            return self.drop(Outcome.DUPLICATE, topic, f"n={event.n} seen before")
        await self.sink.event(event)
        self.counts[Outcome.ACCEPTED] += 1
        self.metrics.event_received(event.device)
        return Outcome.ACCEPTED
