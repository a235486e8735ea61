"""Journals: whole items, and the torn tail at every point a write can stop."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor, cose
from protocol.certs import Certificate, KeyKind
from protocol.container import open_container
from protocol.hashing import sha256
from protocol.journal import JournalScan
from protocol.keys import SoftwareSigner
from protocol.record import ClockState, Record, RecordKind, SignedRecord, Suite

SIGNER = SoftwareSigner.from_seed(sha256(b"unbroken journal test key"))
T = 1_790_000_000_000_000


def _record(seq: int, label: str = "x") -> bytes:
    record = Record(
        Suite.CHACHA,
        "cam-001",
        bytes(16),
        bytes(16),
        seq,
        sha256(b"%d" % seq),
        RecordKind.BOOKMARK,
        T + seq,
        T + seq,
        seq,
        seq,
        ClockState("ntp", 0, True),
        {"label": label * (seq * 40 + 1)},
    )
    return SignedRecord.create(record, SIGNER).encoded


RECORDS = [_record(i) for i in range(3)]
WHOLE = b"".join(cbor.bstr_item(r) for r in RECORDS)


def _scan(
    data: bytes, name: str = "journal/00000000.log"
) -> tuple[list[tuple[int, bytes]], JournalScan]:
    scan = JournalScan(io.BytesIO(data), name)
    return list(scan.entries()), scan


def test_clean_journal() -> None:
    entries, scan = _scan(WHOLE)
    assert [body for _, body in entries] == RECORDS
    offsets = [0]
    for r in RECORDS[:-1]:
        offsets.append(offsets[-1] + len(cbor.bstr_item(r)))
    assert [off for off, _ in entries] == offsets
    assert scan.torn is None
    assert scan.end == len(WHOLE)
    assert list(JournalScan(io.BytesIO(WHOLE), "j").items()) == RECORDS


def test_empty_journal() -> None:
    entries, scan = _scan(b"")
    assert entries == []
    assert scan.torn is None
    assert scan.end == 0


def test_torn_at_every_byte_of_the_last_item() -> None:
    start = len(WHOLE) - len(cbor.bstr_item(RECORDS[-1]))
    for cut in range(start + 1, len(WHOLE)):
        data = WHOLE[:cut]
        entries, scan = _scan(data)
        assert [b for _, b in entries] == RECORDS[:2], cut
        assert scan.torn is not None
        assert scan.torn.offset == start == scan.end
        assert scan.torn.length == cut - start
        assert scan.torn.hash == sha256(data[start:])
        assert scan.torn.name == f"journal/00000000.log@{start}"


@pytest.mark.parametrize(
    ("garbage", "why"),
    [
        (b"\x00", "not a byte string"),
        (b"\xff" * 20, "not a byte string"),
        (cbor.bstr_item(b"not a record"), "not a COSE_Sign1"),
        (b"\x58\x03abc", "non-shortest head"),
        (b"\x5f\x41a\xff", "indefinite length"),
        (b"\x5b" + (1 << 40).to_bytes(8, "big"), "longer than any object"),
        (bytes(4096), "zeros left by a power cut"),
    ],
)
def test_garbage_after_whole_items_is_the_torn_tail(garbage: bytes, why: str) -> None:
    entries, scan = _scan(WHOLE + garbage)
    assert [b for _, b in entries] == RECORDS, why
    assert scan.torn is not None
    assert (scan.torn.offset, scan.torn.length, scan.torn.hash) == (
        len(WHOLE),
        len(garbage),
        sha256(garbage),
    )


def test_the_tail_runs_to_the_end_of_the_file() -> None:
    # Whole items after a torn one are part of the tail: nothing after a tear is trusted.
    tail = cbor.bstr_item(b"junk") + cbor.bstr_item(RECORDS[0])
    entries, scan = _scan(WHOLE + tail)
    assert len(entries) == 3
    assert scan.torn is not None
    assert scan.torn.length == len(tail)


def test_an_item_of_another_content_type_is_torn() -> None:
    cert = Certificate.issue(SIGNER, KeyKind.DEVICE, "cam-001", SIGNER.public_key, T)
    entries, scan = _scan(WHOLE + cbor.bstr_item(cert))
    assert len(entries) == 3
    assert scan.torn is not None


def test_a_whole_record_under_another_algorithm_is_not_torn() -> None:
    # It is yielded; the record parser then reports the algorithm (ALG_CONFUSION).
    parts = list(cbor2.loads(RECORDS[0]).value)
    protected = cbor.encode({1: -7, 3: str(cose.ContentType.RECORD), 4: SIGNER.kid})
    forged = cbor.encode(cbor2.CBORTag(18, [protected, {}, parts[2], parts[3]]))
    entries, scan = _scan(WHOLE + cbor.bstr_item(forged))
    assert [b for _, b in entries] == [*RECORDS, forged]
    assert scan.torn is None


def test_torn_tail_of_a_zipped_store_needs_no_seek(tmp_path: Path) -> None:
    path = tmp_path / "store.zip"
    data = WHOLE + b"\x59\x01"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("journal/00000000.log", data)
        zf.writestr("trust/root.cose", b"r")
    container = open_container(path)
    with container.open("journal/00000000.log") as stream:
        scan = JournalScan(stream, "journal/00000000.log")
        assert list(scan.items()) == RECORDS
    assert scan.torn is not None
    assert (scan.torn.length, scan.torn.hash) == (2, sha256(b"\x59\x01"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, len(WHOLE)))
def test_any_bytes_split_into_whole_items_and_a_tail(junk: bytes, cut: int) -> None:
    data = WHOLE[:cut] + junk
    entries, scan = _scan(data)
    consumed = sum(len(cbor.bstr_item(b)) for _, b in entries)
    assert consumed == scan.end
    if scan.torn is None:
        assert consumed == len(data)
    else:
        assert scan.torn.offset + scan.torn.length == len(data)
        assert scan.torn.hash == sha256(data[scan.torn.offset :])
