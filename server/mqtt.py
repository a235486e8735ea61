"""The MQTT consumer: signed status, events and telemetry from the fleet, through the broker.

The consumer subscribes to every device's status, events and telemetry through shared
subscriptions (``$share/{group}/...``, which Mosquitto and EMQX accept from MQTT 3.1.1 and 5
clients alike), so that several server replicas split the messages between them. Each
message goes to :class:`server.intake.EventIntake`, which checks it (signature, device,
duplicates) as it checks announcements sent over HTTP. The MQTT version, the persistent
session (a stable client id per replica) and TLS are :class:`mqttlink.BrokerLink`'s.

Announcements published while the server was down reach it when it reconnects. One
limit, measured with Mosquitto 2.0.11: a broker restart does not restore *shared*
subscriptions from its persistence file (plain ones it does), so what devices publish
between the broker's return and this consumer's re-subscription is not kept for it. A
single replica can pass ``shared=False`` (a plain persistent subscription) to close that
window; with several replicas, each would then receive every message (the duplicate check
keeps the effect single, at N times the work). Events are also records of the signed chain,
so no evidence and no chain-derived alert is lost either way; telemetry is superseded.
Reconnects back off, capped, with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl

import aiomqtt

from mqttlink import BrokerLink, MqttProtocol
from mqttlink import tls_context as link_tls_context
from protocol import topics
from server.errors import ConfigError
from server.intake import Clock, EventIntake, EventSink, Outcome
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)

#: Messages aiomqtt queues between the network and :meth:`EventConsumer.handle`. When full,
#: aiomqtt drops the newest message and logs it; nothing evidential is lost that way:
#: events are also records of the signed chain, and telemetry is superseded by the next.
QUEUE_MESSAGES = 10_000
CHANNELS = (topics.Channel.STATUS, topics.Channel.EVENTS, topics.Channel.TELEMETRY)
MAX_BACKOFF = 60.0


class EventConsumer:
    """Receives the fleet's announcements from the broker and hands them to the intake."""

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
        self.group = group
        self.client_id = client_id or f"{group}-{socket.gethostname()}"[:64]
        self.shared = shared
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.intake = EventIntake(sink, metrics, clock)
        self.link = BrokerLink(url, self.client_id, protocol, tls)
        self.connected = asyncio.Event()

    @property
    def negotiated(self) -> str | None:
        """The MQTT version of the current (or last) connection; None before one."""
        return self.link.negotiated

    @property
    def counts(self) -> dict[Outcome, int]:
        """What became of the messages so far, by outcome."""
        return self.intake.counts

    @property
    def version_known(self) -> bool:
        """Whether the MQTT version is settled (pinned, or learnt from the broker)."""
        return self.link.version_known

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Check one message and pass it on; return what became of it."""
        return await self.intake.handle(topic, payload)

    async def run(self) -> None:
        """Connect, subscribe, handle messages; reconnect with capped, jittered backoff.

        The caller activates the database for this task.
        """
        delay = 1.0
        while True:
            try:
                await self.link.negotiate()
                async with self.link.client(max_queued_incoming_messages=QUEUE_MESSAGES) as client:
                    group = self.group if self.shared else None
                    for channel in CHANNELS:
                        await client.subscribe(
                            topics.subscription(channel, shared_group=group), qos=1
                        )
                    version = self.link.connected()
                    self.connected.set()
                    delay = 1.0
                    log.info(
                        "MQTT consumer %s subscribed at %s (MQTT %s)",
                        self.client_id,
                        self.url,
                        version,
                    )
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            self.intake.drop(Outcome.MALFORMED, str(message.topic), "not bytes")
                            continue
                        await self.handle(str(message.topic), bytes(payload))
            except aiomqtt.MqttError as exc:
                if self.link.fall_back(exc):
                    continue
                log.warning("MQTT broker lost or unreachable (%s); retrying in %.0f s", exc, delay)
            self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter only
            delay = min(delay * 2, MAX_BACKOFF)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` broker with this replica's client certificate, or
    None for the defaults. Raises :class:`ConfigError` for unreadable or mismatched files."""
    if not (settings.mqtt_url or "").startswith("mqtts:"):
        return None
    try:
        return link_tls_context(
            settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file
        )
    except OSError as exc:
        raise ConfigError(str(exc)) from exc
