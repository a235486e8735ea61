"""Deletion is refused through every interface (issue 3, item 6): the local API, the
``unbroken ctl delete`` command and an MQTT command through a real Mosquitto.

Each test runs a real agent on simulated hardware in real time (real keys, a real store on
disk, a private Mosquitto) and asks it to delete a segment it has recorded. Each checks
that the request is answered as refused, that exactly one ``deletion_refused`` record
naming the interface, the target and the requester is in the signed chain, that the same
refusal is announced over MQTT signed with the device key, that no segment file was
removed or changed, that recording goes on, and that the store still verifies offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.capture.store import EvidenceStore
from agent.config import AgentConfig
from agent.enrolment import load_identity, provision_test_enrolment
from agent.localapi import call, socket_path
from agent.runtime import Agent
from protocol import layout, topics
from protocol.events import Event, EventKind
from protocol.journal import JournalScan
from protocol.record import RecordKind, SignedRecord
from protocol.verify import verify_path
from simulator.board import SimulatedBoard, simulated_board
from simulator.clock import SimClock, Timeline
from tests.broker import Broker

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not Broker.available(), reason="mosquitto not installed"),
]
DEV = "cam-refuse"
UID = f"uid {os.getuid()}"


@dataclass
class Device:
    """A running agent on simulated hardware, with a watcher on its announcements."""

    agent: Agent
    board: SimulatedBoard
    store: Path
    broker: Broker
    public_key: bytes
    announced: list[Event] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: bool = False

    def media(self) -> dict[str, str]:
        """SHA-256 of every segment file on the medium, by name."""
        folder = self.store / layout.STORE_MEDIA_DIR
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    async def wait_media(self, more: int) -> None:
        """Wait until ``more`` segments beyond those on the medium now are sealed."""
        want = len(self.media()) + more
        async with asyncio.timeout(30):
            while len(self.media()) < want:
                await asyncio.sleep(0.05)

    def refusals(self) -> list[SignedRecord]:
        """The deletion_refused records in the device's journals (signed by the session key
        that the device key certified; :func:`verify_path` checks the chain and keys)."""
        found = []
        for path in sorted((self.store / layout.JOURNAL_DIR).iterdir()):
            for item in JournalScan(io.BytesIO(path.read_bytes()), path.name).items():
                signed = SignedRecord.parse(item)
                if signed.record.kind is RecordKind.DELETION_REFUSED:
                    found.append(signed)
        return found

    async def announced_refusal(self) -> Event:
        """The deletion_refused announcement, once the watcher has it (15 s at most)."""
        async with asyncio.timeout(15):
            while True:
                refused = [e for e in self.announced if e.kind is EventKind.DELETION_REFUSED]
                if refused:
                    assert len(refused) == 1
                    return refused[0]
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop the agent cleanly (it closes its session), then the watcher."""
        if self.stopped:
            return
        self.stopped = True
        self.agent.stop()
        runner, watcher = self.tasks
        async with asyncio.timeout(30):
            await runner
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        self.board.close()


async def watch(broker: Broker, device: Device, ready: asyncio.Event) -> None:
    """Collect the device's signed event announcements (signatures checked)."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as client:
        await client.subscribe(topics.topic(DEV, topics.Channel.EVENTS), qos=1)
        ready.set()
        async for message in client.messages:
            event, msg = Event.parse(bytes(message.payload))  # type: ignore[arg-type]
            msg.verify(device.public_key)
            device.announced.append(event)


@pytest.fixture
async def device(tmp_path: Path) -> AsyncIterator[Device]:
    broker = Broker(tmp_path / "broker")
    broker.start()
    store = tmp_path / "store"
    store.mkdir()
    clock = SimClock(Timeline(start_wall=time.time_ns() // 1000))
    board = simulated_board(DEV, store, clock, seed=3, replay=True)
    evidence = EvidenceStore(board.storage)
    provision_test_enrolment(evidence, store, DEV, clock.wall())
    identity = load_identity(evidence, store, DEV)
    config = AgentConfig(
        device_id=DEV,
        store=store,
        mqtt_url=broker.url,
        preroll_seconds=0,
        notice_seconds=0,
        telemetry_seconds=3600,
    )
    agent = Agent(config, board, evidence, identity)
    running = Device(agent, board, store, broker, identity.signer.public_key)
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch(broker, running, ready), name="watcher")
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        running.tasks = [asyncio.create_task(agent.run(), name="agent"), watcher]
        async with asyncio.timeout(30):
            await agent.wait_ready()
            while not (socket_path(store).exists() and agent.announcer.connected):
                await asyncio.sleep(0.05)
        await running.wait_media(2)
        yield running
    finally:
        try:
            if running.tasks:
                await running.stop()
            else:
                watcher.cancel()
                board.close()
        finally:
            broker.stop()


async def ask_local_api(device: Device, target: str) -> dict[str, Any]:
    answer = await call(
        device.store, {"command": "delete", "target": target, "requester": "officer-7"}
    )
    assert answer["ok"] is False
    assert answer["refused"] is True
    return answer


async def ask_cli(device: Device, target: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "ctl",
        "delete",
        target,
        "--store",
        str(device.store),
        "--requester",
        "officer-7",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    answer: dict[str, Any] = json.loads(out)
    assert answer["ok"] is False
    assert answer["refused"] is True
    return answer


async def ask_mqtt(device: Device, target: str) -> dict[str, Any]:
    request = {"command": "delete", "target": target, "requester": "officer-7"}
    async with aiomqtt.Client(
        "127.0.0.1", device.broker.port, identifier="fleet-manager"
    ) as client:
        await client.publish(topics.topic(DEV, topics.Channel.COMMANDS), json.dumps(request), qos=1)
    return request  # MQTT commands get no answer; the refusal is announced instead


ASK = {"local_api": ask_local_api, "cli": ask_cli, "mqtt": ask_mqtt}
# What the record says of the requester: the local API adds the socket peer's user id.
REQUESTER = {
    "local_api": f"officer-7 ({UID})",
    "cli": f"officer-7 ({UID})",
    "mqtt": "officer-7",
}


@pytest.mark.parametrize("interface", ["local_api", "cli", "mqtt"])
async def test_deletion_is_refused_recorded_announced_and_nothing_is_removed(
    device: Device, interface: str
) -> None:
    before = device.media()
    target = f"{layout.STORE_MEDIA_DIR}/{min(before)}"  # the oldest segment on the medium
    assert not device.refusals()

    await ASK[interface](device, target)
    announced = await device.announced_refusal()
    await device.wait_media(1)  # recording goes on after the refusal

    (refusal,) = device.refusals()
    record = refusal.record
    assert record.device == DEV
    assert record.body == {
        "interface": interface,
        "target": target,
        "requester": REQUESTER[interface],
    }
    assert announced.body == {**record.body, "seq": record.seq}
    assert announced.device == DEV
    after = device.media()
    assert {name: after.get(name) for name in before} == before  # none removed or changed
    assert (device.store / target).exists()
    later_segments = [int(name.split(".", 1)[0]) for name in set(after) - set(before)]
    assert max(later_segments) > record.seq

    await device.stop()
    report = verify_path(device.store)
    errors = [f.to_json() for f in report.findings if f.severity.value == "error"]
    assert report.verdict == "authentic", errors
    assert report.segments == report.segments_ok >= len(before) + 1
    assert not report.gaps
    assert (device.store / target).exists()
    assert device.refusals() == [refusal]  # still one refusal, as first written
