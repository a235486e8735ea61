"""Coverage from the chain: merged runs, gaps and their causes, per device, day, session and
incident; and the alerts the records call for.
"""

from __future__ import annotations

import datetime as dt

import httpx

from protocol.record import RecordKind
from server import models
from server.run import EmbeddedServer
from tests.server.conftest import Enrol

S = 1_000_000


async def test_gaps_and_causes(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-1")
    device.wall -= 600 * S  # recorded in the past, so that no clock looks ahead
    device.shift(3)  # seqs 0-4
    device.pause(60 * S)  # off duty
    opened = device.open_session()
    device.incident = "inc-9"
    device.event(RecordKind.INCIDENT_OPEN)
    for _ in range(2):
        device.segment()
    device.pause(10 * S)  # a pause inside the incident, nothing recorded
    device.segment()
    device.event(RecordKind.DELETION_REFUSED, {"interface": "api", "target": "seq 3"})
    device.crash_and_reboot(downtime=20 * S)  # power loss inside the incident
    unsent = device.segment()  # its media never arrives
    device.event(RecordKind.STORAGE_FULL, {"free": 0, "total": 100})
    device.pause(30 * S)
    device.event(RecordKind.STORAGE_RESUMED, {"free": 50, "total": 100})
    device.segment()
    device.incident = None
    device.close()
    head = await device.head(client)
    await device.send(client, device.made[head.next_seq :])
    for made in device.made:
        if made.media is not None and made is not unsent:
            await device.upload_media(client, made)

    report = (await admin.get("/api/v1/coverage/devices/cam-1")).json()
    causes = [g["cause"] for g in report["gaps"]]
    assert causes == ["off_duty", "unexplained", "power_loss", "missing", "storage_full"]
    assert [g["seconds"] for g in report["gaps"]][:3] == [60.0, 10.0, 20.0]
    assert report["covered_seconds"] == 3 + 2 + 1 + 1 + 1 - 1  # minus the missing one
    # runs are stored merged: one per session and incident binding
    assert len(report["intervals"]) == 5
    assert report["intervals"][0]["segments"] == 3
    assert await models.Interval.filter(device="cam-1", state="covered").count() == 5
    # Only the segment whose media never came is still pending (what "missing" reads).
    pending = await models.PendingMedia.filter(device="cam-1").values_list("seq", flat=True)
    assert pending == [unsent.signed.record.seq]

    incident = (await admin.get("/api/v1/coverage/incidents/inc-9")).json()
    assert {g["cause"] for g in incident["gaps"]} >= {"unexplained", "power_loss"}
    session = opened.signed.record.session.hex()
    shift = (await admin.get(f"/api/v1/coverage/devices/cam-1/sessions/{session}")).json()
    assert [i["segments"] for i in shift["intervals"]] == [2, 1]
    day = dt.datetime.fromtimestamp(device.made[0].signed.record.t0 / S, dt.UTC).date()
    daily = (await admin.get(f"/api/v1/coverage/devices/cam-1/days/{day.isoformat()}")).json()
    assert daily["covered_seconds"] > 0
    assert (await admin.get("/api/v1/coverage/devices/cam-404")).status_code == 404
    assert (await admin.get("/api/v1/coverage/incidents/none")).status_code == 404

    kinds = set(await models.Alert.filter(device="cam-1").values_list("kind", flat=True))
    assert {"gap_in_incident", "gap_unexplained", "deletion_refused", "storage_full"} <= kinds


async def test_coverage_is_incremental(server: EmbeddedServer, enrolled: Enrol) -> None:
    """Read once per record: catching up twice changes nothing; later records extend runs."""
    device, client = await enrolled("cam-2")
    device.open_session()
    for _ in range(3):
        device.segment()
    await device.sync(client)
    coverage = server.services.coverage
    await coverage.catch_up("cam-2")
    assert await coverage.catch_up("cam-2") == 0
    for _ in range(2):
        device.segment()
    await device.sync(client)
    await coverage.catch_up("cam-2")
    runs = await models.Interval.filter(device="cam-2")
    assert [(r.seq_from, r.seq_to, r.segments) for r in runs] == [(1, 5, 5)]
