"""Announcements over HTTP (`POST /devices/{device}/events`): a device without a broker
still reports its health; the same checks as for MQTT (signature, device, duplicates)."""

from __future__ import annotations

import os

import httpx

from protocol.api import b64e
from protocol.events import Event, EventKind
from server.run import EmbeddedServer
from tests.server.conftest import Enrol

BOOT = os.urandom(16)


async def _post(client: httpx.AsyncClient, device: str, *events: bytes) -> httpx.Response:
    return await client.post(
        f"/api/v1/devices/{device}/events", json={"events": [b64e(e) for e in events]}
    )


async def test_telemetry_over_http_reaches_fleet_health_and_metrics(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-1")
    reading = Event(
        "cam-1",
        BOOT,
        0,
        EventKind.TELEMETRY,
        device.wall,
        {"battery_permille": 640, "storage_free": 5_000_000, "clock_offset_us": 1500},
    ).sign(device.signer)
    first = await _post(client, "cam-1", reading)
    again = await _post(client, "cam-1", reading)
    assert first.json()["outcomes"] == ["accepted"]
    assert again.json()["outcomes"] == ["duplicate"]
    metrics = (await admin.get("/metrics")).text
    assert 'unbroken_device_battery_percent{device="cam-1"} 64.0' in metrics
    assert 'unbroken_device_storage_free_bytes{device="cam-1"} 5e+06' in metrics
    fleet = (await admin.get("/api/v1/fleet")).json()
    (row,) = [d for d in fleet["devices"] if d["device"] == "cam-1"]
    assert row["battery_percent"] == 64.0


async def test_events_of_another_device_or_unsigned_are_refused(
    server: EmbeddedServer, enrolled: Enrol
) -> None:
    one, client = await enrolled("cam-1")
    other, _ = await enrolled("cam-2")
    # cam-1's token, cam-2's announcement: dropped as another device's
    forged = Event("cam-2", BOOT, 0, EventKind.TELEMETRY, one.wall, {}).sign(other.signer)
    answer = await _post(client, "cam-1", forged)
    assert answer.json()["outcomes"] == ["wrong_device"]
    # signed by another key under cam-1's name: not accepted
    bad = Event("cam-1", BOOT, 1, EventKind.TELEMETRY, one.wall, {}).sign(other.signer)
    answer = await _post(client, "cam-1", bad)
    assert answer.json()["outcomes"] == ["bad_signature"]
    # another device's path with cam-1's token: not authorised
    answer = await _post(client, "cam-2", forged)
    assert answer.status_code in (401, 403)
    junk = await client.post("/api/v1/devices/cam-1/events", json={"events": ["AAAA"]})
    assert junk.status_code == 400
    assert "Traceback" not in junk.text
