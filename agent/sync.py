"""Sync with the server: records first (tiny), then media, resumable and idempotent.

Each pass asks the server where the chain stands, uploads the records it lacks in
batches, keeps the signed receipts (each with an inclusion proof) and the newest
checkpoint (which becomes the anchor of the next records), then uploads media from the
offset the server already holds. Every response carries the server time, so the clock
offset is measured at every exchange. Failures back off with jitter; every wait has a
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from agent.capture.store import EvidenceStore
from agent.errors import StoreError, SyncError
from agent.signing.chain import ChainWriter
from hardware.base import Clock, StorageError
from protocol.api import (
    API_PREFIX,
    MAX_BATCH,
    TIME_HEADER,
    ChainHead,
    EventBatch,
    MediaProgress,
    RecordBatch,
    RecordReceipts,
    b64d,
    b64e,
)
from protocol.checkpoint import Checkpoint, ReceiptKind
from protocol.errors import ProtocolError
from protocol.record import Anchor

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


@dataclass(slots=True)
class SyncState:
    """What telemetry reports about sync."""

    last_receipt_seq: int = -1
    last_receipt_time: int = 0
    backlog_records: int = 0
    backlog_media: int = 0
    clock_offset_us: int | None = None
    clock_error_us: int = 0
    passes: int = 0
    failures: int = 0


class Syncer:
    """Uploads one device's store to the server."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        device: str,
        store: EvidenceStore,
        writer: ChainWriter,
        clock: Clock,
        *,
        interval: float = 5.0,
        health: Callable[[], bytes | None] | None = None,
    ) -> None:
        self.client = client
        self.device = device
        self.store = store
        self.writer = writer
        self.clock = clock
        self.interval = interval
        self.state = SyncState()
        self._wake = asyncio.Event()
        self._receipted_below = 0
        self.health = health
        self._health_sent: bytes | None = None

    def poke(self) -> None:
        """Something new to upload: sync soon."""
        self._wake.set()

    async def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        sent = self.clock.wall()
        try:
            async with asyncio.timeout(60):
                response = await self.client.request(method, API_PREFIX + path, **kwargs)  # type: ignore[arg-type]
        except (httpx.HTTPError, TimeoutError) as exc:
            raise SyncError(f"{method} {path}: {exc!r}") from exc
        received = self.clock.wall()
        server_time = response.headers.get(TIME_HEADER)
        if server_time and server_time.isdigit():
            # The midpoint estimate is off by at most half the round trip: keep both.
            self.state.clock_offset_us = (sent + received) // 2 - int(server_time)
            self.state.clock_error_us = max(0, received - sent) // 2
        if response.status_code >= 400:
            raise SyncError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response

    async def sync_once(self) -> None:
        """One pass: records, then media."""
        head = ChainHead.model_validate_json(
            (await self._call("GET", f"/devices/{self.device}/head")).content
        )
        local_next = self.writer.next_seq
        # Records the server holds but whose receipt never reached the medium (the answer was
        # lost to a power cut or a dropped connection) are sent again: the server answers a
        # record it holds with its stored receipt.
        for resend in _batches(self._unreceipted_below(min(head.next_seq, local_next))):
            await self._send_records(resend)
        seq = head.next_seq
        while seq < local_next:
            upto = min(local_next, seq + MAX_BATCH)
            await self._send_records(range(seq, upto))
            seq = upto
        self.state.backlog_records = 0
        pending = [s for s in self.store.unreceipted_media() if s < local_next]
        self.state.backlog_media = len(pending)
        for media_seq in pending:
            await self._upload_media(media_seq)
            self.state.backlog_media -= 1
        await self._send_health()
        self.state.passes += 1

    async def _send_health(self) -> None:
        """The newest signed telemetry, once, after the evidence (a convenience: a server
        that does not take it is no failure of the pass)."""
        latest = self.health() if self.health is not None else None
        if latest is None or latest == self._health_sent:
            return
        try:
            await self._call(
                "POST",
                f"/devices/{self.device}/events",
                content=EventBatch(events=[b64e(latest)]).model_dump_json(),
                headers={"content-type": "application/json"},
            )
        except SyncError as exc:
            log.info("health not taken by the server: %s", exc)
        self._health_sent = latest

    def _unreceipted_below(self, end: int) -> list[int]:
        """Seqs below ``end`` without a record receipt; remembers where all are receipted."""
        while self._receipted_below < end and self.store.has_receipt(
            self._receipted_below, ReceiptKind.RECORD
        ):
            self._receipted_below += 1
        return [
            s
            for s in range(self._receipted_below, end)
            if not self.store.has_receipt(s, ReceiptKind.RECORD)
        ]

    async def _send_records(self, seqs: Sequence[int]) -> None:
        batch = RecordBatch(records=[b64e(self.store.record_bytes(s)) for s in seqs])
        response = await self._call(
            "POST",
            f"/devices/{self.device}/records",
            content=batch.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        self._keep_receipts(RecordReceipts.model_validate_json(response.content))

    def _keep_receipts(self, answer: RecordReceipts) -> None:
        for outcome in answer.outcomes:
            if outcome.receipt is None:
                raise SyncError(f"server refused seq {outcome.seq}: {outcome.error}")
            try:
                receipt = self.store.save_receipt(
                    outcome.seq, ReceiptKind.RECORD, b64d(outcome.receipt)
                )
            except (StoreError, ValueError) as exc:
                raise SyncError(f"bad receipt for seq {outcome.seq}: {exc}") from exc
            self.state.last_receipt_seq = max(self.state.last_receipt_seq, receipt.seq)
            self.state.last_receipt_time = receipt.time
        if answer.checkpoint is not None:
            self._keep_checkpoint(b64d(answer.checkpoint))

    def _keep_checkpoint(self, data: bytes) -> None:
        trust = self.store.trust or self.store.load_trust()
        try:
            cp = Checkpoint.load(data, trust)
        except ProtocolError as exc:
            raise SyncError(f"checkpoint does not verify: {exc}") from exc
        if self.store.add_checkpoint(data, cp.size):
            self.writer.anchor = Anchor(cp.size, cp.root)

    async def _upload_media(self, seq: int) -> None:
        data = self.store.media_bytes(seq)
        if data is None:
            return
        path = f"/devices/{self.device}/media/{seq}"
        progress = MediaProgress.model_validate_json((await self._call("GET", path)).content)
        while not progress.complete:
            offset = progress.offset
            chunk = data[offset : offset + CHUNK]
            progress = MediaProgress.model_validate_json(
                (
                    await self._call(
                        "PUT",
                        path,
                        params={"offset": offset},
                        content=chunk,
                        headers={"content-type": "application/octet-stream"},
                    )
                ).content
            )
            if progress.offset <= offset and not progress.complete:
                raise SyncError(f"media {seq}: server made no progress at offset {offset}")
        if progress.receipt is None:
            raise SyncError(f"media {seq}: complete but no receipt")
        try:
            self.store.save_receipt(seq, ReceiptKind.MEDIA, b64d(progress.receipt))
        except (StoreError, ValueError) as exc:
            raise SyncError(f"bad media receipt for seq {seq}: {exc}") from exc

    async def run(self) -> None:
        """Sync forever: after each pass wait for new data or the interval; back off on error."""
        delay = 1.0
        while True:
            try:
                await self.sync_once()
                delay = 1.0
                wait = self.interval
            except (SyncError, ValidationError, ValueError, StoreError, StorageError) as exc:
                # A server (or a captive portal) answering nonsense is a failed pass too.
                self.state.failures += 1
                log.warning("sync failed (%s); retrying in %.0f s", exc, delay)
                wait = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, 300.0)
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep(wait))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()


def _batches(seqs: list[int]) -> list[list[int]]:
    """Runs of consecutive seqs, each at most a batch long."""
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][-1] == seq - 1 and len(out[-1]) < MAX_BATCH:
            out[-1].append(seq)
        else:
            out.append([seq])
    return out
