"""Announcements reach a real broker signed, and survive the broker being away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiomqtt
import pytest

from agent.announce import Announcer
from hardware.base import Clock, ClockSource, ClockStatus
from hardware.disk import DirectoryStorage
from protocol import topics
from protocol.events import Event, EventKind
from protocol.keys import SoftwareSigner
from tests.broker import Broker

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
