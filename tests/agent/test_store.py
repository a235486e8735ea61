"""The evidence store: durable order, boot scan, recovery of torn writes, refusal to
release unreceipted media; and the verifier's reading of a device store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.capture.store import EvidenceStore
from agent.errors import DeletionRefusedError, StoreError
from agent.signing.chain import ChainWriter, Span
from hardware.disk import DirectoryStorage
from protocol import layout
from protocol.certs import Certificate, KeyKind, RootKey
from protocol.checkpoint import Receipt, ReceiptKind
from protocol.keys import EncryptionKey, SoftwareSigner
from protocol.record import ClockState, MediaRef, RecordKind, Suite
from protocol.verify import verify_path

DEV = "cam-007"
CLOCK = ClockState("ntp", 0, True)


class Device:
    """A device writing into a real store on disk, one boot at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fleet = SoftwareSigner.generate()
        self.server = SoftwareSigner.generate()
        self.enc = EncryptionKey.generate()
        self.key = SoftwareSigner.generate()
        self.wall = 1_790_000_000_000_000
        self.store = EvidenceStore(DirectoryStorage(root), reserve=0)
        self.store.save_enrolment(
            RootKey.issue(self.fleet, "test fleet", self.wall),
            [
                Certificate.issue(self.fleet, KeyKind.DEVICE, DEV, self.key.public_key, self.wall),
                Certificate.issue(
                    self.fleet, KeyKind.SERVER, "s", self.server.public_key, self.wall
                ),
                Certificate.issue(
                    self.fleet, KeyKind.ENCRYPTION, "s", self.enc.public_key, self.wall
                ),
            ],
        )
        self.boot()

    @property
    def fingerprint(self) -> str:
        return self.fleet.fingerprint

    def boot(self) -> None:
        self.store = EvidenceStore(DirectoryStorage(self.root), reserve=0)
        self.scan = self.store.open_boot()
        self.mono = 1_000_000
        self.writer = ChainWriter(
            DEV,
            Suite.CHACHA,
            self.key,
            self.enc.public_key,
            os.urandom(16),
            self.scan.next_seq,
            self.scan.prev,
        )
        key = self.writer.start_session(self.wall)
        self.append(RecordKind.SESSION_OPEN, {"cert": key.certificate, "reason": "boot"})
        if self.scan.needs_recovery:
            last = self.scan.last
            assert last is not None
            self.append(
                RecordKind.RECOVERY,
                {
                    "last_seq": last.record.seq,
                    "last_hash": self.scan.prev,
                    "prev_boot": last.record.boot,
                    "prev_session": last.record.session,
                    "torn": [t.to_cbor() for t in self.scan.torn],
                },
            )

    def span(self, us: int = 0) -> Span:
        s = Span(self.wall, self.wall + us, self.mono, self.mono + us, CLOCK)
        self.wall += us
        self.mono += us
        return s

    def append(self, kind: RecordKind, body: dict[str, object]) -> None:
        signed = self.writer.make(kind, self.span(), body)
        self.store.append(signed)
        self.writer.commit(signed)

    def segment(self, *, record: bool = True) -> int:
        seq = self.writer.next_seq
        sealed = self.writer.seal(os.urandom(2000), seq)
        self.store.write_media(seq, sealed.data)
        if record:
            ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
            signed = self.writer.make(RecordKind.SEGMENT, self.span(1_000_000), {}, ref)
            self.store.append(signed)
            self.writer.commit(signed)
        return seq

    def close(self) -> None:
        self.append(RecordKind.SESSION_CLOSE, {"reason": "shutdown"})


def codes(path: Path, pin: str) -> set[str]:
    return {f.code.value for f in verify_path(path, pin).findings}


def test_clean_store_verifies(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    for _ in range(5):
        dev.segment()
    dev.close()
    report = verify_path(tmp_path, dev.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    assert report.kind == "store"
    assert report.segments == 5
    assert "NOT_YET_LOGGED" in {f.code.value for f in report.findings}


def test_torn_journal_tail_is_kept_and_explained(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    for _ in range(3):
        dev.segment()
    journal = tmp_path / layout.journal_file(0)
    whole = journal.stat().st_size
    with journal.open("ab") as f:
        f.write(b"\x59\x01\x00garbage-of-a-half-written-record")  # power lost mid-append
    dev.wall += 5_000_000
    dev.boot()
    assert not dev.scan.clean
    assert [t.name for t in dev.scan.torn] == [f"{layout.journal_file(0)}@{whole}"]
    dev.segment()
    dev.close()
    report = verify_path(tmp_path, dev.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
    assert [g.cause for g in report.gaps] == ["power_loss"]
    assert "TORN_EXPLAINED" in {f.code.value for f in report.findings}
    assert journal.read_bytes().endswith(b"record")  # kept, never truncated


def test_media_without_record_moves_to_torn(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    dev.segment()
    orphan = dev.segment(record=False)  # crash between media rename and record append
    dev.boot()
    assert not (tmp_path / layout.store_media(orphan)).exists()
    assert len(dev.scan.torn) == 1
    assert dev.scan.torn[0].name.startswith("torn/")
    dev.segment()
    dev.close()
    assert verify_path(tmp_path, dev.fingerprint).verdict == "authentic"


def test_unexplained_torn_file_fails(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    dev.segment()
    dev.close()
    (tmp_path / "torn" / "planted.bin").write_bytes(b"x")
    assert "TORN_UNEXPLAINED" in codes(tmp_path, dev.fingerprint)


def test_killed_without_reboot_is_a_truncated_tail(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    dev.segment()
    assert "TRUNCATED_TAIL" in codes(tmp_path, dev.fingerprint)


def test_record_file_removed_by_root_shows_as_gap(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    seqs = [dev.segment() for _ in range(4)]
    dev.close()
    (tmp_path / layout.store_media(seqs[2])).unlink()
    result = codes(tmp_path, dev.fingerprint)
    assert "MEDIA_ABSENT" in result


def test_media_is_released_only_with_a_valid_receipt(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    seq = dev.segment()
    with pytest.raises(DeletionRefusedError):
        dev.store.release_media(seq)
    media = dev.store.media_bytes(seq)
    assert media is not None
    from protocol.hashing import sha256

    receipt = Receipt(
        ReceiptKind.MEDIA,
        DEV,
        seq,
        bytes(32),
        dev.wall,
        media_hash=sha256(media),
        media_len=len(media),
    ).sign(dev.server)
    dev.store.save_receipt(seq, ReceiptKind.MEDIA, receipt)
    assert dev.store.release_media(seq)
    assert dev.store.media_bytes(seq) is None
    dev.close()
    report = verify_path(tmp_path, dev.fingerprint)
    assert report.verdict == "authentic"
    assert "MEDIA_RELEASED" in {f.code.value for f in report.findings}


def test_forged_receipt_is_refused(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    seq = dev.segment()
    forged = Receipt(
        ReceiptKind.MEDIA, DEV, seq, bytes(32), dev.wall, media_hash=bytes(32), media_len=1
    ).sign(SoftwareSigner.generate())
    with pytest.raises(Exception, match="does not verify"):
        dev.store.save_receipt(seq, ReceiptKind.MEDIA, forged)
    assert dev.store.media_bytes(seq) is not None


def test_planted_files_in_a_store_are_reported(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    dev.segment()
    dev.close()
    (tmp_path / "trust" / "extra.cose").write_bytes(b"x")
    (tmp_path / "receipts" / "note.cose").write_bytes(b"x")
    found = [
        f
        for f in verify_path(tmp_path, dev.fingerprint).findings
        if f.code.value == "UNEXPECTED_FILE"
    ]
    assert len(found) == 2


def test_a_store_whose_journal_holds_nothing_is_not_authentic(tmp_path: Path) -> None:
    dev = Device(tmp_path)
    for name in (tmp_path / "journal").iterdir():
        name.write_bytes(b"")
    assert "TRUNCATED_HEAD" in codes(tmp_path, dev.fingerprint)


def test_changed_media_receipt_is_caught_even_with_the_media_present(tmp_path: Path) -> None:
    from protocol.hashing import sha256

    dev = Device(tmp_path)
    seq = dev.segment()
    media = dev.store.media_bytes(seq)
    assert media is not None
    receipt = Receipt(
        ReceiptKind.MEDIA,
        DEV,
        seq,
        bytes(32),
        dev.wall,
        media_hash=sha256(media),
        media_len=len(media),
    ).sign(dev.server)
    dev.store.save_receipt(seq, ReceiptKind.MEDIA, receipt)
    dev.close()
    assert verify_path(tmp_path, dev.fingerprint).verdict == "authentic"
    path = tmp_path / layout.receipt_file(seq, "media")
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    assert "RECEIPT_INVALID" in codes(tmp_path, dev.fingerprint)


def test_record_index_runs_gaps_and_out_of_order_seqs() -> None:
    from agent.capture.store import Located, RecordIndex

    index = RecordIndex()
    for seq in range(5):
        index.add(seq, Located("journal/a", 100 * seq, 90))
    for seq in range(5, 8):  # the next boot's journal continues the chain
        index.add(seq, Located("journal/b", 10 * seq, 9))
    index.add(20, Located("journal/b", 999, 7))  # a jump in seq
    index.add(3, Located("journal/c", 1, 2))  # a seq seen again on a damaged medium
    assert index.get(0) == Located("journal/a", 0, 90)
    assert index.get(4) == Located("journal/a", 400, 90)
    assert index.get(6) == Located("journal/b", 60, 9)
    assert index.get(20) == Located("journal/b", 999, 7)
    assert index.get(3) == Located("journal/c", 1, 2)  # the later entry wins
    for missing in (-1, 8, 19, 21):
        assert index.get(missing) is None
    assert len(index) == 10


def test_records_read_back_exactly_across_boots(tmp_path: Path) -> None:
    device = Device(tmp_path)
    written: dict[int, bytes] = {}

    def remember(signed: object) -> None:
        from protocol.record import SignedRecord

        assert isinstance(signed, SignedRecord)
        written[signed.record.seq] = signed.encoded

    original = device.store.append
    for boot in range(3):
        if boot:
            device.boot()  # unclean: a recovery record, a new journal
            original = device.store.append
        device.store.append = lambda s, o=original: (remember(s), o(s))[1]  # type: ignore[method-assign]
        for _ in range(4):
            device.segment()
    device.close()
    fresh = EvidenceStore(DirectoryStorage(tmp_path), reserve=0)
    fresh.open_boot()
    for store in (device.store, fresh):
        for seq, encoded in written.items():
            assert store.record_bytes(seq) == encoded, seq
    with pytest.raises(StoreError):
        fresh.record_bytes(max(written) + 5)


def _scan_facts(root: Path) -> tuple[object, ...]:
    store = EvidenceStore(DirectoryStorage(root), reserve=0)
    scan = store.open_boot()
    last = scan.last.encoded if scan.last else None
    records = tuple(store.record_bytes(seq) for seq in range(scan.next_seq))
    return (scan.next_seq, scan.prev, last, scan.clean, scan.torn, scan.unreadable, records)


def test_earlier_journals_are_read_from_their_summaries(tmp_path: Path) -> None:
    device = Device(tmp_path)
    for boot in range(3):
        if boot:
            device.boot()  # unclean stops: recovery records, new journals
        for _ in range(5):
            device.segment()
    # A torn tail in the newest journal, as a power cut leaves it.
    newest = sorted((tmp_path / "journal").iterdir())[-1]
    with newest.open("ab") as f:
        f.write(b"\x59\x01\x00partial")
    first = _scan_facts(tmp_path)  # parses the journals, keeps summaries
    summaries = sorted((tmp_path / "state" / "index").iterdir())
    assert len(summaries) == len(list((tmp_path / "journal").iterdir()))
    assert _scan_facts(tmp_path) == first  # from the summaries: the same scan
    # A damaged summary is ignored, and the journal parsed again.
    summaries[0].write_bytes(b"\xa1junk")
    summaries[-1].write_bytes(summaries[-1].read_bytes()[:-3])
    assert _scan_facts(tmp_path) == first
    # A summary of other content (the journal changed since) does not apply.
    for summary in summaries[1:-1]:
        other = tmp_path / "state" / "index" / summaries[0].name
        other.write_bytes(summary.read_bytes())
    assert _scan_facts(tmp_path) == first
