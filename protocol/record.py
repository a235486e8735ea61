"""Records: the signed, chained entries of a device's evidence chain.

A device writes one chain for its whole life. Every record carries ``seq`` (contiguous from
0) and ``prev`` (the SHA-256 of the previous record's encoded COSE_Sign1; 32 zero bytes for
seq 0). A segment of video is one record of kind ``segment`` with its media hash and
plaintext commitment; the other kinds are events in the same chain (session open and
close, power-loss recovery, incidents, bookmarks, photos, notices, storage and deletion
events). Records are signed by the session key named in the session's opening record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from protocol import cbor, cose
from protocol.errors import AlgorithmError, DecodeError
from protocol.hashing import HASH_LEN, ZERO_HASH
from protocol.keys import Signer
from protocol.wire import (
    FORMAT_VERSION,
    MAX_INT,
    check_device_id,
    check_map,
    check_version,
    get_bool,
    get_bytes,
    get_int,
    get_text,
    optional_text,
    without_none,
)

ID_LEN = 16


class Suite(StrEnum):
    """Cipher suites: the signature algorithm and the HPKE suite for media, together."""

    CHACHA = "UB1-Ed25519-X25519-HKDF-SHA256-ChaCha20Poly1305"
    AESGCM = "UB1-Ed25519-X25519-HKDF-SHA256-AES128GCM"


class RecordKind(StrEnum):
    """What a record says happened."""

    SESSION_OPEN = "session_open"
    SESSION_CLOSE = "session_close"
    RECOVERY = "recovery"
    SEGMENT = "segment"
    PHOTO = "photo"
    INCIDENT_OPEN = "incident_open"
    INCIDENT_CLOSE = "incident_close"
    BOOKMARK = "bookmark"
    NOTICE = "notice"
    SELF_CHECK = "self_check"
    STORAGE_FULL = "storage_full"
    STORAGE_RESUMED = "storage_resumed"
    DELETION_REFUSED = "deletion_refused"
    CLOCK_FAULT = "clock_fault"
    MEDIA_FAILING = "media_failing"
    CUSTODY = "custody"


MEDIA_KINDS = frozenset({RecordKind.SEGMENT, RecordKind.PHOTO})

#: Body fields per kind: (required, optional). Bodies reject unknown fields like the rest.
BODY_FIELDS: dict[RecordKind, tuple[frozenset[str], frozenset[str]]] = {
    RecordKind.SESSION_OPEN: (frozenset({"cert", "reason"}), frozenset({"prev_session"})),
    RecordKind.SESSION_CLOSE: (frozenset({"reason"}), frozenset({"segments"})),
    RecordKind.RECOVERY: (
        frozenset({"last_seq", "last_hash", "prev_boot", "prev_session", "torn"}),
        frozenset({"last_end"}),
    ),
    RecordKind.SEGMENT: (frozenset(), frozenset({"frames", "preroll", "keyframe"})),
    RecordKind.PHOTO: (frozenset(), frozenset({"label"})),
    RecordKind.INCIDENT_OPEN: (frozenset(), frozenset({"label"})),
    RecordKind.INCIDENT_CLOSE: (frozenset(), frozenset({"label"})),
    RecordKind.BOOKMARK: (frozenset({"label"}), frozenset()),
    RecordKind.NOTICE: (frozenset({"reason", "pattern", "prompt"}), frozenset()),
    RecordKind.SELF_CHECK: (frozenset({"passed", "items"}), frozenset()),
    RecordKind.STORAGE_FULL: (frozenset({"free", "total"}), frozenset()),
    RecordKind.STORAGE_RESUMED: (frozenset({"free", "total"}), frozenset()),
    RecordKind.DELETION_REFUSED: (frozenset({"interface", "target"}), frozenset({"requester"})),
    RecordKind.CLOCK_FAULT: (frozenset({"offset", "threshold"}), frozenset()),
    RecordKind.MEDIA_FAILING: (frozenset({"detail"}), frozenset()),
    RecordKind.CUSTODY: (frozenset({"action"}), frozenset({"officer"})),
}


@dataclass(frozen=True, slots=True)
class ClockState:
    """Where the wall clock came from and how far off it was measured to be."""

    source: str  # "ntp", "server", "rtc" or "none"
    offset: int  # microseconds, device minus reference (signed)
    synced: bool

    SOURCES = ("ntp", "server", "rtc", "none")

    def to_cbor(self) -> dict[str, Any]:
        """The ``clock`` map."""
        return {"src": self.source, "offset": self.offset, "synced": self.synced}

    @classmethod
    def from_cbor(cls, value: object) -> ClockState:
        """Parse the ``clock`` map."""
        what = "record clock"
        body = check_map(value, what, {"src", "offset", "synced"})
        source = get_text(body, "src", what, limit=16)
        if source not in cls.SOURCES:
            raise DecodeError(f"{what}: unknown clock source {source!r}")
        return cls(
            source, get_int(body, "offset", what, minimum=-MAX_INT), get_bool(body, "synced", what)
        )


@dataclass(frozen=True, slots=True)
class MediaRef:
    """The media a record vouches for: ciphertext hash and length, plaintext commitment."""

    hash: bytes
    length: int
    commitment: bytes
    content_type: str

    def to_cbor(self) -> dict[str, Any]:
        """The ``media`` map."""
        return {
            "hash": self.hash,
            "len": self.length,
            "commit": self.commitment,
            "type": self.content_type,
        }

    @classmethod
    def from_cbor(cls, value: object) -> MediaRef:
        """Parse the ``media`` map."""
        what = "record media"
        body = check_map(value, what, {"hash", "len", "commit", "type"})
        return cls(
            get_bytes(body, "hash", what, size=HASH_LEN),
            get_int(body, "len", what),
            get_bytes(body, "commit", what, size=HASH_LEN),
            get_text(body, "type", what, limit=64),
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    """The newest server checkpoint the device had seen: tree size and root hash."""

    size: int
    root: bytes

    def to_cbor(self) -> dict[str, Any]:
        """The ``anchor`` map."""
        return {"size": self.size, "root": self.root}

    @classmethod
    def from_cbor(cls, value: object) -> Anchor:
        """Parse the ``anchor`` map."""
        what = "record anchor"
        body = check_map(value, what, {"size", "root"})
        return cls(get_int(body, "size", what), get_bytes(body, "root", what, size=HASH_LEN))


REQUIRED = frozenset(
    {
        "v",
        "suite",
        "device",
        "session",
        "boot",
        "seq",
        "prev",
        "kind",
        "t0",
        "t1",
        "m0",
        "m1",
        "clock",
        "body",
    }
)
OPTIONAL = frozenset({"officer", "incident", "case", "media", "anchor"})


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a device chain. Times are microseconds (wall: since the Unix epoch)."""

    suite: Suite
    device: str
    session: bytes
    boot: bytes
    seq: int
    prev: bytes
    kind: RecordKind
    t0: int
    t1: int
    m0: int
    m1: int
    clock: ClockState
    body: Mapping[str, Any] = field(default_factory=dict)
    officer: str | None = None
    incident: str | None = None
    case: str | None = None
    media: MediaRef | None = None
    anchor: Anchor | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate field values; raises DecodeError."""
        what = f"record {self.seq}"
        check_device_id(self.device, what)
        if len(self.session) != ID_LEN or len(self.boot) != ID_LEN:
            raise DecodeError(f"{what}: session and boot ids must be {ID_LEN} bytes")
        if len(self.prev) != HASH_LEN:
            raise DecodeError(f"{what}: prev must be {HASH_LEN} bytes")
        if not 0 <= self.seq <= MAX_INT:
            raise DecodeError(f"{what}: seq out of range")
        if self.t1 < self.t0 or self.m1 < self.m0:
            raise DecodeError(f"{what}: ends before it starts")
        if (self.kind in MEDIA_KINDS) != (self.media is not None):
            raise DecodeError(f"{what}: media belongs to segment and photo records, and only there")
        required, optional = BODY_FIELDS[self.kind]
        check_map(self.body, f"{what} body ({self.kind.value})", required, optional)

    @property
    def duration(self) -> int:
        """Wall-clock length in microseconds."""
        return self.t1 - self.t0

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return without_none(
            {
                "v": self.version,
                "suite": self.suite.value,
                "device": self.device,
                "session": self.session,
                "boot": self.boot,
                "seq": self.seq,
                "prev": self.prev,
                "kind": self.kind.value,
                "t0": self.t0,
                "t1": self.t1,
                "m0": self.m0,
                "m1": self.m1,
                "clock": self.clock.to_cbor(),
                "body": dict(self.body),
                "officer": self.officer,
                "incident": self.incident,
                "case": self.case,
                "media": self.media.to_cbor() if self.media else None,
                "anchor": self.anchor.to_cbor() if self.anchor else None,
            }
        )

    def sign(self, signer: Signer) -> bytes:
        """The encoded COSE_Sign1 of this record."""
        return cose.sign_object(signer, cose.ContentType.RECORD, self.to_cbor())

    def with_(self, **changes: Any) -> Record:
        """A copy with some fields changed (re-validated)."""
        return replace(self, **changes)

    @classmethod
    def from_cbor(cls, value: object) -> Record:
        """Parse a record payload map strictly."""
        what = "record"
        body = check_map(value, what, REQUIRED, OPTIONAL)
        check_version(body, what)
        try:
            suite = Suite(body["suite"])
        except ValueError as exc:
            raise AlgorithmError(f"{what}: unknown suite {body['suite']!r}") from exc
        try:
            kind = RecordKind(body["kind"])
        except ValueError as exc:
            raise DecodeError(f"{what}: unknown kind {body['kind']!r}") from exc
        inner = body["body"]
        if not isinstance(inner, Mapping):
            raise DecodeError(f"{what}: body must be a map")
        return cls(
            suite=suite,
            device=check_device_id(body["device"], what),
            session=get_bytes(body, "session", what, size=ID_LEN),
            boot=get_bytes(body, "boot", what, size=ID_LEN),
            seq=get_int(body, "seq", what),
            prev=get_bytes(body, "prev", what, size=HASH_LEN),
            kind=kind,
            t0=get_int(body, "t0", what),
            t1=get_int(body, "t1", what),
            m0=get_int(body, "m0", what),
            m1=get_int(body, "m1", what),
            clock=ClockState.from_cbor(body["clock"]),
            body=dict(inner),
            officer=optional_text(body, "officer", what),
            incident=optional_text(body, "incident", what),
            case=optional_text(body, "case", what),
            media=MediaRef.from_cbor(body["media"]) if "media" in body else None,
            anchor=Anchor.from_cbor(body["anchor"]) if "anchor" in body else None,
        )


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record together with its envelope; ``digest`` is what the next record's prev holds."""

    record: Record
    envelope: cose.Sign1

    @property
    def digest(self) -> bytes:
        """SHA-256 of the encoded COSE_Sign1."""
        return self.envelope.digest

    @property
    def encoded(self) -> bytes:
        """The encoded COSE_Sign1 bytes."""
        return self.envelope.encoded

    @classmethod
    def parse(cls, data: bytes) -> SignedRecord:
        """Decode a signed record (its signature is checked by the verifier, not here)."""
        envelope = cose.decode(data, cose.ContentType.RECORD)
        return cls(Record.from_cbor(envelope.body("record")), envelope)

    @classmethod
    def create(cls, record: Record, signer: Signer) -> SignedRecord:
        """Sign ``record`` and wrap the result."""
        return cls.parse(record.sign(signer))


GENESIS_PREV = ZERO_HASH


def encode_record_list(records: list[bytes]) -> bytes:
    """Encode signed records as a CBOR sequence of byte strings (journal and chain files)."""
    return b"".join(cbor.bstr_item(r) for r in records)
