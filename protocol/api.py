"""HTTP schemas of the sync API between agent and server (JSON; binary as base64url).

Device endpoints (all under ``/api/v1``; a device authenticates with the bearer token it
received at enrolment, and everything it sends is signed anyway)::

    POST /enrol                                   EnrolRequest -> Enrolment
    GET  /devices/{device}/head                   -> ChainHead
    POST /devices/{device}/records                RecordBatch -> RecordReceipts
    GET  /devices/{device}/media/{seq}            -> MediaProgress (resume point)
    PUT  /devices/{device}/media/{seq}?offset=N   raw bytes -> MediaProgress
    GET  /log/checkpoint                          -> SignedBlob (newest checkpoint)
    GET  /log/consistency?first=&second=          -> ProofResponse
    GET  /log/inclusion?index=&size=              -> ProofResponse
    GET  /time                                    -> ServerTime

Every response carries the header ``X-Unbroken-Time`` (server time, µs since the epoch)
so that a device measures its clock offset at every exchange.
"""

from __future__ import annotations

import base64
import binascii
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_PREFIX = "/api/v1"
TIME_HEADER = "X-Unbroken-Time"
MAX_BATCH = 256
MAX_B64 = 1 << 20
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64e(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError if malformed.

    Strict: only the base64url alphabet, and the canonical form (unused bits zero), so
    that one byte string has one text (the standard decoder skips stray characters).
    """
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    if "=" in text and len(text) % 4:
        raise ValueError("base64url padding does not fill the last quantum")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if b64e(data) != text.rstrip("="):
        raise ValueError("not canonical base64url")
    return data


class Wire(BaseModel):
    """Base of the HTTP schemas: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    v: int = Field(default=1, ge=1, le=1)


def _b64_field(value: str) -> str:
    if len(value) > MAX_B64:
        raise ValueError("too long")
    b64d(value)
    return value


def _b64_items(value: list[str]) -> list[str]:
    for item in value:
        _b64_field(item)
    return value


class EnrolRequest(Wire):
    """A device asks to join the fleet: its id, public key and a one-time token.

    ``proof`` is the device key's Ed25519 signature over the UTF-8 bytes of
    ``"unbroken-enrol-v1:" + token + ":" + device`` followed by the raw public key.
    """

    device: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    token: str = Field(min_length=8, max_length=200)
    public_key: str
    proof: str

    _check = field_validator("public_key", "proof")(_b64_field)


def enrol_message(token: str, device: str, public_key: bytes) -> bytes:
    """The bytes an enrolling device signs."""
    return f"unbroken-enrol-v1:{token}:{device}".encode() + public_key


class Enrolment(Wire):
    """What a newly enrolled device keeps: trust material and its API token."""

    device: str
    root: str
    device_cert: str
    server_cert: str
    encryption_cert: str
    log: str
    api_token: str


class ChainHead(Wire):
    """What the server holds of a device chain: the next seq it expects and the head hash."""

    device: str
    next_seq: int
    head: str | None


#: Announcements per HTTP request.
MAX_EVENTS = 64


class RecordBatch(Wire):
    """Signed records in seq order."""

    records: list[str] = Field(min_length=1, max_length=MAX_BATCH)

    _check = field_validator("records")(_b64_items)


class RecordOutcome(Wire):
    """The server's answer for one record: a receipt, or why not."""

    seq: int
    receipt: str | None = None
    error: str | None = None


class RecordReceipts(Wire):
    """Receipts for a batch, and the checkpoint they prove into."""

    outcomes: list[RecordOutcome]
    checkpoint: str | None


class EventBatch(Wire):
    """Signed announcements sent over HTTP (the same bytes as on MQTT), for a device without
    a broker or beside one: the server drops the ones it has already seen."""

    events: list[str] = Field(min_length=1, max_length=MAX_EVENTS)

    _check = field_validator("events")(_b64_items)


class EventOutcomes(Wire):
    """What became of each announcement: ``accepted``, ``duplicate`` or why it was dropped."""

    outcomes: list[str]


class MediaProgress(Wire):
    """How much of a media file the server holds; the receipt once it is whole."""

    seq: int
    offset: int
    length: int
    complete: bool
    receipt: str | None = None


class SignedBlob(Wire):
    """One signed object (checkpoint, certificate) in base64url."""

    data: str


class ProofResponse(Wire):
    """A Merkle proof."""

    first: int
    second: int
    path: list[str]


class ServerTime(Wire):
    """The server's wall clock in µs since the epoch."""

    time: int


class Problem(Wire):
    """An error answer: a stable code and a human message."""

    code: str
    message: str
