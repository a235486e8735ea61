"""Records: every kind, field rules, signed envelopes, digests and chaining."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor, cose
from protocol.cbor import iter_bstr_sequence
from protocol.errors import AlgorithmError, DecodeError, VersionError
from protocol.hashing import ZERO_HASH, sha256
from protocol.keys import SoftwareSigner
from protocol.record import (
    BODY_FIELDS,
    GENESIS_PREV,
    MEDIA_KINDS,
    OPTIONAL,
    REQUIRED,
    Anchor,
    ClockState,
    MediaRef,
    Record,
    RecordKind,
    SignedRecord,
    Suite,
    encode_record_list,
)

T = 1_790_000_000_000_000
SIGNER = SoftwareSigner.from_seed(sha256(b"unbroken record test session key"))
MEDIA = MediaRef(sha256(b"file"), 1234, sha256(b"salt", b"media"), "video/mp2t")

#: A body with the required fields of each kind (optional ones where there are any).
BODIES: dict[RecordKind, dict[str, Any]] = {
    RecordKind.SESSION_OPEN: {"cert": b"certificate", "reason": "duty", "prev_session": bytes(16)},
    RecordKind.SESSION_CLOSE: {"reason": "off_duty", "segments": 12},
    RecordKind.RECOVERY: {
        "last_seq": 3,
        "last_hash": bytes(32),
        "prev_boot": bytes(16),
        "prev_session": bytes(16),
        "torn": [{"name": "journal/00000000.log@100", "len": 7, "hash": bytes(32)}],
        "last_end": T,
    },
    RecordKind.SEGMENT: {"frames": 25, "preroll": True, "keyframe": 0},
    RecordKind.PHOTO: {"label": "plate"},
    RecordKind.INCIDENT_OPEN: {"label": "stop"},
    RecordKind.INCIDENT_CLOSE: {},
    RecordKind.BOOKMARK: {"label": "here"},
    RecordKind.NOTICE: {"reason": "duty", "pattern": "notice", "prompt": "recording"},
    RecordKind.SELF_CHECK: {"passed": False, "items": {"camera": {"passed": False}}},
    RecordKind.STORAGE_FULL: {"free": 0, "total": 32},
    RecordKind.STORAGE_RESUMED: {"free": 10, "total": 32},
    RecordKind.DELETION_REFUSED: {"interface": "ctl", "target": "media/x", "requester": "root"},
    RecordKind.CLOCK_FAULT: {"offset": -3_000_000, "threshold": 2_000_000},
    RecordKind.MEDIA_FAILING: {"detail": "fsync failed"},
    RecordKind.CUSTODY: {"action": "handed over", "officer": "o-9"},
}


def make(kind: RecordKind = RecordKind.SEGMENT, **changes: Any) -> Record:
    """A valid record of ``kind``, with ``changes``."""
    fields: dict[str, Any] = {
        "suite": Suite.CHACHA,
        "device": "cam-001",
        "session": bytes(range(16)),
        "boot": bytes(range(16, 32)),
        "seq": 5,
        "prev": sha256(b"previous"),
        "kind": kind,
        "t0": T,
        "t1": T + 1_000_000,
        "m0": 7_000_000,
        "m1": 8_000_000,
        "clock": ClockState("ntp", -1200, True),
        "body": BODIES[kind],
        "media": MEDIA if kind in MEDIA_KINDS else None,
    }
    fields.update(changes)
    return Record(**fields)


def test_every_kind_has_a_body_rule() -> None:
    assert set(BODY_FIELDS) == set(RecordKind) == set(BODIES)
    assert {k.value for k in MEDIA_KINDS} == {"segment", "photo"}


@pytest.mark.parametrize("kind", list(RecordKind))
def test_round_trip_every_kind(kind: RecordKind) -> None:
    record = make(kind, officer="o-7", incident="INC-1", case="C-1", anchor=Anchor(9, bytes(32)))
    signed = SignedRecord.create(record, SIGNER)
    assert signed.record == record
    assert signed.encoded == record.sign(SIGNER)
    assert signed.digest == sha256(signed.encoded)
    assert signed.envelope.content_type is cose.ContentType.RECORD
    signed.envelope.verify(SIGNER.public_key)
    assert SignedRecord.parse(signed.encoded).record == record


def test_payload_map() -> None:
    record = make(anchor=Anchor(9, b"r" * 32), officer="o-7")
    payload = record.to_cbor()
    assert set(payload) == REQUIRED | {"media", "anchor", "officer"}
    assert payload["v"] == 1
    assert payload["suite"] == "UB1-Ed25519-X25519-HKDF-SHA256-ChaCha20Poly1305"
    assert payload["kind"] == "segment"
    assert payload["clock"] == {"src": "ntp", "offset": -1200, "synced": True}
    assert payload["media"] == {
        "hash": MEDIA.hash,
        "len": 1234,
        "commit": MEDIA.commitment,
        "type": "video/mp2t",
    }
    assert payload["anchor"] == {"size": 9, "root": b"r" * 32}
    assert "incident" not in payload  # absent, never null
    assert {"officer", "incident", "case", "media", "anchor"} == OPTIONAL
    assert record.duration == 1_000_000


@pytest.mark.parametrize(
    "changes",
    [
        {"device": "Cam-1"},
        {"device": ""},
        {"device": "-cam"},
        {"device": "c" * 64},
        {"device": "cam-1\n"},
        {"session": bytes(15)},
        {"boot": bytes(17)},
        {"prev": bytes(31)},
        {"seq": -1},
        {"seq": 1 << 63},
        {"t1": T - 1},
        {"m1": 6_999_999},
        {"media": None},
        {"body": {"frames": 1, "fps": 30}},
        {"kind": RecordKind.BOOKMARK, "body": {}, "media": None},
        {"kind": RecordKind.BOOKMARK, "body": {"label": "x"}, "media": MEDIA},
        {"body": {1: 2}},
    ],
)
def test_construction_rules(changes: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        make(**changes)


def test_with_revalidates() -> None:
    record = make()
    assert record.with_(seq=6).seq == 6
    with pytest.raises(DecodeError):
        record.with_(t1=0)


def _payload(**changes: Any) -> bytes:
    body = make().to_cbor()
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return cose.sign_object(SIGNER, cose.ContentType.RECORD, body)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"v": 2}, VersionError),
        ({"v": 0}, VersionError),
        ({"v": "1"}, DecodeError),
        ({"v": None}, DecodeError),
        ({"suite": "UB1-Ed25519-X25519-HKDF-SHA256-AES256GCM"}, AlgorithmError),
        ({"suite": "none"}, AlgorithmError),
        ({"suite": 1}, AlgorithmError),
        ({"kind": "selfie"}, DecodeError),
        ({"kind": None}, DecodeError),
        ({"seq": "5"}, DecodeError),
        ({"seq": True}, DecodeError),
        ({"seq": 1.0}, DecodeError),
        ({"t0": -5}, DecodeError),
        ({"clock": {"src": "gps", "offset": 0, "synced": True}}, DecodeError),
        ({"clock": {"src": "ntp", "offset": 0, "synced": 1}}, DecodeError),
        ({"clock": {"src": "ntp", "offset": 0}}, DecodeError),
        ({"clock": "ntp"}, DecodeError),
        ({"body": []}, DecodeError),
        ({"body": {"frames": 1, "x": 2}}, DecodeError),
        ({"media": {"hash": bytes(32), "len": 1, "commit": bytes(31), "type": "t"}}, DecodeError),
        ({"media": {"hash": bytes(32), "len": 1, "commit": bytes(32)}}, DecodeError),
        ({"media": {**MEDIA.to_cbor(), "type": "t" * 65}}, DecodeError),
        ({"anchor": {"size": 1, "root": bytes(32), "time": 0}}, DecodeError),
        ({"officer": 7}, DecodeError),
        ({"officer": "o" * 4097}, DecodeError),
        ({"note": "extra"}, DecodeError),
        ({"device": None}, DecodeError),
        ({"prev": bytes(33)}, DecodeError),
        ({"session": "0" * 16}, DecodeError),
    ],
)  # fmt: skip
def test_parse_rules(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        SignedRecord.parse(_payload(**changes))


def test_parse_refuses_other_content_types() -> None:
    data = cose.sign_object(SIGNER, cose.ContentType.EVENT, make().to_cbor())
    with pytest.raises(DecodeError):
        SignedRecord.parse(data)


def test_clock_offset_may_be_negative_and_sources_are_fixed() -> None:
    for source in ClockState.SOURCES:
        make(clock=ClockState(source, -(1 << 62), False))
    assert ClockState.from_cbor({"src": "none", "offset": -5, "synced": False}).offset == -5


def test_suites_are_fixed() -> None:
    assert {s.value for s in Suite} == {
        "UB1-Ed25519-X25519-HKDF-SHA256-ChaCha20Poly1305",
        "UB1-Ed25519-X25519-HKDF-SHA256-AES128GCM",
    }


def test_chain_links_by_digest() -> None:
    first = SignedRecord.create(make(RecordKind.SESSION_OPEN, seq=0, prev=GENESIS_PREV), SIGNER)
    second = SignedRecord.create(make(seq=1, prev=first.digest), SIGNER)
    assert GENESIS_PREV == ZERO_HASH == bytes(32)
    assert second.record.prev == sha256(first.encoded)
    data = encode_record_list([first.encoded, second.encoded])
    assert list(iter_bstr_sequence(data)) == [first.encoded, second.encoded]
    assert data == cbor.bstr_item(first.encoded) + cbor.bstr_item(second.encoded)


# ----------------------------------------------------------------- properties
_text = st.text(st.characters(codec="utf-8"), max_size=30)
_records = st.builds(
    make,
    kind=st.sampled_from(list(RecordKind)),
    seq=st.integers(0, (1 << 63) - 1),
    t0=st.just(T),
    t1=st.integers(T, T + 10**9),
    officer=st.none() | _text,
    incident=st.none() | _text,
    case=st.none() | _text,
    anchor=st.none()
    | st.builds(Anchor, st.integers(0, 1 << 40), st.binary(min_size=32, max_size=32)),
)


@settings(max_examples=100, deadline=None)
@given(_records)
def test_round_trip_property(record: Record) -> None:
    record = record.with_(media=MEDIA if record.kind in MEDIA_KINDS else None)
    signed = SignedRecord.create(record, SIGNER)
    assert SignedRecord.parse(signed.encoded).record == record


def test_an_unknown_version_is_reported_before_other_fields() -> None:
    # A later version may well have other fields: "unknown version" is what explains them.
    body = make().to_cbor()
    body.update(v=2, stream="new in v2")
    del body["clock"]
    with pytest.raises(VersionError):
        SignedRecord.parse(cose.sign_object(SIGNER, cose.ContentType.RECORD, body))
