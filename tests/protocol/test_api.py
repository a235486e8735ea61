"""HTTP schemas: strict models, base64url fields, the enrolment message."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from protocol import api
from protocol.hashing import sha256
from protocol.keys import SoftwareSigner, verify_signature

KEY = SoftwareSigner.from_seed(sha256(b"unbroken api test key"))


def _enrol(**change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "device": "cam-001",
        "token": "one-time-token",
        "public_key": api.b64e(KEY.public_key),
        "proof": api.b64e(KEY.sign(api.enrol_message("one-time-token", "cam-001", KEY.public_key))),
    }
    fields.update(change)
    return fields


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 31, 32, 33, 64])
def test_b64_round_trip(size: int) -> None:
    data = os.urandom(size)
    text = api.b64e(data)
    assert "=" not in text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert api.b64d(text) == data
    padded = text + "=" * (-len(text) % 4)
    assert api.b64d(padded) == data


@pytest.mark.parametrize(
    "text",
    [
        "@@@@",
        "a+b/",
        "YW Jj",
        "YWJj\n",
        "Y",
        "YWJ",
        "YQ=",
        "YWJj==",
        "==",
        "YQ===",
        "Y\u00e9Jj",
        "YWI=YWI=",
    ],
)
def test_b64_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        api.b64d(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_b64_any_text_is_canonical_or_refused(text: str) -> None:
    try:
        data = api.b64d(text)
    except ValueError:
        return
    assert api.b64e(data) == text.rstrip("=")


def test_enrol_request() -> None:
    request = api.EnrolRequest(**_enrol())
    assert request.v == 1
    message = api.enrol_message(request.token, request.device, api.b64d(request.public_key))
    assert message == b"unbroken-enrol-v1:one-time-token:cam-001" + KEY.public_key
    verify_signature(api.b64d(request.public_key), message, api.b64d(request.proof))


@pytest.mark.parametrize(
    "change",
    [
        {"device": "Cam-001"},
        {"device": "cam-001\n"},
        {"device": ""},
        {"token": "short"},
        {"token": "t" * 201},
        {"public_key": "not base64!"},
        {"proof": "=="},
        {"public_key": "A" * (api.MAX_B64 + 1)},
        {"v": 2},
        {"v": 0},
        {"role": "admin"},
    ],
)
def test_enrol_request_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        api.EnrolRequest(**_enrol(**change))


def test_models_are_frozen_and_strict_about_fields() -> None:
    head = api.ChainHead(device="cam-001", next_seq=4, head=None)
    with pytest.raises(ValidationError):
        head.next_seq = 5
    with pytest.raises(ValidationError):
        api.ChainHead(device="cam-001", next_seq=4, head=None, extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        api.ChainHead(device="cam-001", next_seq=4)  # type: ignore[call-arg]


def test_record_batch_bounds() -> None:
    api.RecordBatch(records=[api.b64e(b"r")] * api.MAX_BATCH)
    for records in ([], [api.b64e(b"r")] * (api.MAX_BATCH + 1), ["!!"]):
        with pytest.raises(ValidationError):
            api.RecordBatch(records=records)


MODELS: list[BaseModel] = [
    api.Enrolment(
        device="cam-001",
        root="cm9vdA",
        device_cert="ZA",
        server_cert="cw",
        encryption_cert="ZQ",
        log="log-1",
        api_token="tok",
    ),
    api.ChainHead(device="cam-001", next_seq=0, head=None),
    api.RecordBatch(records=["cmVj"]),
    api.RecordOutcome(seq=3, receipt="cmVj"),
    api.RecordOutcome(seq=4, error="fork"),
    api.RecordReceipts(outcomes=[api.RecordOutcome(seq=3, receipt="cmVj")], checkpoint=None),
    api.MediaProgress(seq=3, offset=10, length=20, complete=False),
    api.SignedBlob(data="Y3A"),
    api.ProofResponse(first=1, second=4, path=["aA"]),
    api.ServerTime(time=1_790_000_000_000_000),
    api.Problem(code="fork", message="two records for seq 3"),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_json_round_trip(model: BaseModel) -> None:
    text = model.model_dump_json()
    again = type(model).model_validate_json(text)
    assert again == model
    assert '"v":1' in text


def test_constants() -> None:
    assert api.API_PREFIX == "/api/v1"
    assert api.TIME_HEADER == "X-Unbroken-Time"
