"""Media upload: resumable by offset, checked against its record, stored write-once.

A device first sends the record (which vouches for the ciphertext hash and length), then
the media in chunks: ``PUT ...?offset=N`` appends to a partial file under
``{data}/uploads``, fsynced before the new offset is answered; ``GET`` tells where to
resume. When the file is whole its SHA-256 and length are checked against the record; it
then goes to the blob store (durable), then the database row is committed, then the
media receipt is answered: the order of ARCHITECTURE §5.

After a crash, :meth:`MediaUploads.reconcile` finds blobs without a database row: a blob
that a record vouches for gets its row and receipt (the interrupted commit is completed);
a blob nothing vouches for is registered as an orphan and alerted, never deleted. A
partial file that does not hash right is moved aside to ``uploads/rejected`` (kept) and the
device starts that media again from offset 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from protocol.api import MediaProgress, b64e
from protocol.checkpoint import Receipt, ReceiptKind
from protocol.hashing import sha256_stream
from protocol.keys import Signer
from server import models
from server.alerts import AlertKind, Severity, raise_alert
from server.blobs import BlobStore
from server.blobs.local import fsync_dir, make_dirs
from server.db import IntegrityError
from server.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StorageError,
    TooLargeError,
)

log = logging.getLogger(__name__)

Clock = Callable[[], int]


class MediaUploads:
    """Partial uploads, the completion check and the media receipts."""

    def __init__(
        self,
        upload_dir: Path,
        blobs: BlobStore,
        signer: Signer,
        clock: Clock,
        max_media: int,
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self.upload_dir = upload_dir
        self.blobs = blobs
        self.signer = signer
        self.clock = clock
        self.max_media = max_media
        self.on_stored = on_stored
        # Held by every request on one media file; gone when none is (weak values).
        self._locks: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.stored = 0
        self.rejected = 0

    def _part(self, device: str, seq: int) -> Path:
        return self.upload_dir / device / f"{seq:012d}.part"

    async def _record(self, device: str, seq: int) -> models.Record:
        dev = await models.Device.get_or_none(id=device)
        if dev is None:
            raise NotFoundError(f"unknown device {device!r}")
        record = await models.Record.get_or_none(device=device, seq=seq)
        if record is None:
            if dev.revoked is not None:
                raise ForbiddenError(f"{device} is revoked", code="device_revoked")
            raise NotFoundError(
                f"no record {seq} of {device}: send the record before its media",
                code="record_unknown",
            )
        # A revoked device's records in the log were all logged before its revocation
        # (later ones go to quarantine): their media is evidence, bound by the record's
        # hash, and is still taken (FAULTS 13: nothing of it silently dropped).
        if record.media_hash is None or record.media_len is None:
            raise BadRequestError(f"record {seq} of {device} has no media", code="no_media")
        if record.media_len > self.max_media:
            raise TooLargeError(
                f"media of {record.media_len} bytes exceeds the limit of {self.max_media}"
            )
        return record

    async def progress(self, device: str, seq: int) -> MediaProgress:
        """Where an upload stands (``GET``)."""
        record = await self._record(device, seq)
        assert record.media_len is not None
        done = await models.Media.get_or_none(device=device, seq=seq)
        if done is not None:
            return _complete(record.media_len, seq, bytes(done.receipt))
        held = await asyncio.to_thread(_size, self._part(device, seq))
        return MediaProgress(seq=seq, offset=held, length=record.media_len, complete=False)

    async def put(
        self, device: str, seq: int, offset: int, body: AsyncIterator[bytes]
    ) -> MediaProgress:
        """Append the bytes of ``body`` at ``offset`` (``PUT``); complete the media when whole."""
        record = await self._record(device, seq)
        length = record.media_len
        assert length is not None
        lock = self._locks.setdefault((device, seq), asyncio.Lock())
        async with lock:
            done = await models.Media.get_or_none(device=device, seq=seq)
            if done is not None:
                return _complete(length, seq, bytes(done.receipt))
            part = self._part(device, seq)
            held = await asyncio.to_thread(_size, part)
            if offset != held:
                raise ConflictError(
                    f"the server holds {held} bytes of media {seq}; resume at offset {held}",
                    code="offset_mismatch",
                )
            held = await self._append(part, held, length, body)
            if held < length:
                return MediaProgress(seq=seq, offset=held, length=length, complete=False)
            return await self._complete(record, part)

    async def _append(self, part: Path, held: int, length: int, body: AsyncIterator[bytes]) -> int:
        """Write the body after ``held`` bytes; fsync; return the new size."""
        await asyncio.to_thread(make_dirs, part.parent, self.upload_dir.parent)
        created = held == 0 and not await asyncio.to_thread(part.exists)
        f = await asyncio.to_thread(part.open, "ab")
        start = held
        try:
            async for chunk in body:
                if held + len(chunk) > length:
                    await asyncio.to_thread(f.truncate, start)
                    raise TooLargeError(
                        f"media is {length} bytes; this upload goes past its end",
                        code="media_too_long",
                    )
                await asyncio.to_thread(f.write, chunk)
                held += len(chunk)
            await asyncio.to_thread(_sync, f)
        finally:
            f.close()
        if created:
            await asyncio.to_thread(fsync_dir, part.parent)
        return held

    async def _complete(self, record: models.Record, part: Path) -> MediaProgress:
        device, seq = record.device, record.seq
        assert record.media_hash is not None
        assert record.media_len is not None
        expect = bytes(record.media_hash)
        digest, size = await asyncio.to_thread(_hash_file, part)
        if digest != expect or size != record.media_len:
            self.rejected += 1
            kept = await asyncio.to_thread(self._set_aside, part)
            await raise_alert(
                f"media-mismatch:{device}:{seq}:{digest.hex()[:16]}",
                AlertKind.TAMPER,
                Severity.WARNING,
                f"media {seq} of {device} does not match its record (hash or length); "
                f"kept as {kept.name}, the device must upload it again",
                self.clock(),
                device,
                seq,
                seq,
            )
            raise ConflictError(
                f"media {seq} does not match the hash and length in its record; "
                "upload it again from offset 0",
                code="media_mismatch",
            )
        await self.blobs.put_file(digest.hex(), part)
        receipt = await self._commit(record)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(part.unlink)
        self.stored += 1
        if self.on_stored is not None:
            self.on_stored(device)
        return _complete(record.media_len, seq, receipt)

    async def _commit(self, record: models.Record) -> bytes:
        """The media row and its receipt (after the blob is durable)."""
        assert record.media_hash is not None
        assert record.media_len is not None
        now = self.clock()
        receipt = Receipt(
            ReceiptKind.MEDIA,
            record.device,
            record.seq,
            bytes(record.digest),
            now,
            media_hash=bytes(record.media_hash),
            media_len=record.media_len,
        ).sign(self.signer)
        try:
            await models.Media.create(
                device=record.device,
                seq=record.seq,
                record=bytes(record.digest),
                hash=bytes(record.media_hash),
                length=record.media_len,
                blob=bytes(record.media_hash).hex(),
                stored=now,
                receipt=receipt,
            )
        except IntegrityError:
            held = await models.Media.get(device=record.device, seq=record.seq)
            receipt = bytes(held.receipt)
        # No longer pending (coverage also ignores a pending row whose media is held, so a
        # crash between the two statements costs nothing).
        await models.PendingMedia.filter(device=record.device, seq=record.seq).delete()
        return receipt

    def _set_aside(self, part: Path) -> Path:
        rejected = self.upload_dir / "rejected"
        make_dirs(rejected, self.upload_dir.parent)
        target = rejected / f"{part.parent.name}-{part.stem}-{self.clock()}.part"
        os.replace(part, target)
        fsync_dir(rejected)
        fsync_dir(part.parent)
        return target

    async def reconcile(self) -> int:
        """At start: finish commits a crash interrupted; return how many.

        A crash between the blob store and the database commit leaves the partial file in
        place (it is removed only after the commit), so the partial files are all there is
        to look at: cheap, whatever the size of the store. A partial file whose media is
        committed is a left-over staging copy and is removed; one whose blob is stored
        gets its row and receipt now; any other resumes when the device comes back.
        """
        completed = 0
        for device, seq, part in await asyncio.to_thread(self._parts):
            if await models.Media.filter(device=device, seq=seq).exists():
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(part.unlink)
                continue
            record = await models.Record.get_or_none(device=device, seq=seq)
            if record is None or record.media_hash is None or record.media_len is None:
                continue
            if await self.blobs.size(bytes(record.media_hash).hex()) != record.media_len:
                continue
            await self._commit(record)
            completed += 1
            log.info("reconciled media %s of %s after a crash", seq, device)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(part.unlink)
        return completed

    async def find_orphans(self) -> int:
        """Walk the whole blob store for blobs no record vouches for (an operator's task).

        Each is registered and alerted, never deleted. A blob of a record without its media
        row (which :meth:`reconcile` handles at start) gets the row. Returns the number of
        new orphans. Reads every key: run it rarely, not at every start.
        """
        orphans = 0
        async for key in self.blobs.stored_keys():
            if await models.Media.filter(blob=key).exists():
                continue
            records = await models.Record.filter(media_hash=bytes.fromhex(key)).all()
            if records:
                for record in records:
                    if not await models.Media.filter(device=record.device, seq=record.seq).exists():
                        await self._commit(record)
                continue
            if await models.OrphanBlob.filter(blob=key).exists():
                continue
            size = await self.blobs.size(key) or 0
            with contextlib.suppress(IntegrityError):
                await models.OrphanBlob.create(blob=key, found=self.clock(), size=size)
            orphans += 1
            await raise_alert(
                f"orphan:{key}",
                AlertKind.ORPHAN_BLOB,
                Severity.WARNING,
                f"blob {key[:16]}… ({size} bytes) is stored but no record vouches for it; kept",
                self.clock(),
            )
        return orphans

    def _parts(self) -> list[tuple[str, int, Path]]:
        found: list[tuple[str, int, Path]] = []
        if not self.upload_dir.is_dir():
            return found
        for folder in self.upload_dir.iterdir():
            if not folder.is_dir() or folder.name == "rejected":
                continue
            for part in folder.glob("*.part"):
                if part.stem.isdigit():
                    found.append((folder.name, int(part.stem), part))
        return found


def _complete(length: int, seq: int, receipt: bytes) -> MediaProgress:
    return MediaProgress(
        seq=seq, offset=length, length=length, complete=True, receipt=b64e(receipt)
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def _hash_file(path: Path) -> tuple[bytes, int]:
    with path.open("rb") as f:
        return sha256_stream(f, chunk=1 << 20)
