"""Signed MQTT payloads."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cose
from protocol.errors import AlgorithmError, DecodeError, SignatureError, VersionError
from protocol.events import MAX_EVENT_BYTES, TELEMETRY_FIELDS, Event, EventKind
from protocol.hashing import sha256
from protocol.keys import SoftwareSigner

DEVICE_KEY = SoftwareSigner.from_seed(sha256(b"unbroken events test device"))
BOOT = bytes(range(16))
T = 1_790_000_000_000_000


@pytest.mark.parametrize("kind", list(EventKind))
def test_round_trip(kind: EventKind) -> None:
    body: dict[str, Any] = {"battery_mv": 3900} if kind is EventKind.TELEMETRY else {"x": [1]}
    event = Event("cam-001", BOOT, 7, kind, T, body)
    data = event.sign(DEVICE_KEY)
    parsed, msg = Event.parse(data)
    assert parsed == event
    assert msg.content_type is cose.ContentType.EVENT
    assert msg.kid == DEVICE_KEY.kid
    msg.verify(DEVICE_KEY.public_key)
    assert parsed.key == ("cam-001", BOOT, 7)
    assert msg.body("e") == {
        "v": 1,
        "device": "cam-001",
        "boot": BOOT,
        "n": 7,
        "kind": kind.value,
        "time": T,
        "body": body,
    }


def test_signature_is_checked_by_the_caller() -> None:
    data = Event("cam-001", BOOT, 0, EventKind.STATUS, T, {"state": "online"}).sign(DEVICE_KEY)
    _, msg = Event.parse(data)
    with pytest.raises(SignatureError):
        msg.verify(SoftwareSigner.from_seed(sha256(b"other")).public_key)


def test_telemetry_fields_are_fixed() -> None:
    Event("cam-001", BOOT, 0, EventKind.TELEMETRY, T, dict.fromkeys(TELEMETRY_FIELDS, 1))
    with pytest.raises(DecodeError):
        Event("cam-001", BOOT, 0, EventKind.TELEMETRY, T, {"gps": 1})


@pytest.mark.parametrize("kwargs", [{"device": "CAM"}, {"boot": bytes(15)}, {"device": "cam-1\n"}])
def test_construction_rules(kwargs: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "device": "cam-001",
        "boot": BOOT,
        "n": 0,
        "kind": EventKind.STATUS,
        "time": T,
    }
    fields.update(kwargs)
    with pytest.raises(DecodeError):
        Event(**fields)


def _body(**change: Any) -> dict[str, Any]:
    body = Event("cam-001", BOOT, 0, EventKind.STATUS, T, {"state": "online"}).to_cbor()
    body.update(change)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_body(v=2), VersionError),
        (_body(kind="exploded"), DecodeError),
        (_body(n=-1), DecodeError),
        (_body(time="now"), DecodeError),
        (_body(boot=bytes(8)), DecodeError),
        (_body(body=[1]), DecodeError),
        (_body(body={1: "x"}), DecodeError),
        (_body(device="a/b"), DecodeError),
        (_body(extra=True), DecodeError),
        (_body(n=None), DecodeError),
        (_body(kind="telemetry", body={"temperature": 3}), DecodeError),
    ],
)
def test_parse_rules(body: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Event.parse(cose.sign_object(DEVICE_KEY, cose.ContentType.EVENT, body))


def test_parse_refuses_big_payloads_and_other_content_types() -> None:
    big = Event("cam-001", BOOT, 0, EventKind.STATUS, T, {"pad": "x" * MAX_EVENT_BYTES})
    with pytest.raises(DecodeError, match="exceeds"):
        Event.parse(big.sign(DEVICE_KEY))
    record_typed = cose.sign_object(DEVICE_KEY, cose.ContentType.RECORD, _body())
    with pytest.raises(DecodeError):
        Event.parse(record_typed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_junk_payloads(data: bytes) -> None:
    for candidate in (data, b"\xd2\x84" + data):
        with contextlib.suppress(DecodeError, AlgorithmError):  # others fail the test
            Event.parse(candidate)
