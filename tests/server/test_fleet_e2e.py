"""The issue's "done when", in one process: five real agents on simulated hardware record for
a few seconds, sync to the server over its ASGI transport and announce over the Mosquitto
on 127.0.0.1:1883; the server's MQTT consumer (shared subscription) takes their signed
telemetry. Then ``GET /metrics`` shows every device's battery, storage, clock offset and
last seen, and the segments verified; ``/api/v1/fleet`` shows five online devices; and an
export of one device verifies offline with the root pinned.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest

from hardware.base import CameraConfig
from protocol.api import API_PREFIX
from protocol.verify import verify_path
from server.run import embedded
from server.schemas import ExportRequest
from server.settings import Settings
from simulator.clock import Timeline
from simulator.runner import DeviceSpec, SimulatedDevice

pytestmark = [pytest.mark.slow, pytest.mark.network]
DEVICES = 5


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _gauge(text: str, name: str, device: str) -> float | None:
    match = re.search(rf'^{name}{{device="{re.escape(device)}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_five_agents_sync_and_show_in_metrics(tmp_path: Path) -> None:
    if not _answers("127.0.0.1", 1883):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data=tmp_path / "server", mqtt_url="mqtt://127.0.0.1:1883", mqtt_group=group
    )
    names = [f"cam-{group}-{i}" for i in range(DEVICES)]
    async with embedded(settings) as server:
        timeline = Timeline(start_wall=time.time_ns() // 1000)
        devices = []
        for i, name in enumerate(names):
            spec = DeviceSpec(
                device_id=name,
                store=tmp_path / name,
                seed=i,
                officer=f"officer-{i}",
                server_url=server.base_url,
                mqtt_url=settings.mqtt_url,
                enrolment_token=await server.enrolment_token(name),
                telemetry_seconds=1.0,
                sync_seconds=1.0,
                board={
                    "camera": CameraConfig(
                        width=160, height=96, fps=10, bitrate=100_000, keyframe_interval=10
                    ),
                    "battery_percent": 60.0 + i,
                },
            )
            device = SimulatedDevice(
                spec, timeline, transport=lambda: httpx.ASGITransport(app=server.app)
            )
            devices.append(device)
        try:
            for device in devices:
                await device.boot()
            await asyncio.sleep(6)
        finally:
            for device in devices:
                await device.stop()
        assert not [d.failures for d in devices if d.failures]
        async with server.admin_client() as admin:
            # Everything the devices recorded is on the server (records and media).
            deadline = time.monotonic() + 20
            while True:
                fleet = (await admin.get(f"{API_PREFIX}/fleet")).json()
                state = {d["device"]: d for d in fleet["devices"]}
                ready = all(
                    state[n]["battery_percent"] is not None and state[n]["next_seq"] > 3
                    for n in names
                )
                if ready or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert ready, state
            metrics = (await admin.get("/metrics")).text
        for i, name in enumerate(names):
            battery = _gauge(metrics, "unbroken_device_battery_percent", name)
            assert battery is not None
            assert 50 <= battery <= 70
            assert _gauge(metrics, "unbroken_device_storage_free_bytes", name)
            assert _gauge(metrics, "unbroken_device_clock_offset_seconds", name) is not None
            assert _gauge(metrics, "unbroken_device_last_seen_timestamp_seconds", name)
            verified = _gauge(metrics, "unbroken_segments_verified_total", name)
            assert verified is not None
            assert verified >= 2, (name, i)
        out = tmp_path / "bundle"
        await server.export(ExportRequest(device=names[0], openings=True), out)
        report = verify_path(out, server.fingerprint)
        assert report.verdict == "authentic", [f.to_json() for f in report.findings]
        assert report.segments >= 2
