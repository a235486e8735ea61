"""Announcements over MQTT: signed status, events and telemetry, with an on-disk outbox.

Every announcement is a :class:`protocol.events.Event` signed with the device key and
written to ``outbox/`` before it is published, so nothing is lost while the broker is away
(paho keeps unsent messages in memory only). The publisher sends the outbox oldest first
with QoS 1 and removes a message once the broker has acknowledged it. The status topic is
retained, with a pre-signed "offline" status as the Last Will.

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
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

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
    ) -> None:
        self.device = device
        self.boot = boot
        self.signer = signer
        self.storage = storage
        self.clock = clock
        self.mqtt_url = mqtt_url
        self.on_command = on_command
        self._n = 0
        self._wake = asyncio.Event()
        self.connected = False
        self.published = 0
        if mqtt_url:
            storage.makedirs(OUTBOX)

    def _event(self, kind: EventKind, body: dict[str, Any]) -> Event:
        event = Event(self.device, self.boot, self._n, kind, self.clock.wall(), body)
        self._n += 1
        return event

    def announce(self, kind: EventKind, body: dict[str, Any] | None = None) -> Event:
        """Sign an announcement and put it in the outbox (durably) for publishing."""
        event = self._event(kind, body or {})
        if not self.mqtt_url:
            log.info("announce %s %s", kind.value, body or "")
            return event
        name = f"{OUTBOX}/{self.boot.hex()[:8]}-{event.n:012d}-{kind.value}.cose"
        self.storage.write_new(name, event.sign(self.signer))
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

    def _client(self) -> aiomqtt.Client:
        assert self.mqtt_url is not None
        url = urlsplit(self.mqtt_url)
        tls = ssl.create_default_context() if url.scheme == "mqtts" else None
        offline = self._event(EventKind.STATUS, {"state": "offline"}).sign(self.signer)
        return aiomqtt.Client(
            url.hostname or "127.0.0.1",
            url.port or (8883 if tls else 1883),
            identifier=f"unbroken-{self.device}",
            clean_session=False,
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
                async with self._client() as client:
                    self.connected = True
                    delay = 1.0
                    log.info("connected to the broker %s", self.mqtt_url)
                    self.announce(EventKind.STATUS, {"state": "online"})
                    await client.subscribe(
                        topics.topic(self.device, topics.Channel.COMMANDS), qos=1
                    )
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
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
                async with asyncio.timeout(30):
                    await client.publish(
                        topics.topic(self.device, channel),
                        self.storage.read(path),
                        qos=1,
                        retain=channel is topics.Channel.STATUS,
                    )
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
            if self.on_command is not None:
                await self.on_command(command)
