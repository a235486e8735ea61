"""The recorder: the one writer of the device chain.

Camera packets arrive through :meth:`Recorder.sink` into a bounded queue; the run loop cuts
them into segments, muxes, seals (HPKE), makes the media durable, signs the record and
appends it to the journal. Event records (session, incident, bookmark, notice, faults) go
through :meth:`Recorder.event`. A lock keeps every record in one order. Store operations
run on the event loop: they are short (one segment), and keeping them there keeps the order
of durable steps obvious and the simulator's virtual time exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.capture.mux import CONTENT_TYPE, mux_segment
from agent.capture.segmenter import RawSegment, Segmenter
from agent.capture.store import BootScan, EvidenceStore
from agent.errors import JournalAppendError, MediaFailingError, StorageFullError, StoreError
from agent.signing.chain import ChainWriter, Span
from hardware.base import Board, MediaPacket, StorageError
from protocol.record import ClockState, MediaRef, RecordKind, SignedRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """Segment and buffer settings."""

    segment_seconds: float = 1.0
    max_segment_seconds: float = 2.0
    preroll_seconds: float = 2.0
    #: Packets buffered between camera and writer: about 60 s of 25 fps video and audio.
    queue_packets: int = 4000


RecordListener = Callable[[SignedRecord], None]


class Recorder:
    """Owns the chain writer and the store; every record goes through here."""

    def __init__(
        self,
        board: Board,
        store: EvidenceStore,
        writer: ChainWriter,
        config: RecorderConfig | None = None,
    ) -> None:
        self.board = board
        self.store = store
        self.writer = writer
        self.config = config or RecorderConfig()
        self.segmenter = Segmenter(
            self.config.segment_seconds,
            self.config.max_segment_seconds,
            self.config.preroll_seconds,
        )
        # Bounded: if the writer falls 60 s behind, packets are refused and counted; the
        # count becomes a media_failing record. Evidence is never silently dropped.
        self._queue: asyncio.Queue[MediaPacket] = asyncio.Queue(self.config.queue_packets)
        self._lock = asyncio.Lock()
        self._listeners: list[RecordListener] = []
        self.overflowed = 0
        self.storage_full = False
        self.media_failing = False
        self.segments_written = 0

    # ------------------------------------------------------------------ plumbing
    def listen(self, listener: RecordListener) -> None:
        """Call ``listener`` with every record once it is durable."""
        self._listeners.append(listener)

    def sink(self, packet: MediaPacket) -> None:
        """Camera packet sink (runs on the event loop thread)."""
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.overflowed += 1

    def clock_state(self) -> ClockState:
        """The clock state to put in records."""
        status = self.board.clock.status()
        return ClockState(status.source.value, status.offset, status.synced)

    def now(self) -> Span:
        """A zero-length span at the present."""
        clock = self.board.clock
        return Span.instant(clock.wall(), clock.mono(), self.clock_state())

    @property
    def recording(self) -> bool:
        """Whether segments are being written."""
        return self.segmenter.recording

    # ------------------------------------------------------------------ records
    async def event(
        self, kind: RecordKind, body: Mapping[str, Any] | None = None, span: Span | None = None
    ) -> SignedRecord:
        """Write an event record (no media) and return it once durable."""
        async with self._lock:
            return self._append(kind, span or self.now(), body)

    def _append(
        self,
        kind: RecordKind,
        span: Span,
        body: Mapping[str, Any] | None,
        media: MediaRef | None = None,
    ) -> SignedRecord:
        signed = self.writer.make(kind, span, body, media)
        try:
            self.store.append(signed)
        except JournalAppendError as exc:
            # Its seq is spent whether or not it reached the medium: the chain goes on
            # from it (a verifier sees it, or sees it missing), never a second record
            # under the same seq. The failure is the next record, in a new journal.
            self.writer.commit(signed)
            if kind is not RecordKind.MEDIA_FAILING:
                self._media_failing(str(exc))
            else:
                log.critical("cannot even record the media failure: %s", exc)
        else:
            self.writer.commit(signed)
        for listener in self._listeners:
            listener(signed)
        return signed

    async def open_session(self, reason: str, scan: BootScan | None = None) -> SignedRecord:
        """Open a session (new session key); after an unclean stop, write the recovery."""
        async with self._lock:
            span = self.now()
            previous = self.writer.session.session if self.writer.session else None
            key = self.writer.start_session(span.t0)
            body: dict[str, Any] = {"cert": key.certificate, "reason": reason}
            if previous is not None:
                body["prev_session"] = previous
            opened = self._append(RecordKind.SESSION_OPEN, span, body)
            if scan is not None and scan.needs_recovery:
                last = scan.last
                recovery = {
                    "last_seq": last.record.seq if last else -1,
                    "last_hash": scan.prev,
                    "prev_boot": last.record.boot if last else bytes(16),
                    "prev_session": last.record.session if last else bytes(16),
                    "torn": [t.to_cbor() for t in scan.torn],
                }
                if last is not None:
                    recovery["last_end"] = last.record.t1
                self._append(RecordKind.RECOVERY, span, recovery)
                log.warning(
                    "recovered from an unclean stop: last durable seq %s, %d torn item(s)",
                    recovery["last_seq"],
                    len(scan.torn),
                )
                scan.clean, scan.torn = True, []
            return opened

    async def close_session(self, reason: str) -> SignedRecord | None:
        """Close the open session (stopping recording first)."""
        if self.recording:
            await self.stop_recording()
        if self.writer.session is None:
            return None
        signed = await self.event(
            RecordKind.SESSION_CLOSE, {"reason": reason, "segments": self.segments_written}
        )
        self.writer.session = None
        return signed

    # ------------------------------------------------------------------ recording
    async def start_recording(self) -> None:
        """Start cutting segments (pre-roll first)."""
        for seg in self.segmenter.start():
            await self.write_segment(seg)

    async def stop_recording(self) -> None:
        """Stop cutting segments; the partial last segment is written."""
        await self.drain()
        seg = self.segmenter.stop(self.board.clock.mono())
        if seg is not None:
            await self.write_segment(seg)

    async def drain(self) -> None:
        """Process every packet already queued."""
        while not self._queue.empty():
            await self._take(self._queue.get_nowait())

    async def run(self) -> None:
        """Consume camera packets forever (cancel to stop)."""
        while True:
            await self._take(await self._queue.get())

    async def _take(self, packet: MediaPacket) -> None:
        seg = self.segmenter.feed(packet)
        if seg is not None:
            await self.write_segment(seg)
        if self.overflowed:
            lost, self.overflowed = self.overflowed, 0
            await self.event(
                RecordKind.MEDIA_FAILING,
                {"detail": f"capture queue full: {lost} packet(s) refused"},
            )

    async def write_segment(self, seg: RawSegment) -> SignedRecord | None:
        """Mux, seal, store and sign one segment; None if storage could not take it."""
        data = mux_segment(seg.packets, self.board.camera.config)
        async with self._lock:
            if self.storage_full and not self._space_returned(len(data)):
                return None
            seq = self.writer.next_seq
            sealed = self.writer.seal(data, seq)
            try:
                self.store.write_media(seq, sealed.data)
            except StorageFullError:
                self._release_for(len(sealed.data))
                try:
                    self.store.write_media(seq, sealed.data)
                except StorageFullError:
                    self._storage_full()
                    return None
            except MediaFailingError as exc:
                self._media_failing(str(exc))
                return None
            except (StorageError, StoreError) as exc:
                self._media_failing(f"media write failed: {exc}")
                return None
            span = Span(seg.t0, seg.t1, seg.m0, seg.m1, self.clock_state())
            ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, CONTENT_TYPE)
            body: dict[str, Any] = {"frames": seg.frames}
            if seg.preroll:
                body["preroll"] = True
            signed = self._append(RecordKind.SEGMENT, span, body, ref)
            self.segments_written += 1
            return signed

    async def photo(self, jpeg: bytes, label: str | None = None) -> SignedRecord | None:
        """Seal and record a still photo (a key step when video cannot cover everything)."""
        async with self._lock:
            seq = self.writer.next_seq
            sealed = self.writer.seal(jpeg, seq)
            try:
                self.store.write_media(seq, sealed.data)
            except (StoreError, StorageError) as exc:
                self._media_failing(f"photo not stored: {exc}")
                return None
            ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "image/jpeg")
            return self._append(
                RecordKind.PHOTO, self.now(), {"label": label} if label else {}, ref
            )

    # ------------------------------------------------------------------ faults
    def _release_for(self, need: int) -> None:
        freed = self.store.release_oldest(need)
        if freed:
            log.info("released %d bytes of receipted media to make room", freed)

    def _space_returned(self, need: int) -> bool:
        self._release_for(need)
        if self.store.free() < need:
            return False
        state = self.board.storage.state()
        self._append(
            RecordKind.STORAGE_RESUMED, self.now(), {"free": state.free, "total": state.total}
        )
        self.storage_full = False
        log.info("storage has room again: recording resumes")
        return True

    def _storage_full(self) -> None:
        if self.storage_full:
            return
        self.storage_full = True
        state = self.board.storage.state()
        self._append(
            RecordKind.STORAGE_FULL, self.now(), {"free": state.free, "total": state.total}
        )
        log.error("storage full: recording paused until receipted media can be released")

    def _media_failing(self, detail: str) -> None:
        self.media_failing = True
        log.error("evidence medium failing: %s", detail)
        try:
            self._append(RecordKind.MEDIA_FAILING, self.now(), {"detail": detail[:500]})
        except (StorageError, StoreError) as exc:
            log.critical("cannot even record the media failure: %s", exc)
