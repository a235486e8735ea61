"""Announcements reach a real broker signed, and survive the broker being away; the MQTT
version is negotiated (MQTT 5 where the broker has it, else 3.1.1, ARCHITECTURE §6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.announce import TELEMETRY_EXPIRY_S, Announcer
from hardware.base import Clock, ClockSource, ClockStatus
from hardware.disk import DirectoryStorage
from mqttlink import SESSION_EXPIRY_S, MqttProtocol
from protocol import topics
from protocol.events import Event, EventKind
from protocol.keys import SoftwareSigner
from tests.broker import Broker, embedded_broker

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not Broker.available(), reason="mosquitto not installed"),
]
DEV = "cam-042"


class HostClock(Clock):
    """The host's clocks, for tests that run in real time."""

    def wall(self) -> int:
        return time.time_ns() // 1000

    def mono(self) -> int:
        return time.monotonic_ns() // 1000

    def status(self) -> ClockStatus:
        return ClockStatus(ClockSource.NTP, 0, True)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def collect(broker: Broker, want: int, into: list[Event], ready: asyncio.Event) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="test-watcher", clean_session=False
    ) as client:
        await client.subscribe(topics.subscription(topics.Channel.EVENTS), qos=1)
        await client.subscribe(topics.subscription(topics.Channel.STATUS), qos=1)
        ready.set()
        async for message in client.messages:
            event, _ = Event.parse(bytes(message.payload))  # type: ignore[arg-type]
            into.append(event)
            if sum(1 for e in into if e.kind is not EventKind.STATUS) >= want:
                return


async def test_outbox_delivers_what_was_announced_while_the_broker_was_down(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    signer = SoftwareSigner.generate()
    announcer = Announcer(
        DEV, os.urandom(16), signer, DirectoryStorage(tmp_path / "store"), HostClock(), broker.url
    )
    for i in range(5):
        announcer.announce(EventKind.DELETION_REFUSED, {"target": f"seq:{i}"})
    assert announcer.pending() == 5  # durable, waiting
    broker.start()
    try:
        got: list[Event] = []
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(collect(broker, 5, got, ready), name="watcher")
            await ready.wait()
            runner = group.create_task(announcer.run(), name="announcer")
            async with asyncio.timeout(30):
                await watcher
            runner.cancel()
        refused = [e for e in got if e.kind is EventKind.DELETION_REFUSED]
        assert [e.body["target"] for e in refused] == [f"seq:{i}" for i in range(5)]
        assert announcer.pending() == 0
    finally:
        broker.stop()


async def test_events_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    signer = SoftwareSigner.generate()
    storage = DirectoryStorage(tmp_path / "store")
    announcer = Announcer(DEV, os.urandom(16), signer, storage, HostClock(), broker.url)
    got: list[Event] = []
    try:
        runner = asyncio.create_task(announcer.run(), name="announcer")
        ready = asyncio.Event()
        watcher = asyncio.create_task(collect(broker, 6, got, ready), name="watcher")
        await ready.wait()
        for i in range(3):
            announcer.announce(EventKind.INCIDENT_OPENED, {"n": i})
        async with asyncio.timeout(20):
            while announcer.pending():
                await asyncio.sleep(0.05)
        broker.stop()  # the broker goes away with the watcher's session persisted
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(watcher, 5)
        for i in range(3, 6):
            announcer.announce(EventKind.INCIDENT_OPENED, {"n": i})
        assert announcer.pending() >= 3
        broker.start()
        ready = asyncio.Event()
        watcher = asyncio.create_task(collect(broker, 6, got, ready), name="watcher")
        async with asyncio.timeout(60):
            while len({e.body["n"] for e in got if e.kind is EventKind.INCIDENT_OPENED}) < 6:
                await asyncio.sleep(0.05)
        watcher.cancel()
        runner.cancel()
        for task in (runner, watcher):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        numbers = sorted({e.body["n"] for e in got if e.kind is EventKind.INCIDENT_OPENED})
        assert numbers == list(range(6))
        for event in got:
            assert event.device == DEV
    finally:
        broker.stop()


async def test_signatures_verify_with_the_device_key(tmp_path: Path) -> None:
    signer = SoftwareSigner.generate()
    announcer = Announcer(
        DEV, os.urandom(16), signer, DirectoryStorage(tmp_path), HostClock(), "mqtt://127.0.0.1:1"
    )
    announcer.announce(EventKind.TELEMETRY, {"battery_permille": 800})
    (name,) = os.listdir(tmp_path / "outbox")
    event, msg = Event.parse((tmp_path / "outbox" / name).read_bytes())
    msg.verify(signer.public_key)
    assert event.body == {"battery_permille": 800}
    assert msg.kid == signer.kid


# ---------------------------------------------------------------- MQTT version negotiation


@dataclass(frozen=True)
class Connect:
    """What one CONNECT packet asked for."""

    level: int  # 4: MQTT 3.1.1, 5: MQTT 5
    clean: bool  # clean session (3.1.1) or clean start (5)
    session_expiry: int | None  # MQTT 5 Session Expiry Interval property


class ConnectProbe:
    """A stand-in broker that records every CONNECT, answers it and soon hangs up.

    With ``refuse_v5`` it answers an MQTT 5 CONNECT as a 3.1.1-only broker does (amqtt among
    them): a 3.1.1 CONNACK with return code 1, "unacceptable protocol version", then it
    hangs up. Any other CONNECT is accepted; SUBSCRIBEs get their SUBACK, and once the
    client is quiet for a moment the connection is dropped, so that the client reconnects.
    """

    def __init__(self, *, refuse_v5: bool) -> None:
        self.refuse_v5 = refuse_v5
        self.connects: list[Connect] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ConnectProbe:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def wait(self, count: int) -> list[Connect]:
        """The first ``count`` CONNECTs, once they have come (20 s at most)."""
        async with asyncio.timeout(20):
            while len(self.connects) < count:
                await asyncio.sleep(0.02)
        return self.connects[:count]

    @staticmethod
    async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        (first,) = await reader.readexactly(1)
        length, shift = 0, 0
        while True:
            (byte,) = await reader.readexactly(1)
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        return first >> 4, await reader.readexactly(length)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, body = await self._packet(reader)
            assert kind == 1, "not a CONNECT"
            assert body[:6] == b"\x00\x04MQTT"
            level, flags = body[6], body[7]
            expiry = None
            if level == 5:
                size, props = body[10], body[11 : 11 + body[10]]
                assert size < 0x80
                while props:
                    assert props[0] == 0x11, f"unexpected CONNECT property {props[0]:#x}"
                    expiry = int.from_bytes(props[1:5], "big")
                    props = props[5:]
            self.connects.append(Connect(level, bool(flags & 0x02), expiry))
            if level == 5 and self.refuse_v5:
                writer.write(b"\x20\x02\x00\x01")
                return
            writer.write(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
            while True:  # until the client is quiet for a moment
                async with asyncio.timeout(0.3):
                    kind, body = await self._packet(reader)
                if kind == 8:  # SUBSCRIBE: SUBACK granting QoS 1
                    suback = body[:2] + (b"\x00\x01" if level == 5 else b"\x01")
                    writer.write(bytes([0x90, len(suback)]) + suback)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


def announcer_for(tmp_path: Path, url: str, protocol: MqttProtocol, **kw: Any) -> Announcer:
    device = kw.pop("device", DEV)
    return Announcer(
        device,
        os.urandom(16),
        SoftwareSigner.generate(),
        DirectoryStorage(tmp_path / "store"),
        HostClock(),
        url,
        protocol=protocol,
        **kw,
    )


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


PROBE = Connect(5, True, None)  # MQTT 5, clean start, no session expiry: leaves nothing
V5 = Connect(5, False, SESSION_EXPIRY_S)  # MQTT 5, persistent session with an expiry
V311 = Connect(4, False, None)  # MQTT 3.1.1, clean session off


@pytest.mark.parametrize(
    ("protocol", "refuse_v5", "expected"),
    [
        # asked once; the reconnect (the probe broker hangs up) does not ask again
        ("auto", False, [PROBE, V5, V5]),
        ("auto", True, [PROBE, V311, V311]),
        ("3.1.1", False, [V311, V311]),
        ("5", True, [V5, V5]),  # pinned: no fallback, it keeps asking for MQTT 5
    ],
)
async def test_connect_offers_mqtt5_and_falls_back_once(
    tmp_path: Path, protocol: MqttProtocol, refuse_v5: bool, expected: list[Connect]
) -> None:
    async with ConnectProbe(refuse_v5=refuse_v5) as probe:
        announcer = announcer_for(tmp_path, probe.url, protocol)
        runner = asyncio.create_task(announcer.run(), name="announcer")
        try:
            assert await probe.wait(len(expected)) == expected
        finally:
            await stop(runner)
    if protocol == "5":
        assert announcer.negotiated is None  # never connected
    else:
        assert announcer.negotiated == ("5" if expected[-1].level == 5 else "3.1.1")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def forget_session(port: int, client_id: str) -> None:
    """End a persistent session left on a shared broker (a clean 3.1.1 connect does)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=True):
        pass


async def test_mosquitto_speaks_mqtt5_and_telemetry_expires(tmp_path: Path) -> None:
    """Against the Mosquitto on 127.0.0.1:1883, "auto" connects with MQTT 5, and telemetry
    (superseded soon) carries a message expiry while events do not."""
    if not _answers(1883):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    device = f"cam-{uuid.uuid4().hex[:10]}"
    announcer = announcer_for(tmp_path, "mqtt://127.0.0.1:1883", "auto", device=device)
    received: list[aiomqtt.Message] = []
    async with aiomqtt.Client(
        "127.0.0.1",
        1883,
        identifier=f"watch-{device}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as watcher:
        await watcher.subscribe(topics.topic(device, topics.Channel.EVENTS), qos=1)
        await watcher.subscribe(topics.topic(device, topics.Channel.TELEMETRY), qos=1)
        runner = asyncio.create_task(announcer.run(), name="announcer")
        try:
            announcer.announce(EventKind.TELEMETRY, {"battery_permille": 700})
            announcer.announce(EventKind.DELETION_REFUSED, {"interface": "mqtt", "target": "x"})
            async with asyncio.timeout(15):
                async for message in watcher.messages:
                    received.append(message)
                    if len(received) == 2:
                        break
        finally:
            await stop(runner)
            await forget_session(1883, f"unbroken-{device}")
    assert announcer.negotiated == "5"
    by_kind = {Event.parse(bytes(m.payload))[0].kind: m for m in received}  # type: ignore[arg-type]
    expiry = getattr(by_kind[EventKind.TELEMETRY].properties, "MessageExpiryInterval", None)
    assert expiry is not None
    assert 0 < expiry <= TELEMETRY_EXPIRY_S
    assert not hasattr(by_kind[EventKind.DELETION_REFUSED].properties, "MessageExpiryInterval")


@pytest.mark.parametrize(("protocol", "version"), [("auto", "5"), ("3.1.1", "3.1.1")])
async def test_session_keeps_commands_sent_while_the_device_was_away(
    tmp_path: Path, protocol: MqttProtocol, version: str
) -> None:
    """The persistent session, in either version: a command published while the device is
    off the broker reaches it when it comes back (MQTT 5 needs the session expiry)."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        first = announcer_for(tmp_path, broker.url, protocol)
        runner = asyncio.create_task(first.run(), name="announcer-1")
        async with asyncio.timeout(15):
            while not first.published:  # connected, subscribed, "online" published
                await asyncio.sleep(0.02)
        await stop(runner)  # the device goes away with its session on the broker
        assert first.negotiated == version
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="fleet-manager") as c:
            payload = json.dumps({"command": "delete", "target": "seq:3", "requester": "hq"})
            await c.publish(topics.topic(DEV, topics.Channel.COMMANDS), payload, qos=1)
        got: list[dict[str, Any]] = []
        arrived = asyncio.Event()

        async def on_command(command: dict[str, Any]) -> None:
            got.append(command)
            arrived.set()

        second = announcer_for(tmp_path, broker.url, protocol, on_command=on_command)
        runner = asyncio.create_task(second.run(), name="announcer-2")
        try:
            async with asyncio.timeout(15):
                await arrived.wait()
        finally:
            await stop(runner)
        assert got == [{"command": "delete", "target": "seq:3", "requester": "hq"}]
        assert second.negotiated == version
    finally:
        broker.stop()


@pytest.fixture
async def amqtt_url() -> AsyncIterator[str]:
    """The embedded broker of ``unbroken demo`` (amqtt, MQTT 3.1.1 only)."""
    async with embedded_broker() as port:
        yield f"mqtt://127.0.0.1:{port}"


async def test_amqtt_falls_back_to_311_and_messages_flow(tmp_path: Path, amqtt_url: str) -> None:
    port = int(amqtt_url.rsplit(":", 1)[1])
    commands: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_command(command: dict[str, Any]) -> None:
        commands.append(command)
        arrived.set()

    announcer = announcer_for(tmp_path, amqtt_url, "auto", on_command=on_command)
    async with aiomqtt.Client("127.0.0.1", port, identifier="watcher") as watcher:
        await watcher.subscribe(topics.topic(DEV, topics.Channel.EVENTS), qos=1)
        runner = asyncio.create_task(announcer.run(), name="announcer")
        try:
            announcer.announce(EventKind.INCIDENT_OPENED, {"n": 1})
            async with asyncio.timeout(15):
                message = await anext(aiter(watcher.messages))
                while not announcer.connected:
                    await asyncio.sleep(0.02)
                await watcher.publish(
                    topics.topic(DEV, topics.Channel.COMMANDS), b'{"command":"telemetry"}', qos=1
                )
                await arrived.wait()
        finally:
            await stop(runner)
    event, _ = Event.parse(bytes(message.payload))  # type: ignore[arg-type]
    assert (event.kind, event.body) == (EventKind.INCIDENT_OPENED, {"n": 1})
    assert commands == [{"command": "telemetry"}]
    assert announcer.negotiated == "3.1.1"


def test_agent_config_mqtt_protocol(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from agent.config import AgentConfig

    assert AgentConfig(device_id="cam-1", store=tmp_path).mqtt_protocol == "auto"
    assert AgentConfig(device_id="cam-1", store=tmp_path, mqtt_protocol="5").mqtt_protocol == "5"
    with pytest.raises(ValidationError):
        AgentConfig(device_id="cam-1", store=tmp_path, mqtt_protocol="3.1")


async def test_a_failing_command_does_not_stop_the_announcer(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    got: list[dict[str, Any]] = []
    second = asyncio.Event()

    async def on_command(command: dict[str, Any]) -> None:
        got.append(command)
        if command["command"] == "boom":
            raise RuntimeError("the handler failed")
        second.set()

    announcer = announcer_for(tmp_path, broker.url, "auto", on_command=on_command)
    runner = asyncio.create_task(announcer.run(), name="announcer")
    try:
        async with asyncio.timeout(15):
            while not announcer.published:  # connected and subscribed
                await asyncio.sleep(0.02)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="fleet-manager") as c:
            for name in ("boom", "telemetry"):
                payload = json.dumps({"command": name})
                await c.publish(topics.topic(DEV, topics.Channel.COMMANDS), payload, qos=1)
        async with asyncio.timeout(15):
            await second.wait()
        assert not runner.done()
        assert announcer.connected
    finally:
        try:
            await stop(runner)
        finally:
            broker.stop()
    assert got == [{"command": "boom"}, {"command": "telemetry"}]
