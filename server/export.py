"""Export: a bundle of evidence in the protocol's format, for offline verification.

A bundle holds, per device, a contiguous range of its chain (extended back to the opening
of the session the range starts in, so that the session key is known), each record with
its inclusion proof into the newest checkpoint; the media as the device made it; optionally
the openings (salt and decrypted media, for a court); the trust material; every checkpoint
a record anchors to plus the final one, ascending, with consistency proofs between
consecutive ones; and the manifest, signed by the server key, written last.

Records are read a page at a time and media one file at a time, so memory stays flat
whatever the size of the export. File writes run in worker threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol import layout
from protocol.bundle import BundleExistsError, BundleWriter
from protocol.checkpoint import Checkpoint
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.manifest import ChainRange, Manifest
from protocol.media import open_sealed
from protocol.record import RecordKind, SignedRecord
from server import models
from server.blobs import BlobStore, read_all
from server.errors import BlobMissingError, ExportError, NotFoundError
from server.ingest import LogWriter
from server.keys import ServerKeys
from server.schemas import ExportDone, ExportRequest
from server.translog import NodeReader

log = logging.getLogger(__name__)

Clock = Callable[[], int]
PAGE = 500


@dataclass(frozen=True, slots=True)
class ChainSpan:
    """One device's part of an export: seqs ``seq_from..seq_to`` inclusive."""

    device: str
    seq_from: int
    seq_to: int


class Exporter:
    """Writes bundles from what the server holds."""

    def __init__(
        self,
        keys: ServerKeys,
        writer: LogWriter,
        nodes: NodeReader,
        blobs: BlobStore,
        log_name: str,
        exporter: str,
        clock: Clock,
    ) -> None:
        self.keys = keys
        self.writer = writer
        self.nodes = nodes
        self.blobs = blobs
        self.log_name = log_name
        self.exporter = exporter
        self.clock = clock

    async def export(self, request: ExportRequest, out: Path) -> ExportDone:
        """Write the bundle that ``request`` asks for into the new directory ``out``."""
        spans, scope = await self.spans(request)
        final_bytes = await self.writer.checkpoint()
        if final_bytes is None:
            raise ExportError("the log is empty")
        final, _ = Checkpoint.parse(final_bytes)
        try:
            bundle = await asyncio.to_thread(BundleWriter, out)
        except BundleExistsError as exc:
            raise ExportError(str(exc)) from exc
        except OSError as exc:
            raise ExportError(f"cannot write to {out}: {exc}") from exc
        await self._trust(bundle, spans)
        await self._log(bundle, spans, final)
        chains: list[ChainRange] = []
        records = media = 0
        for span in spans:
            chain, n_records, n_media = await self._chain(bundle, span, final, request.openings)
            chains.append(chain)
            records += n_records
            media += n_media
        manifest = Manifest(
            self.clock(),
            self.log_name,
            self.exporter,
            scope,
            tuple(chains),
            request.openings,
            bundle.files,
        ).sign(self.keys.server)
        await asyncio.to_thread(bundle.finish, manifest)
        log.info("exported %s: %d records, %d media files to %s", scope, records, media, out)
        return ExportDone(
            path=str(out),
            scope=scope,
            devices=[s.device for s in spans],
            records=records,
            media=media,
            checkpoint_size=final.size,
            fingerprint=self.keys.fingerprint,
        )

    # ------------------------------------------------------------------ scope
    async def spans(self, request: ExportRequest) -> tuple[list[ChainSpan], str]:
        """The chain ranges an export request covers, and a description of its scope."""
        if request.incident is not None:
            rows = (
                await models.Record.filter(incident=request.incident)
                .distinct()
                .values_list("device", flat=True)
            )
            spans = []
            for name in sorted({str(r) for r in rows}):
                seqs = models.Record.filter(device=name, incident=request.incident)
                low = await seqs.order_by("seq").first()
                high = await seqs.order_by("-seq").first()
                assert low is not None
                assert high is not None
                spans.append(await self._span(name, low.seq, high.seq))
            if not spans:
                raise NotFoundError(f"no records of incident {request.incident!r}")
            return spans, f"incident {request.incident}"
        device = request.device
        assert device is not None
        row = await models.Device.get_or_none(id=device)
        if row is None:
            raise NotFoundError(f"unknown device {device!r}")
        if row.next_seq == 0:
            raise NotFoundError(f"{device} has no records")
        last = row.next_seq - 1
        if request.start is not None or request.end is not None:
            query = models.Record.filter(device=device)
            if request.start is not None:
                query = query.filter(t1__gte=request.start)
            if request.end is not None:
                query = query.filter(t0__lte=request.end)
            low = await query.order_by("seq").first()
            high = await query.order_by("-seq").first()
            if low is None or high is None:
                raise NotFoundError(f"{device} has no records in that time range")
            scope = f"device {device} time {request.start}..{request.end}"
            return [await self._span(device, low.seq, high.seq)], scope
        seq_from = request.seq_from if request.seq_from is not None else 0
        seq_to = min(request.seq_to if request.seq_to is not None else last, last)
        if seq_from > seq_to:
            raise NotFoundError(f"{device} has no records in seq {seq_from}..{seq_to}")
        span = await self._span(device, seq_from, seq_to)
        return [span], f"device {device} seq {span.seq_from}..{span.seq_to}"

    @staticmethod
    async def _span(device: str, seq_from: int, seq_to: int) -> ChainSpan:
        """Extend the start back to the opening of its session."""
        opening = (
            await models.Record.filter(
                device=device, seq__lte=seq_from, kind=RecordKind.SESSION_OPEN.value
            )
            .order_by("-seq")
            .first()
        )
        start = opening.seq if opening is not None else 0
        return ChainSpan(device, start, seq_to)

    # ------------------------------------------------------------------ parts
    async def _trust(self, bundle: BundleWriter, spans: list[ChainSpan]) -> None:
        certs = [self.keys.server_cert, self.keys.encryption_cert]
        for span in spans:
            row = await models.Device.get(id=span.device)
            certs.append(bytes(row.cert))
        newest = await models.RevocationList.all().order_by("-id").first()
        revocations = bytes(newest.encoded) if newest is not None else None
        await asyncio.to_thread(bundle.trust, self.keys.root_cose, certs, revocations)

    async def _log(self, bundle: BundleWriter, spans: list[ChainSpan], final: Checkpoint) -> None:
        sizes: set[int] = {final.size}
        for span in spans:
            anchored = (
                await models.Record.filter(
                    device=span.device,
                    seq__gte=span.seq_from,
                    seq__lte=span.seq_to,
                    anchor_size__isnull=False,
                    anchor_size__lte=final.size,
                )
                .distinct()
                .values_list("anchor_size", flat=True)
            )
            sizes.update(int(str(s)) for s in anchored if s is not None)
        ordered = sorted(sizes)
        rows: list[models.Checkpoint] = []
        for start in range(0, len(ordered), 500):
            rows += await models.Checkpoint.filter(size__in=ordered[start : start + 500]).order_by(
                "size"
            )
        checkpoints = [bytes(r.encoded) for r in rows]
        proofs = []
        for a, b in itertools.pairwise([r.size for r in rows]):
            path = await self.nodes.consistency(a, b)
            proofs.append(layout.ConsistencyProof(a, b, tuple(path)).encode())
        await asyncio.to_thread(bundle.log, checkpoints, proofs)

    async def _chain(
        self, bundle: BundleWriter, span: ChainSpan, final: Checkpoint, openings: bool
    ) -> tuple[ChainRange, int, int]:
        await asyncio.to_thread(bundle.begin_chain, span.device)
        first_prev: bytes | None = None
        head = b""
        count = media = 0
        seq = span.seq_from
        while seq <= span.seq_to:
            page = (
                await models.Record.filter(device=span.device, seq__gte=seq, seq__lte=span.seq_to)
                .order_by("seq")
                .limit(PAGE)
            )
            if not page:
                break
            paths = await self.nodes.inclusions([r.log_index for r in page], final.size)
            stored = {
                m.seq: m
                for m in await models.Media.filter(
                    device=span.device, seq__in=[r.seq for r in page if r.media_hash is not None]
                )
            }
            for record, path in zip(page, paths, strict=True):
                encoded = bytes(record.encoded)
                if first_prev is None:
                    first_prev = SignedRecord.parse(encoded).record.prev
                proof = layout.LogProof(record.log_index, final.size, tuple(path))
                bundle.entry(layout.ChainEntry(encoded, proof))
                head = bytes(record.digest)
                count += 1
                held = stored.get(record.seq)
                if held is not None and await self._media(bundle, record, held, openings):
                    media += 1
            seq = page[-1].seq + 1
        await asyncio.to_thread(bundle.end_chain)
        if first_prev is None:
            raise ExportError(f"no records of {span.device} in {span.seq_from}..{span.seq_to}")
        chain = ChainRange(span.device, span.seq_from, seq - 1, first_prev, head, count)
        return chain, count, media

    async def _media(
        self, bundle: BundleWriter, record: models.Record, held: models.Media, openings: bool
    ) -> bool:
        try:
            data = await read_all(self.blobs, held.blob)
        except BlobMissingError:
            log.error(
                "media %s of %s is registered but not in the blob store", record.seq, held.device
            )
            return False
        if sha256(data) != bytes(held.hash):
            log.error("media %s of %s fails its fixity check", record.seq, held.device)
        opening: bytes | None = None
        if openings:
            rec = SignedRecord.parse(bytes(record.encoded)).record
            assert rec.media is not None
            try:
                salt, plain = await asyncio.to_thread(
                    open_sealed,
                    data,
                    self.keys.encryption,
                    rec.device,
                    rec.session,
                    rec.seq,
                    expect=rec.media.commitment,
                    suite=rec.suite,
                )
                opening = salt + plain
            except ProtocolError as exc:
                log.error("media %s of %s does not open: %s", rec.seq, rec.device, exc)
        await asyncio.to_thread(bundle.media, record.device, record.seq, data, opening)
        return True
