"""The whole app with its MQTT consumer on the real Mosquitto (127.0.0.1:1883): five devices
enrol and sync over HTTP and announce signed telemetry over MQTT; the fleet view and
``GET /metrics`` show every device's battery, storage, clock offset and verified segments.
Also: bad time is flagged, never a reason to refuse (FAULTS 14); oversized bodies get 413.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol import topics
from protocol.api import TIME_HEADER
from protocol.events import Event, EventKind
from server import models
from server.run import EmbeddedServer, embedded
from server.settings import Settings
from tests.server.conftest import ADMIN_TOKEN, Enrol, answers
from tests.server.devicekit import SimDevice, now_us

S = 1_000_000


@pytest.mark.network
async def test_fleet_of_five_over_mqtt_and_metrics(tmp_path: Path) -> None:
    if not answers("127.0.0.1", 1883):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        data=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        log_batch_window=0.005,
        mqtt_url="mqtt://127.0.0.1:1883",
        mqtt_group=f"test-{run}",
    )
    async with embedded(settings) as srv, srv.client() as anon, srv.admin_client() as admin:
        consumer = srv.services.consumer
        assert consumer is not None
        async with asyncio.timeout(10):
            await consumer.connected.wait()
        devices: list[SimDevice] = []
        for i in range(5):
            device = SimDevice(f"cam-{run}-{i}")
            await device.enrol(anon, await srv.enrolment_token(device.device))
            async with device.client(anon) as client:
                device.shift(2)
                await device.sync(client)
            devices.append(device)
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{run}") as broker:
            for i, device in enumerate(devices):
                event = Event(
                    device.device,
                    device.boot,
                    1,
                    EventKind.TELEMETRY,
                    now_us(),
                    {
                        "battery_permille": 500 + 10 * i,
                        "storage_free": (10 + i) << 30,
                        "clock_offset_us": 1000 * (i + 1),
                        "backlog_records": 0,
                    },
                )
                payload = event.sign(device.signer)
                topic = topics.topic(device.device, topics.Channel.TELEMETRY)
                await broker.publish(topic, payload, qos=1)
                await broker.publish(topic, payload, qos=1)  # a duplicate: dropped
        async with asyncio.timeout(15):
            while True:
                fleet = (await admin.get("/api/v1/fleet")).json()
                if all(d["battery_percent"] is not None for d in fleet["devices"]):
                    break
                await asyncio.sleep(0.05)
        batteries = {d["device"]: d["battery_percent"] for d in fleet["devices"]}
        assert batteries == {d.device: 50.0 + i for i, d in enumerate(devices)}
        text = (await anon.get("/metrics")).text
        values = {
            (sample.name, sample.labels.get("device")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        for i, device in enumerate(devices):
            name = device.device
            assert values["unbroken_device_battery_percent", name] == 50.0 + i
            assert values["unbroken_device_storage_free_bytes", name] == (10 + i) << 30
            assert values["unbroken_device_clock_offset_seconds", name] == pytest.approx(
                0.001 * (i + 1)
            )
            assert values["unbroken_device_last_seen_timestamp_seconds", name] > 0
            assert values["unbroken_segments_verified_total", name] == 2.0
        assert await models.Event.filter(device=devices[0].device).count() == 1


async def test_bad_time_is_flagged_not_refused(server: EmbeddedServer, enrolled: Enrol) -> None:
    device, client = await enrolled("cam-clock")
    device.open_session()
    device.segment()
    device.wall += 10 * 365 * 86400 * S  # clock set ten years ahead
    device.segment()
    device.wall -= 10 * 365 * 86400 * S + 86400 * S  # and back a day, monotonic time going on
    device.segment()
    answer = await device.send(client, device.made)
    assert all(o.receipt is not None for o in answer.outcomes)
    await server.services.coverage.catch_up("cam-clock")
    kinds = set(await models.Alert.filter(device="cam-clock").values_list("kind", flat=True))
    assert {"clock_offset", "clock_rollback"} <= kinds


async def test_size_limits(tmp_path: Path) -> None:
    settings = Settings(
        data=tmp_path / "data", admin_token=ADMIN_TOKEN, max_body_bytes=10_000, log_batch_window=0
    )
    async with embedded(settings) as srv, srv.client() as anon:
        big = b'{"records": ["' + b"A" * 20_000 + b'"]}'
        response = await anon.post(
            "/api/v1/devices/cam-1/records",
            content=big,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"
        assert response.headers[TIME_HEADER].isdigit()

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"A" * 4000

        streamed = await anon.post(
            "/api/v1/enrol", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code in (400, 413, 422)
        health = await anon.get("/healthz")
        assert health.json()["status"] == "ok"


async def test_an_announcement_does_not_undo_an_upload_noted_meanwhile(
    server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telemetry read the fleet row before an upload was noted (another request, another
    replica): saving it must not put the upload time back."""
    monitor = server.services.monitor
    await models.FleetState.create(device="cam-race", last_upload=1)
    original = models.FleetState.get_or_create
    read = asyncio.Event()

    async def slow_read(*args: object, **kwargs: object) -> object:
        row = await original(*args, **kwargs)  # type: ignore[arg-type]
        if not read.is_set():
            read.set()
            await asyncio.sleep(0.2)  # the window between read and save, widened
        return row

    monkeypatch.setattr(models.FleetState, "get_or_create", slow_read)
    reading = Event(
        "cam-race",
        os.urandom(16),
        0,
        EventKind.TELEMETRY,
        monitor.clock(),
        {"battery_permille": 900},
    )

    async def upload_meanwhile() -> None:
        await read.wait()
        monkeypatch.setattr(models.FleetState, "get_or_create", original)
        await monitor.seen("cam-race", upload=True)

    await asyncio.gather(monitor.event(reading), upload_meanwhile())
    row = await models.FleetState.get(device="cam-race")
    assert row.last_upload is not None
    assert row.last_upload > 1
    assert row.battery_permille == 900
