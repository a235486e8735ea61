"""The evidence store on the device: append-only, durable, never rewritten.

Layout (see :mod:`protocol.layout`): ``trust/`` (enrolment), ``journal/{boot}.log``
(one append-only journal per boot), ``media/{seq}.ubm`` (sealed media), ``receipts/``,
``log/checkpoints.cborseq``, ``torn/`` (torn writes kept after a crash), ``tmp/``.

Durability order of a segment: media to ``tmp/``, fsync, rename into ``media/``, fsync the
directory, read back and compare; then the record appended to the journal and fsynced.
Only then is anything acknowledged. A medium that fails an fsync is not retried: the
error goes up and the agent raises an alarm.

At boot :meth:`EvidenceStore.open_boot` scans what the last boot left: the last durable
record, torn journal tails, media written without a record, stray temporary files. The
leftovers are moved to ``torn/`` (never deleted) and listed for the recovery record.
Each earlier journal is parsed once; its summary in ``state/index/`` serves later boots.
"""

from __future__ import annotations

import bisect
import io
import logging
from array import array
from dataclasses import dataclass, field

from agent.errors import (
    DeletionRefusedError,
    EnrolmentError,
    JournalAppendError,
    MediaFailingError,
    StorageFullError,
    StoreError,
)
from hardware.base import Storage, StorageError
from protocol import layout
from protocol.cbor import bstr_item, decode, encode, iter_bstr_sequence
from protocol.certs import RootKey, TrustStore
from protocol.checkpoint import Receipt, ReceiptKind
from protocol.errors import ProtocolError
from protocol.hashing import ZERO_HASH, sha256
from protocol.journal import JournalScan
from protocol.record import RecordKind, SignedRecord

#: Room kept free for the records that close a session (close, storage full, recovery).
DEFAULT_RESERVE = 4 << 20
#: Summaries of earlier boots' journals (private state, not evidence).
INDEX_DIR = "state/index"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TornItem:
    """A torn write kept on the medium, as a recovery record names it."""

    name: str
    length: int
    hash: bytes

    def to_cbor(self) -> dict[str, object]:
        """The map inside a recovery record's ``torn`` list."""
        return {"name": self.name, "len": self.length, "hash": self.hash}


@dataclass(slots=True)
class BootScan:
    """What the previous boots left behind."""

    boot_index: int
    next_seq: int = 0
    prev: bytes = ZERO_HASH
    last: SignedRecord | None = None
    clean: bool = True
    torn: list[TornItem] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def needs_recovery(self) -> bool:
        """An unclean stop or unexplained torn writes call for a recovery record."""
        return not self.clean or bool(self.torn)


@dataclass(frozen=True, slots=True)
class Located:
    """Where a record sits in the journals."""

    path: str
    offset: int
    length: int


class _Run:
    """Consecutive seqs in one journal: offsets and lengths in flat arrays (12 bytes a
    record, where a dict of objects took about 190: months of journals stay small)."""

    __slots__ = ("first", "lengths", "offsets", "path")

    def __init__(self, path: str, first: int) -> None:
        self.path = path
        self.first = first
        self.offsets = array("Q")
        self.lengths = array("I")

    @property
    def end(self) -> int:
        return self.first + len(self.offsets)


class RecordIndex:
    """Where each seq's record is, for records read back (sync, export)."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._firsts: list[int] = []
        #: Seqs out of order (a damaged medium): kept aside, looked up first.
        self._odd: dict[int, Located] = {}

    def add(self, seq: int, where: Located) -> None:
        """Record where ``seq`` is (a later entry for the same seq wins)."""
        last = self._runs[-1] if self._runs else None
        if last is not None and last.path == where.path and seq == last.end:
            last.offsets.append(where.offset)
            last.lengths.append(where.length)
        elif last is None or seq >= last.end:
            run = _Run(where.path, seq)
            run.offsets.append(where.offset)
            run.lengths.append(where.length)
            self._runs.append(run)
            self._firsts.append(seq)
        else:
            self._odd[seq] = where

    def get(self, seq: int) -> Located | None:
        """Where ``seq`` is, or None."""
        odd = self._odd.get(seq)
        if odd is not None:
            return odd
        i = bisect.bisect_right(self._firsts, seq) - 1
        if i < 0:
            return None
        run = self._runs[i]
        if seq >= run.end:
            return None
        k = seq - run.first
        return Located(run.path, run.offsets[k], run.lengths[k])

    def __len__(self) -> int:
        return sum(len(r.offsets) for r in self._runs) + len(self._odd)


class _Summary:
    """What a scan of one journal found (see :meth:`EvidenceStore._scan_journal`)."""

    VERSION = 1

    def __init__(self) -> None:
        self.seqs = array("Q")
        self.offsets = array("Q")
        self.lengths = array("I")
        self.unreadable: list[int] = []
        self.explained: list[str] = []
        self.torn: TornItem | None = None
        self.last: tuple[int, int] | None = None

    def dump(self, digest: bytes) -> bytes:
        torn = self.torn
        return encode(
            {
                "v": self.VERSION,
                "journal": digest,
                "seqs": self.seqs.tobytes(),
                "offsets": self.offsets.tobytes(),
                "lengths": self.lengths.tobytes(),
                "unreadable": self.unreadable,
                "explained": self.explained,
                "torn": None if torn is None else [torn.name, torn.length, torn.hash],
                "last": None if self.last is None else list(self.last),
            }
        )

    @classmethod
    def load(cls, data: bytes, digest: bytes) -> _Summary:
        raw = decode(data, what="journal summary")
        if raw["v"] != cls.VERSION or raw["journal"] != digest:
            raise ValueError("of another version or another journal")
        out = cls()
        out.seqs.frombytes(raw["seqs"])
        out.offsets.frombytes(raw["offsets"])
        out.lengths.frombytes(raw["lengths"])
        if not len(out.seqs) == len(out.offsets) == len(out.lengths):
            raise ValueError("columns of different lengths")
        out.unreadable = [int(o) for o in raw["unreadable"]]
        out.explained = [str(n) for n in raw["explained"]]
        if raw["torn"] is not None:
            name, length, hashed = raw["torn"]
            out.torn = TornItem(str(name), int(length), bytes(hashed))
        if raw["last"] is not None:
            offset, length = raw["last"]
            out.last = (int(offset), int(length))
        return out


def _summarize(path: str, data: bytes) -> _Summary:
    """Parse every record of a journal."""
    out = _Summary()
    reader = JournalScan(io.BytesIO(data), path)
    for offset, item in reader.entries():
        try:
            signed = SignedRecord.parse(item)
        except ProtocolError:
            out.unreadable.append(offset)
            continue
        rec = signed.record
        head = len(bstr_item(item)) - len(item)
        out.seqs.append(rec.seq)
        out.offsets.append(offset + head)
        out.lengths.append(len(item))
        out.last = (offset + head, len(item))
        if rec.kind is RecordKind.RECOVERY:
            for torn in rec.body.get("torn", ()):
                if isinstance(torn, dict) or hasattr(torn, "get"):
                    name = torn.get("name")
                    if isinstance(name, str):
                        out.explained.append(name)
    if reader.torn is not None:
        t = reader.torn
        out.torn = TornItem(t.name, t.length, t.hash)
    return out


class EvidenceStore:
    """Evidence on one device's medium, through the :class:`Storage` interface."""

    def __init__(self, storage: Storage, *, reserve: int = DEFAULT_RESERVE) -> None:
        self.storage = storage
        self.reserve = reserve
        self.journal: str | None = None
        self._index = RecordIndex()
        self._journal_size = 0
        self.trust: TrustStore | None = None
        self._checkpoint_size = -1

    # ------------------------------------------------------------------ enrolment
    def enrolled(self) -> bool:
        """Whether trust material is present."""
        return self.storage.size(layout.ROOT_FILE) is not None

    def save_enrolment(self, root: bytes, certificates: list[bytes]) -> None:
        """Keep the root and the certificates received at enrolment (once)."""
        self.storage.makedirs("trust")
        self.storage.write_new(layout.ROOT_FILE, root)
        self.storage.write_new(layout.CERTS_FILE, b"".join(bstr_item(c) for c in certificates))
        self.storage.sync_dir("trust")
        self.load_trust()

    def load_trust(self) -> TrustStore:
        """Root and certificates as a trust store (checks every signature)."""
        try:
            root = RootKey.load(self.storage.read(layout.ROOT_FILE))
            trust = TrustStore(root)
            for cert in iter_bstr_sequence(self.storage.read(layout.CERTS_FILE)):
                trust.add(cert)
        except (ProtocolError, StorageError, OSError) as exc:
            raise EnrolmentError(f"enrolment material unusable: {exc}") from exc
        self.trust = trust
        return trust

    # ------------------------------------------------------------------ boot
    def open_boot(self) -> BootScan:
        """Scan previous boots, keep leftovers in ``torn/``, start this boot's journal."""
        for folder in (
            layout.JOURNAL_DIR,
            layout.STORE_MEDIA_DIR,
            layout.RECEIPTS_DIR,
            layout.TORN_DIR,
            "tmp",
            "log",
        ):
            self.storage.makedirs(folder)
        journals = [
            n
            for n in self.storage.listdir(layout.JOURNAL_DIR)
            if layout.parse_journal_name(n) is not None
        ]
        boot_index = (layout.parse_journal_name(journals[-1]) or 0) + 1 if journals else 0
        scan = BootScan(boot_index)
        explained: set[str] = set()
        tails: list[TornItem] = []
        for name in journals:
            path = f"{layout.JOURNAL_DIR}/{name}"
            self._scan_journal(path, scan, explained, tails)
        scan.clean = scan.last is None or scan.last.record.kind is RecordKind.SESSION_CLOSE
        kept = self._keep_leftovers(scan)
        scan.torn = [t for t in tails + kept if t.name not in explained]
        self.journal = layout.journal_file(boot_index)
        self._journal_size = 0
        return scan

    def _scan_journal(
        self, path: str, scan: BootScan, explained: set[str], tails: list[TornItem]
    ) -> None:
        """Index one journal of an earlier boot, from its summary when one matches.

        A journal is parsed record by record once, at the boot after it was written (about
        0.25 ms a record here): that boot keeps a summary of it (where each record is, what
        its recovery records explain, its torn tail) under ``state/index/``, named by the
        journal's SHA-256, so later boots read the summary instead of parsing months of
        journals again. A summary that is missing, unreadable or of other content is
        ignored and the journal parsed. Summaries are private state, not evidence.
        """
        data = self.storage.read(path)
        digest = sha256(data)
        summary_path = f"{INDEX_DIR}/{path.rsplit('/', 1)[-1]}-{digest.hex()[:32]}.cbor"
        summary = self._load_summary(summary_path, digest)
        if summary is None:
            summary = _summarize(path, data)
            self._save_summary(summary_path, digest, summary)
        for seq, offset, length in zip(summary.seqs, summary.offsets, summary.lengths, strict=True):
            self._index.add(seq, Located(path, offset, length))
        scan.unreadable.extend(f"{path}@{offset}" for offset in summary.unreadable)
        explained.update(summary.explained)
        if summary.torn is not None:
            tails.append(summary.torn)
        if summary.last is not None:
            offset, length = summary.last
            last = SignedRecord.parse(data[offset : offset + length])
            scan.last = last
            scan.next_seq = last.record.seq + 1
            scan.prev = last.digest

    def _load_summary(self, path: str, digest: bytes) -> _Summary | None:
        if self.storage.size(path) is None:
            return None
        try:
            return _Summary.load(self.storage.read(path), digest)
        except (ProtocolError, StorageError, KeyError, TypeError, ValueError) as exc:
            log.warning("journal summary %s unusable (%s); parsing the journal", path, exc)
            return None

    def _save_summary(self, path: str, digest: bytes, summary: _Summary) -> None:
        # Best effort: without it the next boot parses the journal again.
        try:
            self.storage.makedirs(INDEX_DIR)
            if self.storage.size(path) is None:
                self.storage.write_new(path, summary.dump(digest))
        except StorageError as exc:
            log.warning("journal summary %s not kept: %s", path, exc)

    def _keep_leftovers(self, scan: BootScan) -> list[TornItem]:
        """Move media without a record and stray temp files to ``torn/``; list all of torn/."""
        moved = False
        for name in self.storage.listdir(layout.STORE_MEDIA_DIR):
            seq = layout.parse_seq_name(name)
            if seq is not None and seq >= scan.next_seq:
                self.storage.rename(
                    f"{layout.STORE_MEDIA_DIR}/{name}",
                    f"{layout.TORN_DIR}/b{scan.boot_index:08d}-{name}",
                )
                moved = True
        for name in self.storage.listdir("tmp"):
            self.storage.rename(f"tmp/{name}", f"{layout.TORN_DIR}/b{scan.boot_index:08d}-{name}")
            moved = True
        if moved:
            self.storage.sync_dir(layout.TORN_DIR)
            self.storage.sync_dir(layout.STORE_MEDIA_DIR)
            self.storage.sync_dir("tmp")
        items = []
        for name in self.storage.listdir(layout.TORN_DIR):
            path = f"{layout.TORN_DIR}/{name}"
            data = self.storage.read(path)
            items.append(TornItem(path, len(data), sha256(data)))
        return items

    # ------------------------------------------------------------------ writing
    def free(self) -> int:
        """Bytes free beyond the reserve for closing records."""
        return self.storage.state().free - self.reserve

    def write_media(self, seq: int, data: bytes) -> None:
        """Make sealed media durable under its seq, then read it back.

        A failed write or fsync is not retried on the same file: the data is written once
        more under another temporary name (the failed file is kept and, at the next boot,
        moved to ``torn/``). A second failure goes up to the caller.
        """
        if self.storage.state().free - len(data) < self.reserve:
            raise StorageFullError("storage full: no room for media beyond the reserve")
        final = layout.store_media(seq)
        tmp = f"tmp/{seq:012d}.ubm"
        try:
            self.storage.write_new(tmp, data)
        except StorageError:
            tmp = f"tmp/{seq:012d}.retry.ubm"
            self.storage.write_new(tmp, data)
        self.storage.rename(tmp, final)
        self.storage.sync_dir(layout.STORE_MEDIA_DIR)
        self.storage.sync_dir("tmp")
        # Compared byte for byte: as strict as comparing two digests, and without hashing
        # the segment twice more (measured by `unbroken bench agent`).
        if self.storage.read(final) != data:
            raise MediaFailingError(f"{final} does not read back as written: medium failing")

    def append(self, signed: SignedRecord) -> None:
        """Append a signed record to this boot's journal and fsync it."""
        if self.journal is None:
            raise StoreError("open_boot() first")
        item = bstr_item(signed.encoded)
        created = self._journal_size == 0
        head = len(item) - len(signed.encoded)
        where = Located(self.journal, self._journal_size + head, len(signed.encoded))
        try:
            self.storage.append(self.journal, item)
            if created:
                self.storage.sync_dir(layout.JOURNAL_DIR)
        except StorageError as exc:
            # The record may be on the medium or not; a file whose fsync failed is not
            # appended to again (FAULTS 4): later records go to a new journal, and the
            # caller must not give this seq to another record.
            failed = self.journal
            self._index.add(signed.record.seq, where)
            index = layout.parse_journal_name(failed.rsplit("/", 1)[-1])
            self.journal = layout.journal_file((index or 0) + 1)
            self._journal_size = 0
            raise JournalAppendError(signed.record.seq, failed, exc) from exc
        self._index.add(signed.record.seq, where)
        self._journal_size += len(item)

    def record_bytes(self, seq: int) -> bytes:
        """The encoded signed record of ``seq``."""
        loc = self._index.get(seq)
        if loc is None:
            raise StoreError(f"no record {seq} in the store")
        data = self.storage.read_range(loc.path, loc.offset, loc.length)
        if len(data) != loc.length:
            raise StoreError(f"record {seq} is cut short in {loc.path}")
        return data

    def media_bytes(self, seq: int) -> bytes | None:
        """Sealed media of ``seq``, or None if released or never written."""
        path = layout.store_media(seq)
        return self.storage.read(path) if self.storage.size(path) is not None else None

    # ------------------------------------------------------------------ receipts
    def save_receipt(self, seq: int, kind: ReceiptKind, data: bytes) -> Receipt:
        """Check a server receipt and keep it (idempotent)."""
        trust = self.trust or self.load_trust()
        try:
            receipt = Receipt.load(data, trust)
        except ProtocolError as exc:
            raise StoreError(f"receipt for seq {seq} does not verify: {exc}") from exc
        if receipt.seq != seq or receipt.kind is not kind:
            raise StoreError(f"receipt is for seq {receipt.seq} {receipt.kind}, not {seq} {kind}")
        path = layout.receipt_file(seq, kind.value)
        if self.storage.size(path) is None:
            self.storage.write_new(path, data)
            self.storage.sync_dir(layout.RECEIPTS_DIR)
        return receipt

    def has_receipt(self, seq: int, kind: ReceiptKind) -> bool:
        """Whether a receipt is kept."""
        return self.storage.size(layout.receipt_file(seq, kind.value)) is not None

    def add_checkpoint(self, data: bytes, size: int) -> bool:
        """Keep a checkpoint received from the server if it is newer than the last one kept."""
        if size <= self._checkpoint_size:
            return False
        self.storage.append(layout.CHECKPOINTS_FILE, bstr_item(data))
        self._checkpoint_size = size
        return True

    def unreceipted_media(self) -> list[int]:
        """Seqs whose media is on the medium without a media receipt yet, oldest first."""
        receipted = {
            n.split(".", 1)[0]
            for n in self.storage.listdir(layout.RECEIPTS_DIR)
            if n.endswith(".media.cose")
        }
        out = []
        for name in self.storage.listdir(layout.STORE_MEDIA_DIR):
            seq = layout.parse_seq_name(name)
            if seq is not None and name.split(".", 1)[0] not in receipted:
                out.append(seq)
        return sorted(out)

    def receipted_media(self) -> list[int]:
        """Seqs whose media is still on the medium and has a media receipt, oldest first."""
        kept = {layout.parse_seq_name(n) for n in self.storage.listdir(layout.STORE_MEDIA_DIR)}
        out = []
        for name in self.storage.listdir(layout.RECEIPTS_DIR):
            if name.endswith(".media.cose"):
                seq = int(name.split(".", 1)[0])
                if seq in kept:
                    out.append(seq)
        return sorted(out)

    def release_oldest(self, need: int) -> int:
        """Release receipted media, oldest first, until ``need`` bytes are free; return freed."""
        freed = 0
        for seq in self.receipted_media():
            if self.free() >= need:
                break
            size = self.storage.size(layout.store_media(seq)) or 0
            if self.release_media(seq):
                freed += size
        return freed

    def release_media(self, seq: int) -> bool:
        """Free the media of ``seq`` — only if a valid media receipt for it is kept."""
        path = layout.receipt_file(seq, ReceiptKind.MEDIA.value)
        if self.storage.size(path) is None:
            raise DeletionRefusedError(f"media of seq {seq} has no server receipt: not released")
        trust = self.trust or self.load_trust()
        receipt = Receipt.load(self.storage.read(path), trust)
        media = self.media_bytes(seq)
        if media is None:
            return False
        if receipt.media_hash != sha256(media):
            raise DeletionRefusedError(f"receipt for seq {seq} names other media: not released")
        self.storage.release(layout.store_media(seq))
        return True
