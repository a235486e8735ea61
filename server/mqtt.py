"""The MQTT consumer: signed status, events and telemetry from the fleet.

The consumer subscribes to every device's status, events and telemetry through shared
subscriptions (``$share/{group}/...``, which Mosquitto and EMQX accept from MQTT 3.1.1 and 5
clients alike), so that several server replicas split the messages between them. Each payload is a
:class:`protocol.events.Event` signed by the device key; it is accepted only if the
device in the payload is the device in the topic and the signature verifies against
that device's enrolled key. Duplicates and replays are dropped by ``(device, boot, n)``,
which the ``event`` table holds unique. Accepted events go to an :class:`EventSink`
(the fleet state, :class:`server.fleet.Fleet`).

Protocol (ARCHITECTURE §6): ``"3.1.1"`` and ``"5"`` pin the MQTT version. ``"auto"`` (the
default) asks the broker once whether it speaks MQTT 5, with a bare MQTT 5 CONNECT under a
throwaway client id (``<id>-probe``: clean start, no properties, no credentials, so that
even a 3.1.1 broker that reads packets field by field, like amqtt, can parse and refuse
it). A refusal for the protocol version means MQTT 3.1.1, any other answer MQTT 5; the
choice holds for later reconnects, and a real MQTT 5 CONNECT refused for its version also
moves the consumer to 3.1.1. Nothing here depends on MQTT 5.

The session is persistent (a stable client id per replica; clean session off in 3.1.1,
clean start off with a session expiry of :data:`SESSION_EXPIRY_S` in 5), so announcements
published while the server was down reach it when it reconnects. One
limit, measured with Mosquitto 2.0.11: a broker restart does not restore *shared*
subscriptions from its persistence file (plain ones it does), so what devices publish
between the broker's return and this consumer's re-subscription is not kept for it. A
single replica can pass ``shared=False`` (a plain persistent subscription) to close that
window; with several replicas, each would then receive every message (the duplicate check
keeps the effect single, at N times the work). Events are also records of the signed chain,
so no evidence and no chain-derived alert is lost either way; telemetry is superseded.
Reconnects back off, capped, with jitter. This is the only module that imports aiomqtt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocol import topics
from protocol.errors import ProtocolError
from protocol.events import Event, EventKind
from protocol.keys import key_id
from server import models
from server.alerts import AlertKind, Severity, raise_alert
from server.db import IntegrityError
from server.errors import ConfigError
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)

#: Messages aiomqtt queues between the network and :meth:`EventConsumer.handle`. When full,
#: aiomqtt drops the newest message and logs it; nothing evidential is lost that way:
#: events are also records of the signed chain, and telemetry is superseded by the next.
QUEUE_MESSAGES = 10_000
CHANNELS = (topics.Channel.STATUS, topics.Channel.EVENTS, topics.Channel.TELEMETRY)
MAX_BACKOFF = 60.0
MqttProtocol = Literal["auto", "3.1.1", "5"]
#: How long an MQTT 5 broker keeps this replica's session (subscriptions and the messages
#: queued for it) while the server is away.
SESSION_EXPIRY_S = 7 * 24 * 3600
#: CONNACK codes of a broker refusing the protocol version: 3.1.1's 0x01, MQTT 5's 0x84.
UNSUPPORTED_VERSION = frozenset({1, 0x84})
VERSION_NAME = {aiomqtt.ProtocolVersion.V311: "3.1.1", aiomqtt.ProtocolVersion.V5: "5"}


def refused_version(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker refusing the CONNECT for its protocol version."""
    if not isinstance(exc, MqttConnectError):
        return False
    code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
    return code in UNSUPPORTED_VERSION


def session_options(version: aiomqtt.ProtocolVersion) -> dict[str, Any]:
    """Client options for a persistent session in ``version``: clean session off (3.1.1), or
    clean start off with a session expiry (MQTT 5; paho refuses either option in the other)."""
    if version is aiomqtt.ProtocolVersion.V311:
        return {"protocol": version, "clean_session": False}
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # untyped
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"protocol": version, "clean_start": False, "properties": properties}


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


class EventConsumer:
    """Receives and checks the fleet's announcements."""

    def __init__(
        self,
        url: str,
        group: str,
        sink: EventSink,
        metrics: Metrics,
        clock: Clock,
        *,
        client_id: str | None = None,
        shared: bool = True,
        protocol: MqttProtocol = "auto",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.tls = tls
        self.group = group
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.client_id = client_id or f"{group}-{socket.gethostname()}"[:64]
        self.shared = shared
        self.protocol = protocol
        #: The version the next CONNECT offers: MQTT 5 unless pinned to 3.1.1 or refused.
        self.version = (
            aiomqtt.ProtocolVersion.V311 if protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        )
        #: Whether :attr:`version` is settled (pinned, or learnt from the broker).
        self.version_known = protocol != "auto"
        #: The version of the current (or last) connection, "3.1.1" or "5"; None before one.
        self.negotiated: str | None = None
        self.connected = asyncio.Event()
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def _where(self) -> tuple[str, int, ssl.SSLContext | None]:
        url = urlsplit(self.url)
        tls = (self.tls or ssl.create_default_context()) if url.scheme == "mqtts" else None
        return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), tls

    async def _negotiate(self) -> None:
        """In "auto", learn once whether the broker speaks MQTT 5 (see the module docstring)."""
        if self.version_known:
            return
        host, port, tls = self._where()
        try:
            async with aiomqtt.Client(
                host,
                port,
                identifier=f"{self.client_id}-probe",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=True,
                keepalive=30,
                timeout=10,
                tls_context=tls,
            ):
                pass
        except aiomqtt.MqttError as exc:
            if refused_version(exc):
                log.info("the MQTT broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.url, exc)
                self.version = aiomqtt.ProtocolVersion.V311
            elif not isinstance(exc, MqttConnectError):
                return  # no answer: ask again before the next connection
        self.version_known = True

    def _client(self) -> aiomqtt.Client:
        url = urlsplit(self.url)
        host, port, tls = self._where()
        return aiomqtt.Client(
            host,
            port,
            identifier=self.client_id,
            **session_options(self.version),
            keepalive=30,
            timeout=10,
            tls_context=tls,
            username=url.username,
            password=url.password,
            max_queued_incoming_messages=QUEUE_MESSAGES,
        )

    async def run(self) -> None:
        """Connect, subscribe, handle messages; reconnect with capped, jittered backoff.

        The caller activates the database for this task.
        """
        delay = 1.0
        while True:
            try:
                await self._negotiate()
                async with self._client() as client:
                    group = self.group if self.shared else None
                    for channel in CHANNELS:
                        await client.subscribe(
                            topics.subscription(channel, shared_group=group), qos=1
                        )
                    self.negotiated = VERSION_NAME[self.version]
                    self.connected.set()
                    delay = 1.0
                    log.info(
                        "MQTT consumer %s subscribed at %s (MQTT %s)",
                        self.client_id,
                        self.url,
                        self.negotiated,
                    )
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            self._drop(Outcome.MALFORMED, str(message.topic), "not bytes")
                            continue
                        await self.handle(str(message.topic), bytes(payload))
            except aiomqtt.MqttError as exc:
                if self._fall_back(exc):
                    continue
                log.warning("MQTT broker lost or unreachable (%s); retrying in %.0f s", exc, delay)
            self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter only
            delay = min(delay * 2, MAX_BACKOFF)

    def _fall_back(self, exc: aiomqtt.MqttError) -> bool:
        """In "auto", move to MQTT 3.1.1 for good when the broker refuses MQTT 5."""
        if (
            self.protocol != "auto"
            or self.version is not aiomqtt.ProtocolVersion.V5
            or not refused_version(exc)
        ):
            return False
        log.info("the MQTT broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.url, exc)
        self.version = aiomqtt.ProtocolVersion.V311
        return True

    def _drop(self, outcome: Outcome, topic: str, why: str) -> Outcome:
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
            return self._drop(Outcome.MALFORMED, topic, str(exc))
        if event.device != where.device:
            return self._drop(Outcome.WRONG_DEVICE, topic, f"payload is signed as {event.device!r}")
        telemetry = event.kind is EventKind.TELEMETRY
        status = event.kind is EventKind.STATUS
        if (where.channel is topics.Channel.TELEMETRY) != telemetry or (
            where.channel is topics.Channel.STATUS
        ) != status:
            return self._drop(Outcome.MALFORMED, topic, f"{event.kind.value} on the wrong topic")
        device = await models.Device.get_or_none(id=where.device)
        if device is None:
            return self._drop(Outcome.UNKNOWN_DEVICE, topic, "not enrolled")
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
            return self._drop(Outcome.BAD_SIGNATURE, topic, str(exc))
        if device.revoked is not None:
            await raise_alert(
                f"revoked_announcement:{where.device}",
                AlertKind.REVOKED_UPLOAD,
                Severity.CRITICAL,
                f"revoked {where.device} is still announcing ({event.kind.value})",
                self.clock(),
                where.device,
            )
            return self._drop(Outcome.REVOKED, topic, "device revoked")
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
            return self._drop(Outcome.DUPLICATE, topic, f"n={event.n} seen before")
        await self.sink.event(event)
        self.counts[Outcome.ACCEPTED] += 1
        self.metrics.event_received(event.device)
        return Outcome.ACCEPTED


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` broker with this replica's client certificate, or
    None for the defaults. Raises :class:`ConfigError` for unreadable or mismatched files."""
    plain = not (settings.mqtt_url or "").startswith("mqtts:")
    if plain or (settings.mqtt_ca_file is None and settings.mqtt_cert_file is None):
        return None
    ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
    try:
        context = ssl.create_default_context(cafile=ca)
        if settings.mqtt_cert_file is not None:
            key = str(settings.mqtt_key_file) if settings.mqtt_key_file else None
            context.load_cert_chain(str(settings.mqtt_cert_file), key)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"MQTT TLS files ({settings.mqtt_ca_file}, {settings.mqtt_cert_file}, "
            f"{settings.mqtt_key_file}): {exc}"
        ) from exc
    return context
