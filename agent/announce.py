"""Announcements over MQTT: signed status, events and telemetry, with an on-disk outbox.

Every announcement is a :class:`protocol.events.Event` signed with the device key and
written to ``outbox/`` before it is published, so nothing is lost while the broker is away
(paho keeps unsent messages in memory only). The publisher sends the outbox oldest first
with QoS 1 and removes a message once the broker has acknowledged it. The status topic is
retained, with a pre-signed "offline" status as the Last Will.

The MQTT version (5 where the broker has it, else 3.1.1), the persistent session and TLS
are :class:`mqttlink.BrokerLink`'s. MQTT 5 also lets telemetry expire from the queues of
absent subscribers after :data:`TELEMETRY_EXPIRY_S` (it is superseded by then). Nothing
essential depends on MQTT 5: events are also records of the signed chain.

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
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from agent.errors import AgentError
from hardware.base import Clock, Storage
from mqttlink import BrokerLink, MqttProtocol, mqtt5_properties
from mqttlink import tls_context as link_tls_context
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
#: Telemetry queued for an absent subscriber longer than this is superseded (MQTT 5 only).
TELEMETRY_EXPIRY_S = 3600


def _raise_if_cancelled() -> None:
    """Raise a cancellation that was lost: on Python 3.11, ``asyncio.wait_for`` (inside
    aiomqtt's publish) swallows a cancel that comes as the PUBACK does, and the task would
    wait for the next announcement instead of stopping."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
        self.link = BrokerLink(mqtt_url or "", f"unbroken-{device}", protocol, tls)
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

    @property
    def negotiated(self) -> str | None:
        """The MQTT version of the current (or last) connection; None before one."""
        return self.link.negotiated

    def _client(self) -> aiomqtt.Client:
        offline = self._event(EventKind.STATUS, {"state": "offline"}).sign(self.signer)
        return self.link.client(
            will=aiomqtt.Will(
                topics.topic(self.device, topics.Channel.STATUS), offline, qos=1, retain=True
            )
        )

    async def run(self) -> None:
        """Connect, publish the outbox, listen for commands; reconnect with jittered backoff."""
        if not self.mqtt_url:
            return
        delay = 1.0
        while True:
            try:
                await self.link.negotiate()
                async with self._client() as client:
                    self.connected = True
                    version = self.link.connected()
                    delay = 1.0
                    log.info("connected to the broker %s (MQTT %s)", self.mqtt_url, version)
                    self.announce(EventKind.STATUS, {"state": "online"})
                    await client.subscribe(
                        topics.topic(self.device, topics.Channel.COMMANDS), qos=1
                    )
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if self.link.fall_back(exc):
                    continue
                log.warning("broker unreachable or lost (%s); retrying in %.0f s", exc, delay)
            self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 60.0)

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
    """:func:`mqttlink.tls_context`, with unreadable or mismatched files an
    :class:`AgentError`."""
    try:
        return link_tls_context(ca_file, cert_file, key_file)
    except OSError as exc:
        raise AgentError(str(exc)) from exc
