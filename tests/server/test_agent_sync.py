"""The device's own client against the server: ``agent.enrolment`` and ``agent.sync.Syncer``
talk to ``create_app`` through ``httpx.ASGITransport``, on SQLite and PostgreSQL.

The device is real down to its evidence store on disk (``hardware.disk.DirectoryStorage``),
its keys and HPKE-sealed media; only capture is replaced by random bytes. What the server
answers must be what the agent keeps: receipts that verify, checkpoints that become the
next records' anchors, media receipts, so that the device store verifies offline, and a
server export of the same chain verifies too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent.capture.store import EvidenceStore
from agent.enrolment import enrol_with_server, load_identity
from agent.signing.chain import ChainWriter, Span
from agent.sync import Syncer
from hardware.base import Clock, ClockSource, ClockStatus
from hardware.disk import DirectoryStorage
from protocol import layout
from protocol.api import API_PREFIX, TIME_HEADER, ChainHead, RecordBatch, b64d, b64e
from protocol.checkpoint import ReceiptKind
from protocol.record import ClockState, MediaRef, RecordKind, Suite
from protocol.verify import verify_path
from server.app import create_app
from server.schemas import ExportRequest
from server.settings import Settings

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/test"
CLOCK = ClockState("ntp", 0, True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[list[str]]:
    """Makes uniquely named PostgreSQL databases; drops them all at the end of the session."""
    if not _answers("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    made: list[str] = []

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    yield made
    for name in made:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _create_pg(made: list[str]) -> str:
    import asyncpg

    name = f"unbroken_sync_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    made.append(name)
    return f"postgres://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None
    if request.param == "postgres":
        url = _create_pg(request.getfixturevalue("pg_admin"))
    return Settings(data=tmp_path / "server", database_url=url)


class WallClock(Clock):
    """The host's clocks (the server uses the same wall clock)."""

    def wall(self) -> int:
        return time.time_ns() // 1000

    def mono(self) -> int:
        return time.monotonic_ns() // 1000

    def status(self) -> ClockStatus:
        return ClockStatus(ClockSource.NTP, 0, True)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def services(app: FastAPI) -> Any:
    return app.state.services


async def admin_token(app: FastAPI, device: str) -> str:
    issued = await services(app).registry.create_enrolment_token(device, None)
    return str(issued.token)


class Camera:
    """A device with a real evidence store, enrolled with the server through its API."""

    def __init__(
        self,
        root: Path,
        device: str,
        app: FastAPI | None,
        *,
        base_url: str = "http://server",
    ) -> None:
        self.root = root
        self.device = device
        self.app = app
        self.base_url = base_url
        self.clock = WallClock()
        self.store = EvidenceStore(DirectoryStorage(root), reserve=0)
        self.writer: ChainWriter | None = None
        self.client: httpx.AsyncClient | None = None
        self.wall = self.clock.wall() - 60_000_000
        self.mono = 1_000_000

    def transport(self) -> httpx.AsyncBaseTransport:
        if self.app is None:
            return httpx.AsyncHTTPTransport()
        return httpx.ASGITransport(app=self.app)

    async def enrol(self, token: str | None = None) -> None:
        if token is None:
            assert self.app is not None
            token = await admin_token(self.app, self.device)
        async with httpx.AsyncClient(transport=self.transport(), base_url=self.base_url) as c:
            await enrol_with_server(c, self.store, self.root, self.device, token)
        identity = load_identity(self.store, self.root, self.device)
        assert identity.api_token
        self.client = httpx.AsyncClient(
            transport=self.transport(),
            base_url=self.base_url,
            timeout=10,
            headers={"authorization": f"Bearer {identity.api_token}"},
        )
        scan = self.store.open_boot()
        self.writer = ChainWriter(
            self.device,
            Suite.CHACHA,
            identity.signer,
            identity.recipient,
            os.urandom(16),
            scan.next_seq,
            scan.prev,
        )

    def span(self, us: int = 0) -> Span:
        s = Span(self.wall, self.wall + us, self.mono, self.mono + us, CLOCK)
        self.wall += us
        self.mono += us
        return s

    def append(self, kind: RecordKind, body: dict[str, object]) -> None:
        assert self.writer is not None
        signed = self.writer.make(kind, self.span(), body)
        self.store.append(signed)
        self.writer.commit(signed)

    def open_session(self) -> None:
        assert self.writer is not None
        key = self.writer.start_session(self.wall)
        self.append(RecordKind.SESSION_OPEN, {"cert": key.certificate, "reason": "duty"})

    def segment(self, size: int = 3000) -> None:
        assert self.writer is not None
        seq = self.writer.next_seq
        sealed = self.writer.seal(os.urandom(size), seq)
        self.store.write_media(seq, sealed.data)
        ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
        signed = self.writer.make(RecordKind.SEGMENT, self.span(1_000_000), {"frames": 25}, ref)
        self.store.append(signed)
        self.writer.commit(signed)

    def close(self) -> None:
        self.append(RecordKind.SESSION_CLOSE, {"reason": "off_duty"})

    def syncer(self) -> Syncer:
        assert self.client is not None
        assert self.writer is not None
        return Syncer(self.client, self.device, self.store, self.writer, self.clock)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


@pytest.fixture
async def camera(tmp_path: Path, settings: Settings) -> AsyncIterator[Camera]:
    async with running(settings) as app:
        cam = Camera(tmp_path / "device", "cam-sync-1", app)
        await cam.enrol()
        try:
            yield cam
        finally:
            await cam.aclose()


def findings(path: Path, pin: str) -> tuple[str, set[str]]:
    report = verify_path(path, pin)
    return report.verdict, {f.code.value for f in report.findings}


async def test_agent_syncs_and_its_store_verifies(camera: Camera) -> None:
    pin = services(camera.app).keys.fingerprint
    camera.open_session()
    for _ in range(5):
        camera.segment()
    syncer = camera.syncer()
    await syncer.sync_once()
    # The receipts came with a checkpoint: it is now the anchor of the next records.
    assert camera.writer is not None
    assert camera.writer.anchor is not None
    for _ in range(3):
        camera.segment()
    camera.close()
    await syncer.sync_once()
    next_seq = camera.writer.next_seq
    assert syncer.state.last_receipt_seq == next_seq - 1
    assert syncer.state.clock_offset_us is not None
    assert abs(syncer.state.clock_offset_us) < 5_000_000
    for seq in range(next_seq):
        assert camera.store.has_receipt(seq, ReceiptKind.RECORD)
    assert camera.store.unreceipted_media() == []
    verdict, codes = findings(camera.root, pin)
    assert verdict == "authentic", codes
    assert "NOT_YET_LOGGED" not in codes
    head = ChainHead.model_validate_json(
        (await camera.client.get(f"{API_PREFIX}/devices/{camera.device}/head")).content  # type: ignore[union-attr]
    )
    assert head.next_seq == next_seq


async def test_sync_is_idempotent_and_resumes(camera: Camera) -> None:
    camera.open_session()
    for _ in range(4):
        camera.segment(size=700_000)  # more than one upload chunk each
    syncer = camera.syncer()
    await syncer.sync_once()
    receipts = {
        seq: (camera.root / layout.receipt_file(seq, "record")).read_bytes() for seq in range(5)
    }
    # The device lost its bookkeeping and sends everything again: same receipts, no fork.
    client = camera.client
    assert client is not None
    batch = RecordBatch(records=[b64e(camera.store.record_bytes(s)) for s in range(5)])
    answer = await client.post(
        f"{API_PREFIX}/devices/{camera.device}/records",
        content=batch.model_dump_json(),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    for outcome in answer.json()["outcomes"]:
        assert outcome["receipt"] is not None, outcome
        stored = camera.store.save_receipt(
            outcome["seq"], ReceiptKind.RECORD, b64d(outcome["receipt"])
        )
        assert stored.encoded == receipts[outcome["seq"]]
    # Media again, from offset 0 of a complete file: the server holds it whole already.
    progress = await client.get(f"{API_PREFIX}/devices/{camera.device}/media/1")
    assert progress.json()["complete"] is True
    assert progress.headers[TIME_HEADER].isdigit()
    # A new segment whose upload breaks half-way resumes from the server's offset.
    camera.segment(size=600_000)
    seq = 5
    data = camera.store.media_bytes(seq)
    assert data is not None
    batch = RecordBatch(records=[b64e(camera.store.record_bytes(seq))])
    await client.post(
        f"{API_PREFIX}/devices/{camera.device}/records",
        content=batch.model_dump_json(),
        headers={"content-type": "application/json"},
    )
    half = await client.put(
        f"{API_PREFIX}/devices/{camera.device}/media/{seq}",
        params={"offset": 0},
        content=data[:250_000],
        headers={"content-type": "application/octet-stream"},
    )
    assert half.status_code == 200, half.text
    assert half.json()["offset"] == 250_000
    assert not half.json()["complete"]
    wrong = await client.put(
        f"{API_PREFIX}/devices/{camera.device}/media/{seq}",
        params={"offset": 0},
        content=data[:1000],
        headers={"content-type": "application/octet-stream"},
    )
    assert wrong.status_code == 409
    assert wrong.json()["code"] == "offset_mismatch"
    await syncer.sync_once()  # the agent asks where to resume and finishes
    assert camera.store.unreceipted_media() == []


async def test_a_receipt_lost_in_transit_is_fetched_again(camera: Camera) -> None:
    """The server logged a batch but its answer never reached the medium (a power cut
    between the two): the next pass sends those records again and keeps their receipts."""
    camera.open_session()
    for _ in range(4):
        camera.segment()
    syncer = camera.syncer()
    await syncer.sync_once()
    kept = {s: (camera.root / layout.receipt_file(s, "record")).read_bytes() for s in (1, 3)}
    for seq in kept:
        (camera.root / layout.receipt_file(seq, "record")).unlink()
    camera.close()
    await syncer.sync_once()
    assert camera.writer is not None
    for seq in range(camera.writer.next_seq):
        assert camera.store.has_receipt(seq, ReceiptKind.RECORD), seq
    for seq, data in kept.items():
        assert (camera.root / layout.receipt_file(seq, "record")).read_bytes() == data


async def test_a_sync_pass_brings_the_newest_health_reading(camera: Camera) -> None:
    """Without a broker the server still learns the device's health, once per reading."""
    from protocol.events import Event, EventKind
    from server import models

    identity = load_identity(camera.store, camera.root, camera.device)
    readings = [
        Event(
            camera.device, b"b" * 16, n, EventKind.TELEMETRY, camera.wall, {"battery_permille": p}
        ).sign(identity.signer)
        for n, p in enumerate((910, 880))
    ]
    newest: list[bytes] = [readings[0]]
    camera.open_session()
    camera.segment()
    assert camera.client is not None
    assert camera.writer is not None
    syncer = Syncer(
        camera.client,
        camera.device,
        camera.store,
        camera.writer,
        camera.clock,
        health=lambda: newest[-1],
    )
    await syncer.sync_once()
    await syncer.sync_once()  # the same reading is not sent twice
    newest.append(readings[1])
    await syncer.sync_once()
    kept = await models.Event.filter(device=camera.device).order_by("n").values_list("n", flat=True)
    assert kept == [0, 1]
    state = await models.FleetState.get(device=camera.device)
    assert state.battery_permille == 880


async def test_other_devices_token_and_strangers_are_refused(camera: Camera) -> None:
    client = camera.client
    assert client is not None
    other = await client.get(f"{API_PREFIX}/devices/cam-other/head")
    assert other.status_code == 403
    assert other.json()["code"]
    transport = camera.transport()
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as anon:
        refused = await anon.get(f"{API_PREFIX}/devices/{camera.device}/head")
        assert refused.status_code == 401
        assert set(refused.json()) == {"v", "code", "message"}


async def test_export_of_the_synced_chain_verifies_and_tampering_fails(
    camera: Camera, tmp_path: Path
) -> None:
    pin = services(camera.app).keys.fingerprint
    camera.open_session()
    for _ in range(3):
        camera.segment()
    syncer = camera.syncer()
    await syncer.sync_once()
    for _ in range(2):
        camera.segment()
    camera.close()
    await syncer.sync_once()
    out = tmp_path / "bundle"
    await services(camera.app).exporter.export(
        ExportRequest(device=camera.device, openings=True), out
    )
    report = verify_path(out, pin)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    assert report.segments == 5
    media = out / layout.bundle_media(camera.device, 2)
    raw = bytearray(media.read_bytes())
    raw[100] ^= 1
    media.write_bytes(bytes(raw))
    assert verify_path(out, pin).verdict == "not_authentic"
