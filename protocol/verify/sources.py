"""The two kinds of input: an export bundle and a device store.

Each checks what is particular to it (manifest, receipts, torn files, unexpected files) and
feeds its chains, in order, to :class:`ChainChecker`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from protocol.certs import KeyKind, TrustStore
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.container import Container
from protocol.errors import DecodeError, ProtocolError
from protocol.hashing import sha256_stream
from protocol.journal import JournalScan, TornTail
from protocol.layout import (
    CERTS_FILE,
    CHAINS_DIR,
    CHECKPOINTS_FILE,
    CONSISTENCY_FILE,
    JOURNAL_DIR,
    LISTED_FILES,
    MANIFEST_FILE,
    RECEIPTS_DIR,
    REVOCATIONS_FILE,
    ROOT_FILE,
    STORE_MEDIA_DIR,
    STORE_PRIVATE_DIRS,
    TORN_DIR,
    ChainEntry,
    LogProof,
    bundle_media,
    bundle_opening,
    chain_file,
    is_documentation,
    parse_journal_name,
    parse_seq_name,
    receipt_file,
    store_media,
)
from protocol.manifest import Manifest
from protocol.record import MediaRef
from protocol.verify.chain import ChainChecker, MediaStatus
from protocol.verify.findings import Code
from protocol.verify.report import Report
from protocol.verify.stream import read_items
from protocol.verify.trust import CheckpointCursor, check_checkpoints, checkpoints

MAX_SMALL = 1 << 20
_RECEIPT_NAME = re.compile(r"^\d{12}\.(record|media)\.cose$")
Progress = Callable[[int, int], None]
"""Called with (records checked, media bytes hashed) as verification proceeds."""


class _SeqFiles:
    """Files named by seq in one folder, walked in step with ascending record seqs."""

    def __init__(self, container: Container, folder: str, report: Report, device: str) -> None:
        self.folder = folder
        self.report = report
        self.device = device
        names = container.listdir(folder)
        self._names = iter(names)
        self._next: tuple[int, str] | None = None
        self._advance()

    def _advance(self) -> None:
        for name in self._names:
            seq = parse_seq_name(name)
            if seq is None:
                self.report.add(
                    Code.UNEXPECTED_FILE, f"{self.folder}/{name}: not a media file name"
                )
                continue
            self._next = (seq, name)
            return
        self._next = None

    def claim(self, seq: int) -> bool:
        """Whether seq's file exists; files for lower seqs that no record claimed are reported."""
        while self._next is not None and self._next[0] < seq:
            self.report.add(
                Code.UNEXPECTED_FILE,
                f"{self.folder}/{self._next[1]}: media that no record vouches for",
                self.device,
                self._next[0],
            )
            self._advance()
        if self._next is not None and self._next[0] == seq:
            self._advance()
            return True
        return False

    def finish(self) -> None:
        """Report files left over after the last record."""
        self.claim(1 << 62)


def _hash_file(container: Container, path: str) -> tuple[bytes, int]:
    with container.open(path) as f:
        return sha256_stream(f)


@dataclass
class BundleMedia:
    """Media of one device in a bundle: ciphertext, and openings if the bundle has them."""

    container: Container
    device: str
    report: Report
    openings: bool
    media: _SeqFiles = field(init=False)
    opened: _SeqFiles | None = field(init=False)

    def __post_init__(self) -> None:
        self.media = _SeqFiles(self.container, f"media/{self.device}", self.report, self.device)
        self.opened = (
            _SeqFiles(self.container, f"openings/{self.device}", self.report, self.device)
            if self.openings
            else None
        )

    def check(self, seq: int, ref: MediaRef) -> tuple[MediaStatus, int]:
        has_media = self.media.claim(seq)
        has_opening = self.opened.claim(seq) if self.opened is not None else False
        if not has_media:
            return MediaStatus.ABSENT, 0
        try:
            digest, size = _hash_file(self.container, bundle_media(self.device, seq))
        except (OSError, DecodeError):
            return MediaStatus.CORRUPT, 0
        if digest != ref.hash or size != ref.length:
            return MediaStatus.CORRUPT, size
        if self.opened is not None:
            if not has_opening:
                return MediaStatus.ABSENT, size
            try:
                commit, opened = _hash_file(self.container, bundle_opening(self.device, seq))
            except (OSError, DecodeError):
                return MediaStatus.OPENING_MISMATCH, size
            if commit != ref.commitment:
                return MediaStatus.OPENING_MISMATCH, size + opened
            size += opened
        return MediaStatus.OK, size

    def finish(self) -> None:
        """Report unreferenced files."""
        self.media.finish()
        if self.opened is not None:
            self.opened.finish()


def verify_bundle(
    container: Container, trust: TrustStore, report: Report, progress: Progress | None
) -> None:
    """Check an export bundle."""
    try:
        manifest, msg = Manifest.parse(container.read(MANIFEST_FILE, MAX_SMALL))
        trust.verify_server_signed(msg)
    except (ProtocolError, OSError) as exc:
        report.add(Code.MANIFEST_INVALID, f"{MANIFEST_FILE}: {exc}")
        return
    _check_listed_files(container, manifest, report)
    final = check_checkpoints(container, CHECKPOINTS_FILE, CONSISTENCY_FILE, trust, report)
    if final is not None and final.log != manifest.log:
        report.add(
            Code.MANIFEST_MISMATCH,
            f"checkpoints are of log {final.log!r}, the manifest names {manifest.log!r}",
        )

    def opener() -> Iterator[Checkpoint]:
        return checkpoints(container, CHECKPOINTS_FILE, trust, _Quiet(report))

    devices = {c.device for c in manifest.chains}
    _unexpected_bundle_files(container, devices, report, manifest.openings)
    done = [0]
    for chain in manifest.chains:
        path = chain_file(chain.device)
        if not container.exists(path):
            report.add(Code.MANIFEST_MISMATCH, f"{path} is missing", chain.device)
            continue
        media = BundleMedia(container, chain.device, report, manifest.openings)
        checker = ChainChecker(
            chain.device,
            trust,
            CheckpointCursor(opener),
            report,
            media,
            expect=chain,
            require_log=True,
        )
        for index, item in read_items(container, path, report, Code.MALFORMED_RECORD):
            try:
                entry = ChainEntry.decode(item)
            except DecodeError as exc:
                report.add(Code.MALFORMED_RECORD, f"{path} entry {index}: {exc}", chain.device)
                continue
            proof_cp = final if entry.log is not None else None
            checker.feed(entry.record, entry.log, proof_cp)
            done[0] += 1
            if progress is not None:
                progress(done[0], report.media_bytes)
        checker.finish()
        media.finish()


def _check_listed_files(container: Container, manifest: Manifest, report: Report) -> None:
    """Trust and log files must be exactly those the manifest lists, byte for byte."""
    for path in LISTED_FILES:
        listed = manifest.files.get(path)
        present = container.exists(path)
        if listed is None and present:
            report.add(Code.MANIFEST_MISMATCH, f"{path} is not listed in the manifest")
        elif listed is not None and not present:
            report.add(Code.MANIFEST_MISMATCH, f"{path} is listed in the manifest but missing")
        elif listed is not None:
            try:
                digest, _ = _hash_file(container, path)
            except (OSError, DecodeError) as exc:
                report.add(Code.MANIFEST_MISMATCH, f"{path}: cannot read ({exc})")
                continue
            if digest != listed:
                report.add(Code.MANIFEST_MISMATCH, f"{path} differs from what the manifest lists")
    for path in manifest.files:
        if path not in LISTED_FILES:
            report.add(
                Code.MANIFEST_MISMATCH, f"the manifest lists {path!r}, not a trust or log file"
            )


class _Quiet(Report):
    """A report sink that drops findings: for re-reading a file already checked once."""

    def __init__(self, real: Report) -> None:
        super().__init__(real.source, real.kind)

    def add(
        self,
        code: Code,
        message: str,
        device: str | None = None,
        seq_from: int | None = None,
        seq_to: int | None = None,
    ) -> None:
        return None


def _unexpected_bundle_files(
    container: Container, devices: set[str], report: Report, openings: bool
) -> None:
    folders = ("media", "openings") if openings else ("media",)
    fixed = {
        MANIFEST_FILE,
        CHECKPOINTS_FILE,
        CONSISTENCY_FILE,
        "trust/root.cose",
        "trust/certs.cborseq",
        "trust/revocations.cose",
    }
    for path in container.files():
        if path in fixed or is_documentation(path):
            continue
        parts = path.split("/")
        if (
            len(parts) == 2
            and parts[0] == CHAINS_DIR
            and parts[1].endswith(".cborseq")
            and parts[1].removesuffix(".cborseq") in devices
        ):
            continue
        if len(parts) == 3 and parts[0] in folders and parts[1] in devices:
            continue  # checked against the records by _SeqFiles
        report.add(Code.UNEXPECTED_FILE, f"{path}: not part of the bundle format")


# --------------------------------------------------------------------------- store


@dataclass
class StoreMedia:
    """Media in a device store; released media is vouched for by a media receipt."""

    container: Container
    device: str
    report: Report
    trust: TrustStore
    files: _SeqFiles = field(init=False)

    def __post_init__(self) -> None:
        self.files = _SeqFiles(self.container, STORE_MEDIA_DIR, self.report, self.device)

    def check(self, seq: int, ref: MediaRef) -> tuple[MediaStatus, int]:
        if not self.files.claim(seq):
            receipt = _load_receipt(self.container, self.trust, self.report, seq, "media")
            if receipt is not None and receipt.media_hash == ref.hash:
                return MediaStatus.RELEASED, 0
            return MediaStatus.ABSENT, 0
        try:
            digest, size = _hash_file(self.container, store_media(seq))
        except (OSError, DecodeError):
            return MediaStatus.CORRUPT, 0
        if digest != ref.hash or size != ref.length:
            return MediaStatus.CORRUPT, size
        if self.container.exists(receipt_file(seq, "media")):
            receipt = _load_receipt(self.container, self.trust, self.report, seq, "media")
            if receipt is not None and receipt.media_hash != ref.hash:
                self.report.add(
                    Code.RECEIPT_INVALID,
                    f"the media receipt of seq {seq} names other media",
                    self.device,
                    seq,
                )
        return MediaStatus.OK, size


def _load_receipt(
    container: Container, trust: TrustStore, report: Report, seq: int, kind: str
) -> Receipt | None:
    path = receipt_file(seq, kind)
    if not container.exists(path):
        return None
    try:
        receipt = Receipt.load(container.read(path, MAX_SMALL), trust)
    except (ProtocolError, OSError) as exc:
        report.add(Code.RECEIPT_INVALID, f"{path}: {exc}", None, seq)
        return None
    if receipt.seq != seq or receipt.kind is not ReceiptKind(kind):
        report.add(Code.RECEIPT_INVALID, f"{path}: receipt is for another seq or kind", None, seq)
        return None
    return receipt


@dataclass
class StoreReceipts:
    """Log proofs of a store's records, from the record receipts the server returned."""

    container: Container
    trust: TrustStore
    report: Report

    def proof(self, seq: int, digest: bytes) -> tuple[LogProof, Checkpoint] | None:
        """The proof for seq from its receipt, checked against the record digest."""
        receipt = _load_receipt(self.container, self.trust, self.report, seq, "record")
        if receipt is None or receipt.checkpoint is None or receipt.index is None:
            return None
        if receipt.record != digest:
            self.report.add(
                Code.RECEIPT_INVALID,
                f"receipt for seq {seq} acknowledges a different record",
                None,
                seq,
            )
            return None
        cp = Checkpoint.load(receipt.checkpoint, self.trust)
        return LogProof(receipt.index, cp.size, receipt.path), cp


def verify_store(
    container: Container, trust: TrustStore, report: Report, progress: Progress | None
) -> None:
    """Check a device store: journals, media, receipts and kept torn writes."""
    devices = [c for c in trust.certificates() if c.kind is KeyKind.DEVICE]
    if len(devices) != 1:
        report.add(
            Code.CERT_INVALID, f"a device store holds one device certificate, found {len(devices)}"
        )
        return
    device = devices[0].subject
    if container.exists(CHECKPOINTS_FILE):
        check_checkpoints(container, CHECKPOINTS_FILE, None, trust, report)

    def opener() -> Iterator[Checkpoint]:
        if not container.exists(CHECKPOINTS_FILE):
            return iter(())
        return checkpoints(container, CHECKPOINTS_FILE, trust, _Quiet(report))

    media = StoreMedia(container, device, report, trust)
    receipts = StoreReceipts(container, trust, report)
    checker = ChainChecker(
        device, trust, CheckpointCursor(opener), report, media, require_log=False, receipts=receipts
    )
    torn: list[TornTail] = []
    journals = []
    for name in container.listdir(JOURNAL_DIR):
        boot = parse_journal_name(name)
        path = f"{JOURNAL_DIR}/{name}"
        if boot is None:
            report.add(Code.UNEXPECTED_FILE, f"{path}: not a journal file name")
        elif not container.exists(path):  # a folder or a link: evidence is regular files
            report.add(Code.UNEXPECTED_FILE, f"{path}: not a regular file")
        else:
            journals.append(path)
    if not journals:
        report.add(Code.TRUNCATED_HEAD, "the store holds no journal", device)
    done = 0
    for path in journals:
        with container.open(path) as stream:
            scan = JournalScan(stream, path)
            for item in scan.items():
                checker.feed(item, None, None)
                done += 1
                if progress is not None:
                    progress(done, report.media_bytes)
        if scan.torn is not None:
            torn.append(scan.torn)
    if checker.count == 0 and journals:
        report.add(Code.TRUNCATED_HEAD, "the store's journals hold no record", device)
    checker.finish()
    media.files.finish()
    for name in container.listdir(TORN_DIR):
        path = f"{TORN_DIR}/{name}"
        if not container.exists(path):
            report.add(Code.UNEXPECTED_FILE, f"{path}: not a regular file")
            continue
        try:
            digest, size = _hash_file(container, path)
        except (OSError, DecodeError) as exc:
            report.add(Code.TORN_UNEXPLAINED, f"{path}: cannot read ({exc})", device)
            continue
        torn.append(TornTail(path, 0, size, digest))
    for tail in torn:
        explained = checker.explained_torn.get(tail.name)
        if explained == (tail.length, tail.hash):
            report.add(
                Code.TORN_EXPLAINED,
                f"{tail.name}: {tail.length} torn byte(s) kept and explained by a recovery record",
                device,
            )
        else:
            report.add(
                Code.TORN_UNEXPLAINED,
                f"{tail.name}: {tail.length} byte(s) that no recovery record explains",
                device,
            )
    _unexpected_store_files(container, report)


def _unexpected_store_files(container: Container, report: Report) -> None:
    for path in container.files():
        top = path.split("/", 1)[0]
        if top in STORE_PRIVATE_DIRS or is_documentation(path):
            continue
        if path in (ROOT_FILE, CERTS_FILE, REVOCATIONS_FILE, CHECKPOINTS_FILE):
            continue
        if top in (JOURNAL_DIR, STORE_MEDIA_DIR, TORN_DIR):
            continue  # named and checked by verify_store and _SeqFiles
        if top == RECEIPTS_DIR and _RECEIPT_NAME.match(path.removeprefix(f"{RECEIPTS_DIR}/")):
            continue
        report.add(Code.UNEXPECTED_FILE, f"{path}: not part of the device store format")
