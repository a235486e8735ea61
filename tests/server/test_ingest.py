"""Record and media ingest over HTTP: receipts, idempotency, forks, refusals, resumable media,
durability order and reconciliation after a crash (FAULTS 8-10, 13).
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest

from protocol.api import TIME_HEADER, MediaProgress, RecordBatch, b64d, b64e
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.keys import SoftwareSigner
from protocol.log import verify_inclusion
from protocol.record import RecordKind
from server import models
from server.run import EmbeddedServer, embedded
from server.settings import Settings
from tests.server.conftest import Enrol
from tests.server.devicekit import JSON, SimDevice

RECORDS = "/api/v1/devices/{}/records"


async def post(client: httpx.AsyncClient, device: str, raws: list[bytes]) -> httpx.Response:
    batch = RecordBatch(records=[b64e(r) for r in raws])
    return await client.post(RECORDS.format(device), content=batch.model_dump_json(), headers=JSON)


async def test_receipts_prove_inclusion(server: EmbeddedServer, enrolled: Enrol) -> None:
    device, client = await enrolled("cam-1")
    device.shift(4)
    answer = await device.send(client, device.made)
    assert [o.seq for o in answer.outcomes] == list(range(6))
    assert all(o.error is None for o in answer.outcomes)
    assert device.trust is not None
    for made in device.made:
        receipt = Receipt.load(device.receipts[made.seq], device.trust)
        assert receipt.kind is ReceiptKind.RECORD
        assert receipt.record == made.signed.digest
        assert receipt.checkpoint is not None
        assert receipt.index is not None
        cp = Checkpoint.load(receipt.checkpoint, device.trust)
        verify_inclusion(receipt.index, cp.size, made.signed.digest, receipt.path, cp.root)
    head = await device.head(client)
    assert head.next_seq == 6
    assert head.head is not None
    assert b64d(head.head) == device.made[-1].signed.digest


async def test_resend_answers_the_same_receipt(server: EmbeddedServer, enrolled: Enrol) -> None:
    device, client = await enrolled("cam-1")
    device.shift(2)
    await device.send(client, device.made)
    first = dict(device.receipts)
    again = await post(client, "cam-1", [m.signed.encoded for m in device.made])
    assert again.status_code == 200
    outcomes = again.json()["outcomes"]
    assert [b64d(o["receipt"]) for o in outcomes] == [first[i] for i in range(4)]
    assert await models.Record.filter(device="cam-1").count() == 4


async def test_fork_is_refused_quarantined_and_alerted(
    server: EmbeddedServer, enrolled: Enrol
) -> None:
    device, client = await enrolled("cam-1")
    device.shift(2)
    await device.send(client, device.made)
    # Another record for seq 2, signed with the same session key (a cloned or tampered store).
    original = device.made[2].signed
    device.next_seq, device.prev = 2, device.made[1].signed.digest
    device.wall += 5_000_000
    forked = device._make(RecordKind.BOOKMARK, {"label": "other"})
    assert forked.record.seq == 2
    assert forked.digest != original.digest
    answer = await post(client, "cam-1", [forked.encoded, device.made[3].signed.encoded])
    assert answer.status_code == 200
    outcomes = answer.json()["outcomes"]
    assert outcomes[0]["receipt"] is None
    assert outcomes[0]["error"].startswith("fork:")
    assert outcomes[1]["error"].startswith("not processed")
    held = await models.Record.get(device="cam-1", seq=2)
    assert held.quarantine is not None
    assert bytes(held.digest) == original.digest
    kept = await models.Quarantine.get(device="cam-1", seq=2)
    assert bytes(kept.encoded) == forked.encoded
    assert await models.Alert.filter(kind="fork", device="cam-1").exists()
    # the same fork again: still one quarantine row, one alert
    await post(client, "cam-1", [forked.encoded])
    assert await models.Quarantine.filter(device="cam-1").count() == 1
    assert await models.Alert.filter(kind="fork").count() == 1


async def test_refusals(server: EmbeddedServer, enrolled: Enrol, anon: httpx.AsyncClient) -> None:
    device, client = await enrolled("cam-1")
    other, other_client = await enrolled("cam-2")
    device.shift(3)
    other.shift(1)

    # out of order: seq 1 before seq 0
    answer = await post(client, "cam-1", [device.made[1].signed.encoded])
    assert answer.json()["outcomes"][0]["error"].startswith("out_of_order")
    # a record of another device
    answer = await post(client, "cam-1", [other.made[0].signed.encoded])
    assert answer.json()["outcomes"][0]["error"].startswith("wrong_device")
    # garbage
    answer = await post(client, "cam-1", [b"\x00garbage"])
    assert answer.json()["outcomes"][0]["error"].startswith("malformed")
    # the other device's token on this device's chain
    response = await post(other_client, "cam-1", [device.made[0].signed.encoded])
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    response = await post(anon, "cam-1", [device.made[0].signed.encoded])
    assert response.status_code == 401

    # a record signed by a key that the session certificate does not name
    await device.send(client, device.made[:2])
    intruder = SoftwareSigner.generate()
    device.next_seq, device.prev = 2, device.made[1].signed.digest
    bad = device._make(RecordKind.BOOKMARK, {"label": "x"}, signer=intruder)
    answer = await post(client, "cam-1", [bad.encoded])
    assert answer.json()["outcomes"][0]["error"].startswith("uncertified_key")
    # a session certificate issued by a key the fleet root never certified
    stranger = SimDevice("cam-1", recipient=device.recipient)
    stranger.next_seq, stranger.prev = 2, device.made[1].signed.digest
    opened = stranger.open_session()
    answer = await post(client, "cam-1", [opened.signed.encoded])
    assert answer.json()["outcomes"][0]["error"].startswith("uncertified_key")
    # a broken link
    device.prev = os.urandom(32)
    broken = device._make(RecordKind.BOOKMARK, {"label": "y"})
    answer = await post(client, "cam-1", [broken.encoded])
    assert answer.json()["outcomes"][0]["error"].startswith("chain_broken")
    assert (await device.head(client)).next_seq == 2
    assert server.services.ingest.stats.records_rejected >= 6


async def test_every_answer_carries_server_time(
    server: EmbeddedServer, anon: httpx.AsyncClient
) -> None:
    for method, path in (
        ("GET", "/healthz"),
        ("GET", "/api/v1/time"),
        ("GET", "/api/v1/devices/cam-9/head"),
        ("GET", "/nowhere"),
        ("POST", "/api/v1/enrol"),
    ):
        response = await anon.request(method, path)
        assert response.headers[TIME_HEADER].isdigit(), (method, path)
        if response.status_code >= 400:
            assert set(response.json()) == {"v", "code", "message"}


async def test_media_resumes_and_is_checked(server: EmbeddedServer, enrolled: Enrol) -> None:
    device, client = await enrolled("cam-1")
    device.open_session()
    segment = device.segment(payload=os.urandom(200_000))
    await device.send(client, device.made)
    assert segment.media is not None
    path = f"/api/v1/devices/cam-1/media/{segment.seq}"

    progress = MediaProgress.model_validate_json((await client.get(path)).content)
    assert (progress.offset, progress.length, progress.complete) == (0, len(segment.media), False)
    # first part, then a retry at a stale offset, then the rest
    response = await client.put(path, params={"offset": 0}, content=segment.media[:70_000])
    assert MediaProgress.model_validate_json(response.content).offset == 70_000
    stale = await client.put(path, params={"offset": 0}, content=segment.media[:70_000])
    assert stale.status_code == 409
    assert stale.json()["code"] == "offset_mismatch"
    progress = MediaProgress.model_validate_json((await client.get(path)).content)
    assert progress.offset == 70_000
    # past the end: refused, nothing kept of it
    too_long = await client.put(
        path, params={"offset": 70_000}, content=segment.media[70_000:] + b"x"
    )
    assert too_long.status_code == 413
    assert MediaProgress.model_validate_json((await client.get(path)).content).offset == 70_000
    done = await client.put(path, params={"offset": 70_000}, content=segment.media[70_000:])
    progress = MediaProgress.model_validate_json(done.content)
    assert progress.complete
    assert progress.receipt is not None
    receipt = Receipt.load(b64d(progress.receipt), device.trust)  # type: ignore[arg-type]
    assert receipt.kind is ReceiptKind.MEDIA
    assert receipt.media_hash == hashlib.sha256(segment.media).digest()
    # write-once, content-addressed, and the same receipt when asked again
    key = hashlib.sha256(segment.media).hexdigest()
    assert await server.services.blobs.size(key) == len(segment.media)
    again = MediaProgress.model_validate_json((await client.get(path)).content)
    assert again.receipt == progress.receipt
    again = MediaProgress.model_validate_json(
        (await client.put(path, params={"offset": 0}, content=b"")).content
    )
    assert again.receipt == progress.receipt
    assert not list((server.services.settings.upload_dir / "cam-1").glob("*.part"))


async def test_media_that_does_not_match_its_record(
    server: EmbeddedServer, enrolled: Enrol
) -> None:
    device, client = await enrolled("cam-1")
    device.open_session()
    segment = device.segment()
    await device.send(client, device.made)
    assert segment.media is not None
    path = f"/api/v1/devices/cam-1/media/{segment.seq}"
    wrong = bytes([segment.media[0] ^ 1]) + segment.media[1:]
    response = await client.put(path, params={"offset": 0}, content=wrong)
    assert response.status_code == 409
    assert response.json()["code"] == "media_mismatch"
    rejected = server.services.settings.upload_dir / "rejected"
    assert len(list(rejected.iterdir())) == 1  # kept aside, not deleted
    assert await models.Alert.filter(kind="tamper").exists()
    progress = await device.upload_media(client, segment)  # starts again from 0
    assert progress.complete
    # media for a record the server does not have, or a record without media
    assert (await client.get("/api/v1/devices/cam-1/media/99")).status_code == 404
    no_media = await client.get("/api/v1/devices/cam-1/media/0")
    assert no_media.status_code == 400
    assert no_media.json()["code"] == "no_media"


async def test_revoked_device_is_refused_and_quarantined(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-1")
    device.shift(1)
    await device.sync(client)
    response = await admin.post("/api/v1/admin/devices/cam-1/revoke", json={"reason": "lost"})
    assert response.status_code == 200
    assert response.json()["log_size"] == 3
    device.open_session()
    late = device.segment()
    refused = await post(client, "cam-1", [m.signed.encoded for m in device.made[3:]])
    assert refused.status_code == 403
    assert refused.json()["code"] == "device_revoked"
    kept = await models.Quarantine.filter(device="cam-1").order_by("seq")
    assert [k.seq for k in kept] == [3, 4]
    assert all(k.reason == "uploaded after revocation" for k in kept)
    assert await models.Alert.filter(kind="revoked_upload", device="cam-1").exists()
    media = await client.get(f"/api/v1/devices/cam-1/media/{late.seq}")
    assert media.status_code in (403, 404)
    assert (await models.Record.filter(device="cam-1").count()) == 3


async def test_media_of_records_logged_before_revocation_is_still_taken(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    """Revocation stops what the device signs later, not the evidence it logged before."""
    device, client = await enrolled("cam-1")
    device.open_session()
    first, second = device.segment(), device.segment()
    await device.send(client, device.made)
    await device.upload_media(client, first)
    response = await admin.post("/api/v1/admin/devices/cam-1/revoke", json={"reason": "lost"})
    assert response.status_code == 200
    progress = await device.upload_media(client, second)
    assert progress.complete
    assert progress.receipt is not None
    assert await models.Media.filter(device="cam-1").count() == 2
    assert not await models.PendingMedia.filter(device="cam-1").exists()


async def test_crash_between_blob_and_commit_is_reconciled(settings: Settings) -> None:
    """The blob is durable but the server died before its row: the restart completes it."""
    async with embedded(settings) as srv, srv.client() as anon:
        device = SimDevice("cam-1")
        await device.enrol(anon, await srv.enrolment_token("cam-1"))
        async with device.client(anon) as client:
            device.open_session()
            segment = device.segment()
            await device.send(client, device.made)
        assert segment.media is not None
        # what a crash after put_file and before the commit leaves behind: the whole
        # partial file, and its blob
        part = settings.upload_dir / "cam-1" / f"{segment.seq:012d}.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(segment.media)
        await srv.services.blobs.put_file(hashlib.sha256(segment.media).hexdigest(), part)
        orphan = settings.data / "orphan.bin"
        orphan.write_bytes(b"nobody vouches for this")
        await srv.services.blobs.put_file(hashlib.sha256(orphan.read_bytes()).hexdigest(), orphan)
    async with embedded(settings) as srv:
        async with asyncio.timeout(10):
            await srv.services.reconciled.wait()
        media = await models.Media.get(device="cam-1", seq=segment.seq)
        Receipt.load(bytes(media.receipt), srv.services.keys.trust())
        assert not part.exists()
        assert not await models.OrphanBlob.exists()  # start-up does not walk the store
        async with srv.admin_client() as admin:
            scan = (await admin.post("/api/v1/admin/orphans")).json()
        assert (scan["new"], scan["total"]) == (1, 1)
        orphans = await models.OrphanBlob.all()
        assert await srv.services.blobs.size(orphans[0].blob) is not None  # never deleted
        assert await models.Alert.filter(kind="orphan_blob").exists()


@pytest.mark.parametrize("batches", [3])
async def test_concurrent_devices_share_log_commits(
    server: EmbeddedServer, enrolled: Enrol, batches: int
) -> None:
    devices = [await enrolled(f"cam-{i}") for i in range(6)]
    for device, _ in devices:
        device.open_session()

    async def run(device: SimDevice, client: httpx.AsyncClient) -> None:
        sent = 0
        for _ in range(batches):
            for _ in range(5):
                device.segment()
            await device.send(client, device.made[sent:])
            sent = len(device.made)

    await asyncio.gather(*(run(d, c) for d, c in devices))
    total = sum(len(d.made) for d, _ in devices)
    head = await models.LogHead.get(id=1)
    assert head.size == total
    indices = await models.Record.all().values_list("log_index", flat=True)
    assert sorted(int(str(i)) for i in indices) == list(range(total))
    # fewer checkpoints than batches: batches arriving together share a commit
    assert await models.Checkpoint.all().count() <= len(devices) * batches


async def test_no_receipt_when_the_commit_fails(
    server: EmbeddedServer, enrolled: Enrol, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside the log transaction: nothing acknowledged, nothing half-written."""
    device, client = await enrolled("cam-1")
    device.shift(2)
    await device.send(client, device.made[:2])
    size_before = (await models.LogHead.get(id=1)).size
    nodes_before = await models.LogNode.all().count()

    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    with monkeypatch.context() as patch:
        patch.setattr(models.Record, "bulk_create", broken)
        refused = await post(client, "cam-1", [m.signed.encoded for m in device.made[2:]])
    assert refused.status_code == 503
    assert refused.json()["code"] == "unavailable"
    assert (await models.LogHead.get(id=1)).size == size_before
    assert await models.LogNode.all().count() == nodes_before
    assert (await device.head(client)).next_seq == 2
    # the device retries and gets its receipts, at the same log positions
    answer = await device.send(client, device.made[2:])
    assert all(o.receipt is not None for o in answer.outcomes)
    receipt = Receipt.load(device.receipts[2], device.trust)  # type: ignore[arg-type]
    assert receipt.index == size_before


async def test_no_media_receipt_when_the_blob_store_fails(
    server: EmbeddedServer, enrolled: Enrol, monkeypatch: pytest.MonkeyPatch
) -> None:
    device, client = await enrolled("cam-1")
    device.open_session()
    segment = device.segment()
    await device.send(client, device.made)
    assert segment.media is not None
    path = f"/api/v1/devices/cam-1/media/{segment.seq}"
    from server.errors import StorageError

    async def broken(key: str, path: object) -> bool:
        raise StorageError("bucket unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(server.services.uploads.blobs, "put_file", broken)
        response = await client.put(path, params={"offset": 0}, content=segment.media)
    assert response.status_code == 503
    assert not await models.Media.filter(device="cam-1").exists()
    held = MediaProgress.model_validate_json((await client.get(path)).content)
    assert (held.offset, held.complete) == (len(segment.media), False)  # kept, resumable
    progress = await device.upload_media(client, segment)
    assert progress.complete
