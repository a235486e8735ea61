"""Export end to end: a device records with real keys, syncs over HTTP, the server exports,
the offline verifier says authentic; then tampering with the bundle makes it fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from protocol import layout
from protocol.cbor import bstr_item, iter_bstr_sequence
from protocol.checkpoint import Checkpoint
from protocol.record import RecordKind
from protocol.verify import Code, verify_path
from server.errors import ExportError, NotFoundError
from server.run import EmbeddedServer
from server.schemas import ExportRequest
from tests.server.conftest import Enrol
from tests.server.devicekit import SimDevice


def codes(path: Path, pin: str) -> set[Code]:
    report = verify_path(path, pin)
    return {f.code for f in report.findings}


def errors(path: Path, pin: str) -> set[Code]:
    report = verify_path(path, pin)
    return {f.code for f in report.findings if f.severity.value == "error"}


async def record_day(device: SimDevice, client: httpx.AsyncClient) -> None:
    """Two syncs, a power loss with recovery, an incident with bookmarks, a clean close."""
    device.officer = "officer-7"
    device.shift(3)
    await device.sync(client)
    device.pause(30_000_000)  # off duty
    device.open_session()
    device.incident = "case-41"
    device.event(RecordKind.INCIDENT_OPEN, {"label": "door on arrival"})
    for _ in range(3):
        device.segment()
    device.event(RecordKind.BOOKMARK, {"label": "door"})
    await device.sync(client)
    device.crash_and_reboot()
    for _ in range(2):
        device.segment()
    device.event(RecordKind.INCIDENT_CLOSE, {"label": "leaving"})
    device.incident = None
    device.segment()
    device.close()
    await device.sync(client)


async def test_export_verifies_and_tampering_fails(
    server: EmbeddedServer, enrolled: Enrol, tmp_path: Path
) -> None:
    device, client = await enrolled("cam-1")
    await record_day(device, client)
    out = tmp_path / "bundle"
    done = await server.export(ExportRequest(device="cam-1", openings=True), out)
    assert done.records == len(device.made)
    assert done.media == sum(1 for m in device.made if m.media is not None)

    report = verify_path(out, server.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    assert report.segments == report.segments_ok == done.media
    assert {g.cause for g in report.gaps} >= {"power_loss", "off_duty"}

    # every checkpoint a record anchors to is in the bundle, ascending
    sizes = [
        Checkpoint.parse(c)[0].size
        for c in iter_bstr_sequence((out / layout.CHECKPOINTS_FILE).read_bytes())
    ]
    assert sizes == sorted(set(sizes))
    anchors = {m.signed.record.anchor.size for m in device.made if m.signed.record.anchor}
    assert anchors <= set(sizes)
    assert len(sizes) >= 3

    # the openings are the plaintext the device recorded
    first = next(m for m in device.made if m.plain is not None)
    opening = (out / layout.bundle_opening("cam-1", first.seq)).read_bytes()
    assert opening[32:] == first.plain

    # a changed byte of media
    media = out / layout.bundle_media("cam-1", first.seq)
    data = bytearray(media.read_bytes())
    data[-5] ^= 1
    media.write_bytes(bytes(data))
    assert Code.MEDIA_CORRUPT in errors(out, server.fingerprint)
    data[-5] ^= 1
    media.write_bytes(bytes(data))
    assert verify_path(out, server.fingerprint).verdict == "authentic"

    # a removed record, then two swapped records
    chain = out / layout.chain_file("cam-1")
    entries = list(iter_bstr_sequence(chain.read_bytes()))
    chain.write_bytes(b"".join(bstr_item(e) for i, e in enumerate(entries) if i != 5))
    assert Code.RECORD_MISSING in errors(out, server.fingerprint)
    swapped = [*entries[:4], entries[5], entries[4], *entries[6:]]
    chain.write_bytes(b"".join(bstr_item(e) for e in swapped))
    assert errors(out, server.fingerprint)
    chain.write_bytes(b"".join(bstr_item(e) for e in entries))

    # the opening of a segment does not match its commitment
    path = out / layout.bundle_opening("cam-1", first.seq)
    path.write_bytes(opening[:-1] + bytes([opening[-1] ^ 1]))
    assert Code.OPENING_MISMATCH in errors(out, server.fingerprint)
    path.write_bytes(opening)

    # another root pinned
    assert Code.UNTRUSTED_ROOT in errors(out, "sha256:" + "00" * 32)
    # the manifest re-signed by someone else
    (out / layout.MANIFEST_FILE).write_bytes(os.urandom(200))
    assert Code.MANIFEST_INVALID in errors(out, server.fingerprint)


async def test_export_scopes(server: EmbeddedServer, enrolled: Enrol, tmp_path: Path) -> None:
    device, client = await enrolled("cam-2")
    other, other_client = await enrolled("cam-3")
    await record_day(device, client)
    other.open_session()
    other.incident = "case-41"
    other.segment()
    other.close()
    await other.sync(other_client)

    # a seq range in the middle starts at the opening of its session
    middle = next(m.seq for m in device.made if m.signed.record.incident == "case-41")
    done = await server.export(
        ExportRequest(device="cam-2", seq_from=middle + 1, seq_to=middle + 3), tmp_path / "range"
    )
    assert done.scope.startswith("device cam-2 seq ")
    assert verify_path(tmp_path / "range", server.fingerprint).verdict == "authentic"

    # a time range
    made = [m.signed.record for m in device.made]
    done = await server.export(
        ExportRequest(device="cam-2", start=made[2].t0, end=made[4].t1), tmp_path / "time"
    )
    assert verify_path(tmp_path / "time", server.fingerprint).verdict == "authentic"

    # an incident over two devices
    done = await server.export(ExportRequest(incident="case-41"), tmp_path / "incident")
    assert sorted(done.devices) == ["cam-2", "cam-3"]
    report = verify_path(tmp_path / "incident", server.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]

    with pytest.raises(NotFoundError):
        await server.export(ExportRequest(incident="nothing"), tmp_path / "none")
    with pytest.raises(ExportError):
        await server.export(ExportRequest(device="cam-2"), tmp_path / "range")


async def test_media_missing_is_reported_by_the_verifier(
    server: EmbeddedServer, enrolled: Enrol, tmp_path: Path
) -> None:
    device, client = await enrolled("cam-4")
    device.shift(2)
    head = await device.head(client)
    await device.send(client, device.made[head.next_seq :])
    await device.upload_media(client, device.made[1])  # the second segment never arrives
    await server.export(ExportRequest(device="cam-4"), tmp_path / "b")
    report = verify_path(tmp_path / "b", server.fingerprint)
    assert report.verdict == "not_authentic"
    assert Code.MEDIA_ABSENT in {f.code for f in report.findings}


async def test_export_over_http(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-5")
    device.shift(2)
    await device.sync(client)
    response = await admin.post("/api/v1/admin/exports", json={"device": "cam-5", "name": "case-1"})
    assert response.status_code == 200, response.text
    path = Path(response.json()["path"])
    assert path == server.services.settings.data / "exports" / "case-1"
    assert verify_path(path, server.fingerprint).verdict == "authentic"
    again = await admin.post("/api/v1/admin/exports", json={"device": "cam-5", "name": "case-1"})
    assert again.status_code == 409
    assert again.json()["code"] == "export_failed"
    bad = await admin.post("/api/v1/admin/exports", json={"device": "cam-5", "incident": "x"})
    assert bad.status_code == 422
