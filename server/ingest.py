"""Record ingest: check what a device sends, append it to its chain and to the log, receipt it.

A batch is checked against a snapshot of the device's chain head (seq, prev, session key,
signatures, certificate chain): that is the CPU work, done by the request. What passes
goes to the :class:`LogWriter`, one long-lived task that groups the batches arriving
within a short window into one database transaction: it re-checks that each device head
is still the snapshot, appends the record digests to the transparency log, signs one
checkpoint, makes each record's receipt with its inclusion proof, and commits. Only after
the commit are the receipts returned: nothing is acknowledged before it is durable.

A record already held is answered with its stored receipt (idempotent). A record with a
seq already held but other content is a fork: refused, the held record marked, the other
kept in quarantine, and an alert raised. A revoked device's uploads are refused and kept
in quarantine, marked, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from protocol.api import RecordOutcome, RecordReceipts, b64e
from protocol.certs import RootKey, TrustStore
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.errors import ProtocolError
from protocol.hashing import ZERO_HASH, sha256
from protocol.keys import Signer, key_id
from protocol.record import RecordKind, SignedRecord
from server import models
from server.alerts import AlertKind, Severity, raise_alert
from server.db import Database, IntegrityError
from server.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RequestError,
    ServerError,
    StorageError,
    UnavailableError,
)
from server.translog import Appender, NodeReader

log = logging.getLogger(__name__)

Clock = Callable[[], int]
#: Batches waiting for the log writer. When full, a request waits for room (backpressure)
#: for up to SUBMIT_TIMEOUT seconds, then gets 503: a device retries later.
QUEUE_BATCHES = 64
#: Most batches committed in one transaction.
GROUP_BATCHES = 32
SUBMIT_TIMEOUT = 30.0
#: Records kept in quarantine per device before further material only raises an alert.
QUARANTINE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class ChainState:
    """A device chain head as the server holds it."""

    next_seq: int
    head: bytes | None
    session: bytes | None
    session_key: bytes | None


@dataclass(frozen=True, slots=True)
class Committed:
    """Receipts of a batch and the checkpoint they prove into."""

    receipts: list[bytes]
    checkpoint: bytes


@dataclass(slots=True)
class Batch:
    """Records that passed the checks, waiting for the log writer."""

    device: str
    before: ChainState
    after: ChainState
    records: list[SignedRecord]
    done: asyncio.Future[Committed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LogWriter:
    """The one task that appends to the log: group commit of record batches."""

    def __init__(
        self,
        db: Database,
        nodes: NodeReader,
        signer: Signer,
        log_name: str,
        clock: Clock,
        window: float,
    ) -> None:
        self.db = db
        self.nodes = nodes
        self.signer = signer
        self.log_name = log_name
        self.clock = clock
        self.window = window
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=QUEUE_BATCHES)
        # One log transaction at a time in this process; across replicas the log head row
        # is locked (SELECT ... FOR UPDATE) inside the transaction.
        self._lock = asyncio.Lock()
        self.running = False

    async def submit(self, batch: Batch) -> Committed:
        """Queue a batch and wait for its durable commit."""
        if not self.running:
            raise UnavailableError("the log writer is not running")
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT):
                await self._queue.put(batch)
        except TimeoutError as exc:
            raise UnavailableError("the server is saturated; retry later") from exc
        return await batch.done

    async def run(self) -> None:
        """Take batches, a window's worth at a time, and commit them together."""
        self.running = True
        group: list[Batch] = []
        try:
            while True:
                group = [await self._queue.get()]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.window
                while len(group) < GROUP_BATCHES:
                    remaining = deadline - loop.time()
                    try:
                        if remaining <= 0:
                            group.append(self._queue.get_nowait())
                        else:
                            async with asyncio.timeout(remaining):
                                group.append(await self._queue.get())
                    except (TimeoutError, asyncio.QueueEmpty):
                        break
                await self._commit_group(group)
        finally:
            self.running = False
            # Nothing waits forever: the group being committed (if cancelled) and the queue.
            while not self._queue.empty():
                group.append(self._queue.get_nowait())
            for pending in group:
                if not pending.done.done():
                    pending.done.set_exception(UnavailableError("the server is shutting down"))

    async def _commit_group(self, group: list[Batch]) -> None:
        try:
            async with self._lock:
                results, new_nodes = await self._transaction(group)
        except Exception as exc:  # every waiting request gets an answer, whatever failed
            log.exception("log commit failed")
            for batch in group:
                if not batch.done.done():
                    batch.done.set_exception(StorageError(f"the log commit failed: {exc}"))
            return
        self.nodes.remember(new_nodes)
        for batch in group:
            if batch.done.done():
                continue
            outcome = results.get(id(batch))
            if isinstance(outcome, Committed):
                batch.done.set_result(outcome)
            else:
                batch.done.set_exception(
                    outcome or ConflictError("chain head moved", code="head_moved")
                )

    async def _transaction(
        self, group: list[Batch]
    ) -> tuple[dict[int, Committed | RequestError], dict[int, bytes]]:
        results: dict[int, Committed | RequestError] = {}
        async with self.db.transaction():
            head = await models.LogHead.select_for_update().get(id=1)
            appender = Appender(head.size, await self.nodes.frontier(head.size))
            placed: list[tuple[Batch, list[int]]] = []
            for batch in group:
                device = await models.Device.select_for_update().get_or_none(id=batch.device)
                if device is None:
                    results[id(batch)] = NotFoundError(f"unknown device {batch.device!r}")
                    continue
                now_state = ChainState(
                    device.next_seq, device.head, device.session, device.session_key
                )
                if device.revoked is not None:
                    results[id(batch)] = ForbiddenError(
                        f"{batch.device} is revoked", code="device_revoked"
                    )
                    continue
                if now_state != batch.before:
                    results[id(batch)] = ConflictError(
                        f"the chain of {batch.device} moved while the batch was checked; "
                        "ask for the head and retry",
                        code="head_moved",
                    )
                    continue
                indices = [appender.append(s.digest) for s in batch.records]
                placed.append((batch, indices))
                device.next_seq = batch.after.next_seq
                device.head = batch.after.head
                device.session = batch.after.session
                device.session_key = batch.after.session_key
                await device.save(update_fields=["next_seq", "head", "session", "session_key"])
            if not placed:
                return results, {}
            size = appender.size
            await models.LogNode.bulk_create(
                [models.LogNode(key=k, hash=h) for k, h in appender.new.items()]
            )
            head.size = size
            await head.save(update_fields=["size"])
            now = self.clock()
            checkpoint = Checkpoint(self.log_name, size, appender.root, now).sign(self.signer)
            await models.Checkpoint.create(
                size=size, root=appender.root, time=now, encoded=checkpoint
            )
            all_indices = [i for _, indices in placed for i in indices]
            paths = await self.nodes.inclusions(all_indices, size, overlay=appender.new)
            path_of = dict(zip(all_indices, paths, strict=True))
            rows: list[models.Record] = []
            for batch, indices in placed:
                receipts: list[bytes] = []
                for signed, index in zip(batch.records, indices, strict=True):
                    rec = signed.record
                    receipt = Receipt(
                        ReceiptKind.RECORD,
                        rec.device,
                        rec.seq,
                        signed.digest,
                        now,
                        index=index,
                        checkpoint=checkpoint,
                        path=tuple(path_of[index]),
                    ).sign(self.signer)
                    receipts.append(receipt)
                    rows.append(record_row(signed, index, now, receipt))
                results[id(batch)] = Committed(receipts, checkpoint)
            await models.Record.bulk_create(rows, batch_size=500)
            pending = [
                models.PendingMedia(
                    device=r.device,
                    seq=r.seq,
                    t0=r.t0,
                    t1=r.t1,
                    session=r.session,
                    incident=r.incident,
                )
                for r in rows
                if r.kind == RecordKind.SEGMENT.value and r.media_hash is not None
            ]
            if pending:
                await models.PendingMedia.bulk_create(pending, batch_size=500)
        return results, appender.new

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[int]:
        """Hold the log still, inside a transaction; yields its size."""
        async with self._lock, self.db.transaction():
            head = await models.LogHead.select_for_update().get(id=1)
            yield head.size

    async def checkpoint(self) -> bytes | None:
        """The newest checkpoint, signing one first if the log grew without one."""
        async with self._lock, self.db.transaction():
            head = await models.LogHead.select_for_update().get(id=1)
            newest = await models.Checkpoint.all().order_by("-size").first()
            if newest is not None and newest.size == head.size:
                return bytes(newest.encoded)
            if head.size == 0 and newest is None:
                root = await self.nodes.root(0)
            else:
                root = await self.nodes.root(head.size)
            now = self.clock()
            encoded = Checkpoint(self.log_name, head.size, root, now).sign(self.signer)
            await models.Checkpoint.create(size=head.size, root=root, time=now, encoded=encoded)
            return encoded


def record_row(signed: SignedRecord, index: int, now: int, receipt: bytes) -> models.Record:
    """The database row of an accepted record."""
    rec = signed.record
    return models.Record(
        device=rec.device,
        seq=rec.seq,
        digest=signed.digest,
        encoded=signed.encoded,
        kind=rec.kind.value,
        session=rec.session,
        boot=rec.boot,
        t0=rec.t0,
        t1=rec.t1,
        m0=rec.m0,
        m1=rec.m1,
        officer=(rec.officer or None) and rec.officer[:200],
        incident=(rec.incident or None) and rec.incident[:200],
        case=(rec.case or None) and rec.case[:200],
        media_hash=rec.media.hash if rec.media else None,
        media_len=rec.media.length if rec.media else None,
        anchor_size=rec.anchor.size if rec.anchor else None,
        anchor_root=rec.anchor.root if rec.anchor else None,
        log_index=index,
        received=now,
        receipt=receipt,
    )


class RecordRefusedError(ServerError):
    """One record of a batch is refused; the ones after it are not processed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class IngestStats:
    """Counters for metrics."""

    segments_verified: int = 0
    segments_rejected: int = 0
    records_verified: int = 0
    records_rejected: int = 0
    duplicates: int = 0
    forks: int = 0


class RecordIngest:
    """Checks record batches and hands them to the log writer."""

    def __init__(
        self,
        writer: LogWriter,
        root: RootKey,
        clock: Clock,
        on_accepted: Callable[[str], None] | None = None,
        on_segments: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.writer = writer
        self.root = root
        self.clock = clock
        #: Called with the device after records of it were committed.
        self.on_accepted = on_accepted
        #: Called with (device, segments verified, segments rejected) after each batch.
        self.on_segments = on_segments
        self.stats = IngestStats()
        # One batch per device at a time; a lock lives while a request holds it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, device: str) -> asyncio.Lock:
        return self._locks.setdefault(device, asyncio.Lock())

    async def head(self, device: str) -> ChainState:
        """The device's chain head."""
        row = await models.Device.get_or_none(id=device)
        if row is None:
            raise NotFoundError(f"unknown device {device!r}")
        return ChainState(row.next_seq, row.head, row.session, row.session_key)

    async def ingest(self, device: str, raws: list[bytes]) -> RecordReceipts:
        """Check, log and receipt a batch of signed records of ``device``, in seq order."""
        return await self._ingest(device, raws)

    def _count(self, device: str, verified: int, rejected: int) -> None:
        # Counted per device where it happens: other devices' batches run concurrently.
        self.stats.segments_verified += verified
        self.stats.segments_rejected += rejected
        if self.on_segments is not None and (verified or rejected):
            self.on_segments(device, verified, rejected)

    async def _ingest(self, device: str, raws: list[bytes]) -> RecordReceipts:
        async with self._lock(device):
            row = await models.Device.get_or_none(id=device)
            if row is None:
                raise NotFoundError(f"unknown device {device!r}")
            if row.revoked is not None:
                await self._quarantine_revoked(row, raws)
                raise ForbiddenError(
                    f"{device} was revoked ({row.revoked_reason}); its uploads are kept in "
                    "quarantine and not logged",
                    code="device_revoked",
                )
            before = ChainState(row.next_seq, row.head, row.session, row.session_key)
            outcomes, accepted, after = await self._check(row, before, raws)
            checkpoint: bytes | None = None
            if accepted:
                batch = Batch(device, before, after, [signed for _, signed in accepted])
                try:
                    committed = await self.writer.submit(batch)
                except RequestError:
                    self.stats.records_rejected += len(accepted)
                    self._count(
                        device,
                        0,
                        sum(1 for _, s in accepted if s.record.kind is RecordKind.SEGMENT),
                    )
                    raise
                for (slot, signed), receipt in zip(accepted, committed.receipts, strict=True):
                    outcomes[slot] = RecordOutcome(seq=signed.record.seq, receipt=b64e(receipt))
                    self.stats.records_verified += 1
                self._count(
                    device,
                    sum(1 for _, s in accepted if s.record.kind is RecordKind.SEGMENT),
                    0,
                )
                checkpoint = committed.checkpoint
            else:
                newest = await models.Checkpoint.all().order_by("-size").first()
                checkpoint = bytes(newest.encoded) if newest else None
        if accepted and self.on_accepted is not None:
            self.on_accepted(device)
        return RecordReceipts(
            outcomes=outcomes, checkpoint=b64e(checkpoint) if checkpoint is not None else None
        )

    async def _check(
        self, row: models.Device, before: ChainState, raws: list[bytes]
    ) -> tuple[list[RecordOutcome], list[tuple[int, SignedRecord]], ChainState]:
        """Walk the batch in order; after the first refusal nothing more is processed."""
        outcomes: list[RecordOutcome] = []
        accepted: list[tuple[int, SignedRecord]] = []
        cursor = before
        failed: str | None = None
        for raw in raws:
            signed: SignedRecord | None = None
            try:
                signed = _parse(raw, row.id)
                seq = signed.record.seq
                if failed is not None:
                    outcomes.append(RecordOutcome(seq=seq, error=f"not processed: {failed}"))
                    continue
                if seq < before.next_seq:
                    receipt = await self._held(row, signed)
                    outcomes.append(RecordOutcome(seq=seq, receipt=b64e(receipt)))
                    self.stats.duplicates += 1
                    continue
                if seq != cursor.next_seq:
                    raise RecordRefusedError(
                        "out_of_order",
                        f"seq {seq} is out of order: the server expects seq {cursor.next_seq}",
                    )
                cursor = self._verify(row, cursor, signed)
            except RecordRefusedError as exc:
                seq = signed.record.seq if signed is not None else cursor.next_seq
                if failed is None:
                    failed = f"seq {seq} was refused"
                    outcomes.append(RecordOutcome(seq=seq, error=f"{exc.code}: {exc.message}"))
                else:
                    outcomes.append(RecordOutcome(seq=seq, error=f"not processed: {failed}"))
                self.stats.records_rejected += 1
                if signed is not None and signed.record.kind is RecordKind.SEGMENT:
                    self._count(row.id, 0, 1)
                continue
            accepted.append((len(outcomes), signed))
            outcomes.append(RecordOutcome(seq=seq))
        return outcomes, accepted, cursor

    def _verify(self, row: models.Device, cursor: ChainState, signed: SignedRecord) -> ChainState:
        """Check one record against the head; return the head after it."""
        rec = signed.record
        if rec.prev != (cursor.head or ZERO_HASH):
            raise RecordRefusedError(
                "chain_broken", f"seq {rec.seq} does not link to the record before it"
            )
        try:
            if rec.kind is RecordKind.SESSION_OPEN:
                cert_bytes = rec.body.get("cert")
                if not isinstance(cert_bytes, bytes):
                    raise RecordRefusedError("malformed", "session open without its certificate")
                trust = TrustStore(self.root)
                trust.add(bytes(row.cert))
                cert, _ = trust.session_certificate(cert_bytes, row.id)
                if cert.session != rec.session:
                    raise RecordRefusedError(
                        "uncertified_key", "the session certificate names another session"
                    )
                if signed.envelope.kid != cert.kid:
                    raise RecordRefusedError(
                        "uncertified_key", "the session open is not signed by its session key"
                    )
                signed.envelope.verify(cert.key)
                session, key = rec.session, cert.key
            else:
                if cursor.session is None or cursor.session_key is None:
                    raise RecordRefusedError(
                        "no_session", f"seq {rec.seq} comes before any session was opened"
                    )
                if rec.session != cursor.session:
                    raise RecordRefusedError(
                        "spliced", f"seq {rec.seq} belongs to a session that is not open"
                    )
                if signed.envelope.kid != key_id(cursor.session_key):
                    raise RecordRefusedError(
                        "uncertified_key", f"seq {rec.seq} is not signed by its session key"
                    )
                signed.envelope.verify(cursor.session_key)
                session, key = cursor.session, cursor.session_key
        except RecordRefusedError:
            raise
        except ProtocolError as exc:
            raise RecordRefusedError(_code_of(exc), str(exc)) from exc
        return replace(
            cursor, next_seq=rec.seq + 1, head=signed.digest, session=session, session_key=key
        )

    async def _held(self, row: models.Device, signed: SignedRecord) -> bytes:
        """The receipt of a record already held, or a fork."""
        seq = signed.record.seq
        held = await models.Record.get_or_none(device=row.id, seq=seq)
        if held is None:
            raise RecordRefusedError("missing", f"seq {seq} is below the head but not held")
        if bytes(held.digest) == signed.digest:
            return bytes(held.receipt)
        await self._fork(row, held, signed)
        raise RecordRefusedError(
            "fork",
            f"seq {seq} is already held with other content: both are quarantined "
            "and an alert is raised",
        )

    async def _fork(self, row: models.Device, held: models.Record, signed: SignedRecord) -> None:
        now = self.clock()
        seq = signed.record.seq
        self.stats.forks += 1
        if held.quarantine is None:
            held.quarantine = f"fork: another record claims seq {seq}"
            await held.save(update_fields=["quarantine"])
        with contextlib.suppress(IntegrityError):
            await models.Quarantine.create(
                device=row.id,
                seq=seq,
                digest=signed.digest,
                encoded=signed.encoded,
                reason=f"fork: differs from the logged record {bytes(held.digest).hex()[:16]}",
                received=now,
            )
        await raise_alert(
            f"fork:{row.id}:{seq}:{signed.digest.hex()[:16]}",
            AlertKind.FORK,
            Severity.CRITICAL,
            f"{row.id} sent a second, different record for seq {seq}: a fork "
            "(cloned key, tampered store or a device fault); both are kept in quarantine",
            now,
            row.id,
            seq,
            seq,
        )

    async def _quarantine_revoked(self, row: models.Device, raws: list[bytes]) -> None:
        now = self.clock()
        held = await models.Quarantine.filter(device=row.id).count()
        if held + len(raws) > QUARANTINE_LIMIT:
            await raise_alert(
                f"quarantine-full:{row.id}",
                AlertKind.REVOKED_UPLOAD,
                Severity.CRITICAL,
                f"revoked {row.id} keeps uploading; quarantine holds {held} records, "
                "further uploads are refused without being kept",
                now,
                row.id,
            )
            return
        kept: list[models.Quarantine] = []
        seqs: list[int] = []
        for raw in raws:
            seq: int | None = None
            try:
                signed = SignedRecord.parse(raw)
                seq = signed.record.seq
                digest = signed.digest
            except ProtocolError:
                digest = sha256(raw)
            if seq is not None:
                seqs.append(seq)
            kept.append(
                models.Quarantine(
                    device=row.id,
                    seq=seq,
                    digest=digest,
                    encoded=raw,
                    reason="uploaded after revocation",
                    received=now,
                )
            )
        await models.Quarantine.bulk_create(kept, ignore_conflicts=True)
        await raise_alert(
            f"revoked-upload:{row.id}",
            AlertKind.REVOKED_UPLOAD,
            Severity.CRITICAL,
            f"revoked {row.id} tried to upload; the records are kept in quarantine, marked",
            now,
            row.id,
            min(seqs, default=None),
            max(seqs, default=None),
        )


def _parse(raw: bytes, device: str) -> SignedRecord:
    try:
        signed = SignedRecord.parse(raw)
    except ProtocolError as exc:
        raise RecordRefusedError(_code_of(exc), f"malformed record: {exc}") from exc
    if signed.record.device != device:
        raise RecordRefusedError(
            "wrong_device", f"the record belongs to {signed.record.device!r}, not {device!r}"
        )
    return signed


def _code_of(exc: ProtocolError) -> str:
    name = type(exc).__name__.removesuffix("Error").lower()
    return {
        "version": "unknown_version",
        "algorithm": "algorithm",
        "signature": "bad_signature",
        "certificate": "uncertified_key",
        "decode": "malformed",
    }.get(name, "refused")
