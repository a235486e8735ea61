"""Announcements over MQTT: signed status, events and telemetry, with an on-disk outbox.

Every announcement is a :class:`protocol.events.Event` signed with the device key and
written to ``outbox/`` before it is published, so nothing is lost while the broker is away
(paho keeps unsent messages in memory only). The publisher sends the outbox oldest first
with QoS 1 and removes a message once the broker has acknowledged it. The status topic is
retained, with a pre-signed "offline" status as the Last Will.

Protocol (ARCHITECTURE §6): ``"3.1.1"`` and ``"5"`` pin the MQTT version. ``"auto"`` (the
default) asks the broker once whether it speaks MQTT 5, with a bare MQTT 5 CONNECT under a
throwaway client id (``<id>-probe``: clean start, no will, no properties, no credentials,
so that even a 3.1.1 broker that reads packets field by field, like amqtt, can parse and
refuse it; the real CONNECT's properties and will make amqtt wait for bytes that never
come). A refusal for the protocol version means MQTT 3.1.1; any other answer means MQTT 5.
The choice holds for the announcer's later reconnects; a real MQTT 5 CONNECT refused for
its version (the broker was swapped) also moves it to 3.1.1. Both keep a persistent
session: 3.1.1 with clean session off, 5 with clean start off and a session expiry of
:data:`SESSION_EXPIRY_S`. MQTT 5 also lets telemetry expire from the queues of absent
subscribers after :data:`TELEMETRY_EXPIRY_S` (it is superseded by then). Nothing essential
depends on MQTT 5: events are also records of the signed chain.

Outbox bound: :data:`OUTBOX_LIMIT` messages. When full, the oldest telemetry is dropped
first (health readings are superseded by newer ones); events are never dropped — they are
also records in the signed chain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import AgentError
from hardware.base import Clock, Storage
from protocol import topics
from protocol.events import Event, EventKind
from protocol.keys import Signer

log = logging.getLogger(__name__)

OUTBOX = "outbox"
OUTBOX_LIMIT = 10_000
CHANNEL_OF = {
    EventKind.STATUS: topics.Channel.STATUS,
    EventKind.TELEMETRY: topics.Channel.TELEMETRY,
}
CommandHandler = Callable[[dict[str, Any]], Awaitable[None]]
MqttProtocol = Literal["auto", "3.1.1", "5"]
#: How long an MQTT 5 broker keeps the device's session (its subscription to commands and
#: the commands queued for it) while the device is away.
SESSION_EXPIRY_S = 7 * 24 * 3600
#: Telemetry queued for an absent subscriber longer than this is superseded (MQTT 5 only).
TELEMETRY_EXPIRY_S = 3600
#: CONNACK codes of a broker refusing the protocol version: 3.1.1's 0x01, MQTT 5's 0x84.
UNSUPPORTED_VERSION = frozenset({1, 0x84})
VERSION_NAME = {aiomqtt.ProtocolVersion.V311: "3.1.1", aiomqtt.ProtocolVersion.V5: "5"}


def _raise_if_cancelled() -> None:
    """Raise a cancellation that was lost: on Python 3.11, ``asyncio.wait_for`` (inside
    aiomqtt's publish) swallows a cancel that comes as the PUBACK does, and the task would
    wait for the next announcement instead of stopping."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def session_options(version: aiomqtt.ProtocolVersion) -> dict[str, Any]:
    """Client options for a persistent session in ``version``: clean session off (3.1.1), or
    clean start off with a session expiry (MQTT 5; paho refuses either option in the other)."""
    if version is aiomqtt.ProtocolVersion.V311:
        return {"protocol": version, "clean_session": False}
    properties = mqtt5_properties(PacketTypes.CONNECT, SessionExpiryInterval=SESSION_EXPIRY_S)
    return {"protocol": version, "clean_start": False, "properties": properties}


def mqtt5_properties(packet: int, **values: int) -> Properties:
    """MQTT 5 properties of one packet type, e.g. ``MessageExpiryInterval=3600``."""
    properties = Properties(packet)  # type: ignore[no-untyped-call]  # paho is untyped here
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def refused_version(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker refusing the CONNECT for its protocol version."""
    if not isinstance(exc, MqttConnectError):
        return False
    code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
    return code in UNSUPPORTED_VERSION


class Announcer:
    """Signs announcements, keeps them in the outbox and publishes them when it can."""

    def __init__(
        self,
        device: str,
        boot: bytes,
        signer: Signer,
        storage: Storage,
        clock: Clock,
        mqtt_url: str | None,
        on_command: CommandHandler | None = None,
        *,
        protocol: MqttProtocol = "auto",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.device = device
        self.tls = tls
        self.boot = boot
        self.signer = signer
        self.storage = storage
        self.clock = clock
        self.mqtt_url = mqtt_url
        self.on_command = on_command
        self._n = 0
        #: The newest signed telemetry (see :meth:`announce`).
        self.last_telemetry: bytes | None = None
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.protocol = protocol
        #: The version the next CONNECT offers: MQTT 5 unless pinned to 3.1.1 or refused.
        self.version = (
            aiomqtt.ProtocolVersion.V311 if protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        )
        #: Whether :attr:`version` is settled (pinned, or learnt from the broker).
        self.version_known = protocol != "auto"
        #: The version of the current (or last) connection, "3.1.1" or "5"; None before one.
        self.negotiated: str | None = None
        if mqtt_url:
            storage.makedirs(OUTBOX)

    def _event(self, kind: EventKind, body: dict[str, Any]) -> Event:
        event = Event(self.device, self.boot, self._n, kind, self.clock.wall(), body)
        self._n += 1
        return event

    def announce(self, kind: EventKind, body: dict[str, Any] | None = None) -> Event:
        """Sign an announcement and put it in the outbox (durably) for publishing."""
        event = self._event(kind, body or {})
        signed = event.sign(self.signer)
        if kind is EventKind.TELEMETRY:
            # The newest health reading also goes to the server with the next sync, so that
            # the fleet's health is known where no broker is (the server drops duplicates).
            self.last_telemetry = signed
        if not self.mqtt_url:
            log.info("announce %s %s", kind.value, body or "")
            return event
        name = f"{OUTBOX}/{self.boot.hex()[:8]}-{event.n:012d}-{kind.value}.cose"
        self.storage.write_new(name, signed)
        self.storage.sync_dir(OUTBOX)
        self._bound_outbox()
        self._wake.set()
        return event

    def _bound_outbox(self) -> None:
        names = self.storage.listdir(OUTBOX)
        excess = len(names) - OUTBOX_LIMIT
        for name in names:
            if excess <= 0:
                break
            if name.endswith("-telemetry.cose"):
                self.storage.release(f"{OUTBOX}/{name}")
                excess -= 1

    def pending(self) -> int:
        """Messages waiting in the outbox."""
        return len(self.storage.listdir(OUTBOX)) if self.mqtt_url else 0

    def _where(self) -> tuple[str, int, ssl.SSLContext | None]:
        assert self.mqtt_url is not None
        url = urlsplit(self.mqtt_url)
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
                identifier=f"unbroken-{self.device}-probe",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=True,
                keepalive=30,
                timeout=10,
                tls_context=tls,
            ):
                pass
        except aiomqtt.MqttError as exc:
            if refused_version(exc):
                log.info("the broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.mqtt_url, exc)
                self.version = aiomqtt.ProtocolVersion.V311
            elif not isinstance(exc, MqttConnectError):
                return  # no answer: ask again before the next connection
        self.version_known = True

    def _client(self) -> aiomqtt.Client:
        assert self.mqtt_url is not None
        url = urlsplit(self.mqtt_url)
        host, port, tls = self._where()
        offline = self._event(EventKind.STATUS, {"state": "offline"}).sign(self.signer)
        return aiomqtt.Client(
            host,
            port,
            identifier=f"unbroken-{self.device}",
            **session_options(self.version),
            keepalive=30,
            timeout=10,
            tls_context=tls,
            username=url.username,
            password=url.password,
            will=aiomqtt.Will(
                topics.topic(self.device, topics.Channel.STATUS), offline, qos=1, retain=True
            ),
        )

    async def run(self) -> None:
        """Connect, publish the outbox, listen for commands; reconnect with jittered backoff."""
        if not self.mqtt_url:
            return
        delay = 1.0
        while True:
            try:
                await self._negotiate()
                async with self._client() as client:
                    self.connected = True
                    self.negotiated = VERSION_NAME[self.version]
                    delay = 1.0
                    log.info("connected to the broker %s (MQTT %s)", self.mqtt_url, self.negotiated)
                    self.announce(EventKind.STATUS, {"state": "online"})
                    await client.subscribe(
                        topics.topic(self.device, topics.Channel.COMMANDS), qos=1
                    )
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if self._fall_back(exc):
                    continue
                log.warning("broker unreachable or lost (%s); retrying in %.0f s", exc, delay)
            self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 60.0)

    def _fall_back(self, exc: aiomqtt.MqttError) -> bool:
        """In "auto", move to MQTT 3.1.1 for good when the broker refuses MQTT 5."""
        if (
            self.protocol != "auto"
            or self.version is not aiomqtt.ProtocolVersion.V5
            or not refused_version(exc)
        ):
            return False
        log.info("the broker %s refused MQTT 5 (%s); using MQTT 3.1.1", self.mqtt_url, exc)
        self.version = aiomqtt.ProtocolVersion.V311
        return True

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish and listen until the connection fails (raised as one MqttError)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish(client), name="mqtt-publish")
                group.create_task(self._commands(client), name="mqtt-commands")
        except* aiomqtt.MqttError as group_exc:
            failure = group_exc.exceptions[0]
        else:
            return
        raise aiomqtt.MqttError(str(failure))

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            names = self.storage.listdir(OUTBOX)
            if not names:
                self._wake.clear()
                await self._wake.wait()
                continue
            for name in names:
                path = f"{OUTBOX}/{name}"
                kind = EventKind(name.rsplit("-", 1)[1].removesuffix(".cose"))
                channel = CHANNEL_OF.get(kind, topics.Channel.EVENTS)
                properties = None
                if kind is EventKind.TELEMETRY and self.negotiated == "5":
                    properties = mqtt5_properties(
                        PacketTypes.PUBLISH, MessageExpiryInterval=TELEMETRY_EXPIRY_S
                    )
                async with asyncio.timeout(30):
                    await client.publish(
                        topics.topic(self.device, channel),
                        self.storage.read(path),
                        qos=1,
                        retain=channel is topics.Channel.STATUS,
                        properties=properties,
                    )
                _raise_if_cancelled()
                self.storage.release(path)
                self.published += 1

    async def _commands(self, client: aiomqtt.Client) -> None:
        mine = topics.topic(self.device, topics.Channel.COMMANDS)
        async for message in client.messages:
            if str(message.topic) != mine:
                continue  # some brokers echo other topics of the session; not commands
            payload = message.payload
            try:
                raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                command = json.loads(raw)
                if not isinstance(command, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.warning("ignored a malformed command on %s", message.topic)
                continue
            if self.on_command is None:
                continue
            try:
                await self.on_command(command)
            except Exception:  # a bad command must not take the device off the broker
                log.exception("command %r failed", command.get("command"))


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` connection with a client certificate, or None for
    the defaults (the system's CAs, no client certificate). Raises :class:`AgentError` for
    unreadable or mismatched files."""
    if ca_file is None and cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise AgentError(f"MQTT TLS files ({ca_file}, {cert_file}, {key_file}): {exc}") from exc
    return context
