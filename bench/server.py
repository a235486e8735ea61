"""``unbroken bench server``: the sync server's ingest, in-process, against a straight-line
baseline doing the per-record work the protocol requires, in the same run.

Devices with real keys (:class:`agent.signing.chain.ChainWriter`, enrolled through the
server's ``/enrol``) record a session of segments beforehand: a session-open record with
its session certificate, ``segments`` segment records with HPKE-sealed media of
``media_kb`` kB, a close record. Then two sides ingest the same records, taking turns:

* the *server*: the app of :func:`server.run.embedded` (FastAPI, tortoise, the log
  writer, the blob store) reached through its ASGI transport, no socket. Each turn every
  device posts its next batch of ``batch`` records at once (as syncing devices do), then,
  in the media phase, uploads its next media file with one ``PUT``;
* the *baseline*: the same work as straight-line code with the same primitives and the
  same durable steps. Records: decode the COSE_Sign1 (``cbor2``), check the link to the
  device's head, verify the session certificate against the device key and the device
  certificate against the root on a session open, verify every record's Ed25519
  signature, append the record hash to a Merkle tree (:class:`protocol.log.MemoryTree`),
  sign one checkpoint per turn and one receipt per record (with its inclusion path), and
  insert the record rows in one transaction per turn, committed durably (SQLite with
  ``synchronous=FULL``, or PostgreSQL), as the server's log writer commits the batches
  that arrive together. Media: write the body to a part file, fsync it and its folder,
  read it back through SHA-256 against the record's hash and length, link it into a
  content-addressed blob folder and fsync that folder, sign the media receipt and insert
  its row, committed.

What the baseline leaves out is the server's own machinery: HTTP and JSON (base64 of every
record), authentication, strict canonical decoding, the chain-head snapshot and re-check,
the ORM, the queue to the log writer, background tasks (coverage, metrics). The ratio is
server over baseline: the share of the protocol's necessary speed the server keeps.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import cbor2
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.signing.chain import ChainWriter, Span
from bench import BenchError
from bench.files import write_new_fsynced
from bench.report import Measurement, Stepped, median
from protocol.api import API_PREFIX, Enrolment, EnrolRequest, RecordBatch, b64d, b64e, enrol_message
from protocol.certs import RootKey, TrustStore
from protocol.hashing import sha256, sha256_stream
from protocol.keys import SoftwareSigner
from protocol.log import MemoryTree
from protocol.record import ClockState, MediaRef, RecordKind, SignedRecord, Suite
from server.blobs.local import fsync_dir
from server.run import embedded
from server.settings import Settings

JSON = {"content-type": "application/json"}
SEGMENT_US = 1_000_000


@dataclass
class _Device:
    """A device recorded beforehand: its records in order and the media of each."""

    name: str
    token: str
    cert: bytes
    records: list[SignedRecord] = field(default_factory=list)
    media: dict[int, bytes] = field(default_factory=dict)


async def _enrol(
    admin: httpx.AsyncClient, name: str, token: str
) -> tuple[Enrolment, SoftwareSigner]:
    signer = SoftwareSigner.generate()
    pk = signer.public_key
    request = EnrolRequest(
        device=name,
        token=token,
        public_key=b64e(pk),
        proof=b64e(signer.sign(enrol_message(token, name, pk))),
    )
    answer = await admin.post(
        f"{API_PREFIX}/enrol", content=request.model_dump_json(), headers=JSON
    )
    if answer.status_code != 200:
        raise BenchError(f"enrolment of {name} refused: HTTP {answer.status_code} {answer.text}")
    return Enrolment.model_validate_json(answer.content), signer


def _record(enrolment: Enrolment, signer: SoftwareSigner, segments: int, media: int) -> _Device:
    trust = TrustStore(RootKey.load(b64d(enrolment.root)))
    recipient = trust.add(b64d(enrolment.encryption_cert)).key
    chain = ChainWriter(enrolment.device, Suite.CHACHA, signer, recipient, os.urandom(16))
    device = _Device(enrolment.device, enrolment.api_token, b64d(enrolment.device_cert))
    clock = ClockState("ntp", 1200, True)
    wall, mono = time.time_ns() // 1000 - (segments + 60) * SEGMENT_US, 5_000_000

    def add(kind: RecordKind, duration: int, body: dict[str, Any], ref: MediaRef | None) -> None:
        nonlocal wall, mono
        span = Span(wall, wall + duration, mono, mono + duration, clock)
        wall, mono = wall + duration, mono + duration
        signed = chain.make(kind, span, body, ref)
        chain.commit(signed)
        device.records.append(signed)

    key = chain.start_session(wall)
    add(RecordKind.SESSION_OPEN, 0, {"cert": key.certificate, "reason": "duty"}, None)
    payload = os.urandom(media)
    for _ in range(segments):
        seq = chain.next_seq
        sealed = chain.seal(payload, seq)
        device.media[seq] = sealed.data
        ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
        add(RecordKind.SEGMENT, SEGMENT_US, {"frames": 25}, ref)
    add(RecordKind.SESSION_CLOSE, 0, {"reason": "off_duty"}, None)
    return device


# --------------------------------------------------------------------------- the server


class _ServerSide:
    """Devices talking to the embedded server through its ASGI transport."""

    def __init__(self, base: httpx.AsyncClient, devices: list[_Device]) -> None:
        self.devices = devices
        self.clients = [
            httpx.AsyncClient(
                transport=base._transport,
                base_url=base.base_url,
                headers={"authorization": f"Bearer {d.token}"},
                timeout=120,
            )
            for d in devices
        ]

    async def records(self, batches: list[list[SignedRecord]]) -> None:
        async def post(
            client: httpx.AsyncClient, device: _Device, batch: list[SignedRecord]
        ) -> None:
            body = RecordBatch(records=[b64e(s.encoded) for s in batch]).model_dump_json()
            answer = await client.post(
                f"{API_PREFIX}/devices/{device.name}/records", content=body, headers=JSON
            )
            if answer.status_code != 200:
                raise BenchError(f"the server refused a batch: {answer.status_code} {answer.text}")
            outcomes = answer.json()["outcomes"]
            if sum(1 for o in outcomes if o.get("receipt")) != len(batch):
                raise BenchError(f"the server did not receipt every record: {answer.text[:500]}")

        await asyncio.gather(
            *(post(c, d, b) for c, d, b in zip(self.clients, self.devices, batches, strict=True))
        )

    async def media(self, seqs: list[int]) -> None:
        async def put(client: httpx.AsyncClient, device: _Device, seq: int) -> None:
            answer = await client.put(
                f"{API_PREFIX}/devices/{device.name}/media/{seq}",
                params={"offset": 0},
                content=device.media[seq],
            )
            if answer.status_code != 200 or not answer.json().get("complete"):
                raise BenchError(f"the server did not take media {seq}: {answer.text[:300]}")

        await asyncio.gather(
            *(put(c, d, s) for c, d, s in zip(self.clients, self.devices, seqs, strict=True))
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


# --------------------------------------------------------------------------- the baseline


class _Database:
    """Where the baseline commits: a SQLite file (WAL, synchronous=FULL) or PostgreSQL."""

    SCHEMA = (
        "CREATE TABLE records (device TEXT, seq BIGINT, digest BYTEA, encoded BYTEA,"
        " idx BIGINT, receipt BYTEA, media_hash BYTEA, media_len BIGINT,"
        " PRIMARY KEY (device, seq))",
        "CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, encoded BYTEA)",
        "CREATE TABLE media (device TEXT, seq BIGINT, blob TEXT, receipt BYTEA,"
        " PRIMARY KEY (device, seq))",
    )

    def __init__(self, sqlite_path: Path | None, pg: Any = None) -> None:
        self.pg = pg
        self.lite: sqlite3.Connection | None = None
        if sqlite_path is not None:
            self.lite = sqlite3.connect(sqlite_path, isolation_level=None)
            self.lite.execute("PRAGMA journal_mode=WAL")
            self.lite.execute("PRAGMA synchronous=FULL")

    async def create(self) -> None:
        for statement in self.SCHEMA:
            await self.run([(statement, ())])

    async def run(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run ``statements`` in one transaction and commit it durably."""
        if self.lite is not None:
            self.lite.execute("BEGIN")
            for sql, args in statements:
                self.lite.execute(sql.replace("BYTEA", "BLOB"), args)
            self.lite.execute("COMMIT")
            return
        async with self.pg.transaction():
            for sql, args in statements:
                await self.pg.execute(_numbered(sql), *args)

    async def one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.lite is not None:
            row = self.lite.execute(sql, args).fetchone()
        else:
            row = await self.pg.fetchrow(_numbered(sql), *args)
        if row is None:
            raise BenchError(f"baseline: no row for {args}")
        return tuple(row)

    async def close(self) -> None:
        if self.lite is not None:
            self.lite.close()
        if self.pg is not None:
            await self.pg.close()


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


def _cose(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    protected, _, payload, signature = cbor2.loads(data).value
    return cbor2.loads(protected)[4], payload, protected, signature


def _check(key: bytes, protected: bytes, payload: bytes, signature: bytes) -> None:
    message = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    Ed25519PublicKey.from_public_bytes(key).verify(signature, message)


class _Baseline:
    """The per-record and per-upload work the protocol requires, straight-line."""

    def __init__(self, work: Path, db: _Database, root: bytes, devices: list[_Device]) -> None:
        self.db = db
        self.root_key = cbor2.loads(_cose(root)[1])["key"]
        self.signer = SoftwareSigner.generate()
        self.protected = cbor2.dumps(
            {1: -8, 3: "application/vnd.unbroken.receipt+cbor", 4: self.signer.kid},
            canonical=True,
        )
        self.cp_protected = cbor2.dumps(
            {1: -8, 3: "application/vnd.unbroken.checkpoint+cbor", 4: self.signer.kid},
            canonical=True,
        )
        self.tree = MemoryTree()
        self.heads: dict[str, bytes | None] = {d.name: None for d in devices}
        self.session_keys: dict[str, bytes] = {}
        self.certs = {d.name: d.cert for d in devices}
        self.uploads, self.blobs = work / "uploads", work / "blobs"
        self.uploads.mkdir(parents=True)
        self.blobs.mkdir()

    def _sign(self, protected: bytes, body: dict[str, Any]) -> bytes:
        payload = cbor2.dumps(body, canonical=True)
        signature = self.signer.sign(
            cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
        )
        return bytes(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature])))

    async def records(self, batches: list[tuple[str, list[bytes]]]) -> None:
        placed: list[tuple[str, dict[str, Any], bytes, bytes, int]] = []
        for device, raws in batches:
            for raw in raws:
                _, payload, protected, signature = _cose(raw)
                record = cbor2.loads(payload)
                head = self.heads[device]
                if record["prev"] != (head or bytes(32)) or record["device"] != device:
                    raise BenchError(f"baseline: seq {record['seq']} does not link")
                if record["kind"] == "session_open":
                    _, dpayload, dprot, dsig = _cose(self.certs[device])
                    _check(self.root_key, dprot, dpayload, dsig)
                    _, cpayload, cprot, csig = _cose(record["body"]["cert"])
                    _check(cbor2.loads(dpayload)["key"], cprot, cpayload, csig)
                    self.session_keys[device] = cbor2.loads(cpayload)["key"]
                _check(self.session_keys[device], protected, payload, signature)
                digest = sha256(raw)
                self.heads[device] = digest
                placed.append((device, record, raw, digest, self.tree.append(digest)))
        size, now = self.tree.size, time.time_ns() // 1000
        checkpoint = self._sign(
            self.cp_protected,
            {"v": 1, "log": "bench", "size": size, "root": self.tree.root(), "time": now},
        )
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT INTO checkpoints VALUES (?, ?)", (size, checkpoint))
        ]
        for device, record, raw, digest, index in placed:
            receipt = self._sign(
                self.protected,
                {
                    "v": 1,
                    "kind": "record",
                    "device": device,
                    "seq": record["seq"],
                    "record": digest,
                    "time": now,
                    "index": index,
                    "checkpoint": checkpoint,
                    "path": self.tree.inclusion(index, size),
                },
            )
            media = record.get("media") or {}
            statements.append(
                (
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        device,
                        record["seq"],
                        digest,
                        raw,
                        index,
                        receipt,
                        media.get("hash"),
                        media.get("len"),
                    ),
                )
            )
        await self.db.run(statements)

    async def media(self, uploads: list[tuple[str, int, bytes]]) -> None:
        for device, seq, body in uploads:
            digest, expect, length = await self.db.one(
                "SELECT digest, media_hash, media_len FROM records WHERE device = ? AND seq = ?",
                (device, seq),
            )
            part = self.uploads / f"{device}.{seq}.part"
            write_new_fsynced(part, body)
            fsync_dir(self.uploads)
            with part.open("rb") as f:
                hashed, _ = sha256_stream(f, chunk=1 << 20)
            if hashed != bytes(expect) or part.stat().st_size != length:
                raise BenchError(f"baseline: media {seq} does not match its record")
            blob = self.blobs / hashed.hex()
            os.link(part, blob)
            fsync_dir(self.blobs)
            now = time.time_ns() // 1000
            receipt = self._sign(
                self.protected,
                {
                    "v": 1,
                    "kind": "media",
                    "device": device,
                    "seq": seq,
                    "record": bytes(digest),
                    "time": now,
                    "hash": bytes(expect),
                    "len": length,
                },
            )
            await self.db.run(
                [("INSERT INTO media VALUES (?, ?, ?, ?)", (device, seq, blob.name, receipt))]
            )
            part.unlink()


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class _Tally:
    rates: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0


async def _timed(tally: _Tally, count: int, work: Any) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    await work
    wall = time.perf_counter() - wall
    tally.rates.append(count / wall)
    tally.wall += wall
    tally.cpu += time.process_time() - cpu


async def _pg_database(url: str) -> tuple[str, str]:
    """Make a fresh database on the server of ``url``; return (its URL, its name)."""
    name = f"unbroken_bench_{uuid.uuid4().hex[:12]}"
    admin_url = url.replace("postgres://", "postgresql://", 1)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}", name


async def _pg_drop(url: str, name: str) -> None:
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _run(
    work: Path,
    devices: int,
    segments: int,
    batch: int,
    media_kb: int,
    database_url: str | None,
    stepped: Stepped | None,
) -> tuple[_Tally, _Tally, _Tally, _Tally, dict[str, Any]]:
    server_url = base_url = None
    made: list[str] = []
    if database_url is not None:
        server_url, name = await _pg_database(database_url)
        made.append(name)
        base_url, name = await _pg_database(database_url)
        made.append(name)
    try:
        settings = Settings(data=work / "server", database_url=server_url)
        async with embedded(settings) as srv, srv.admin_client() as admin:
            fleet: list[_Device] = []
            for i in range(devices):
                name = f"bench-srv-{i:03d}"
                enrolment, signer = await _enrol(admin, name, await srv.enrolment_token(name))
                fleet.append(_record(enrolment, signer, segments, media_kb * 1000))
            root = b64d(enrolment.root)
            if base_url is not None:
                pg_url = base_url.replace("postgres://", "postgresql://", 1)
                db = _Database(None, await asyncpg.connect(pg_url))
            else:
                db = _Database(work / "baseline.sqlite")
            await db.create()
            server = _ServerSide(admin, fleet)
            baseline = _Baseline(work / "baseline", db, root, fleet)
            rec = (_Tally(), _Tally())
            med = (_Tally(), _Tally())
            try:
                total = len(fleet[0].records)
                turns = range(0, total, batch)
                for turn, at in enumerate(turns):
                    parts = [d.records[at : at + batch] for d in fleet]
                    count = sum(len(p) for p in parts)
                    raws = [
                        (d.name, [s.encoded for s in p]) for d, p in zip(fleet, parts, strict=True)
                    ]
                    order = (0, 1) if turn % 2 == 0 else (1, 0)
                    for index in order:
                        work_ = server.records(parts) if index == 0 else baseline.records(raws)
                        await _timed(rec[index], count, work_)
                    if stepped is not None:
                        stepped("records", turn + 1, len(turns))
                seqs = sorted(fleet[0].media)
                for turn, seq in enumerate(seqs):
                    order = (0, 1) if turn % 2 == 0 else (1, 0)
                    for index in order:
                        if index == 0:
                            work_ = server.media([seq] * len(fleet))
                        else:
                            work_ = baseline.media([(d.name, seq, d.media[seq]) for d in fleet])
                        await _timed(med[index], len(fleet), work_)
                    if stepped is not None:
                        stepped("media", turn + 1, len(seqs))
            finally:
                await server.close()
                await db.close()
            info = {
                "log_batch_window_s": settings.log_batch_window,
                "database": "postgresql" if database_url else "sqlite",
                "records_per_device": total,
                "media_bytes": len(fleet[0].media[seqs[0]]) if seqs else 0,
            }
            return rec[0], rec[1], med[0], med[1], info
    finally:
        for name in made:
            assert database_url is not None
            await _pg_drop(database_url, name)


def run_server_bench(
    work: Path,
    *,
    devices: int = 4,
    segments: int = 600,
    batch: int = 64,
    media_kb: int = 100,
    database_url: str | None = None,
    stepped: Stepped | None = None,
) -> dict[str, Any]:
    """Records/s and media uploads/s of the embedded server against the baseline."""
    began = time.perf_counter()
    srv_rec, base_rec, srv_med, base_med, info = asyncio.run(
        _run(work, devices, segments, batch, media_kb, database_url, stepped)
    )
    n_records = devices * info["records_per_device"]
    records = Measurement(
        "records",
        "records/s",
        median(srv_rec.rates),
        median(base_rec.rates),
        details={
            "records": n_records,
            "turns": len(srv_rec.rates),
            "server_overall": round(n_records / srv_rec.wall, 1),
            "baseline_overall": round(n_records / base_rec.wall, 1),
            "cpu_ratio": round(base_rec.cpu / srv_rec.cpu, 4),
        },
    )
    n_media = devices * segments
    media = Measurement(
        "media",
        "uploads/s",
        median(srv_med.rates),
        median(base_med.rates),
        details={
            "uploads": n_media,
            "media_bytes": info["media_bytes"],
            "turns": len(srv_med.rates),
            "server_overall": round(n_media / srv_med.wall, 1) if srv_med.wall else 0,
            "baseline_overall": round(n_media / base_med.wall, 1) if base_med.wall else 0,
            "cpu_ratio": round(base_med.cpu / srv_med.cpu, 4) if srv_med.cpu else 0,
        },
    )
    return {
        "bench": "server",
        "unit": records.unit,
        "figure": round(records.figure, 3),
        "baseline": round(records.baseline, 3),
        "ratio": round(records.ratio, 4),
        "parameters": {
            "devices": devices,
            "segments": segments,
            "batch": batch,
            "media_kb": media_kb,
            "database": info["database"],
            "log_batch_window_s": info["log_batch_window_s"],
        },
        "records": records.to_json(),
        "media": media.to_json(),
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
    }
