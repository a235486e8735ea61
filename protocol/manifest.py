"""The export manifest: what a bundle claims to contain, signed by the server that made it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import cose
from protocol.errors import DecodeError
from protocol.hashing import HASH_LEN
from protocol.keys import Signer
from protocol.wire import (
    FORMAT_VERSION,
    check_device_id,
    check_map,
    check_version,
    get_bool,
    get_bytes,
    get_int,
    get_text,
)

MAX_CHAINS = 10_000
MAX_FILES = 16


@dataclass(frozen=True, slots=True)
class ChainRange:
    """One device's part of an export: records ``seq_from..seq_to`` inclusive."""

    device: str
    seq_from: int
    seq_to: int
    first_prev: bytes
    head: bytes
    records: int

    def to_cbor(self) -> dict[str, Any]:
        """The map inside the manifest's ``chains`` list."""
        return {
            "device": self.device,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "first_prev": self.first_prev,
            "head": self.head,
            "records": self.records,
        }

    @classmethod
    def from_cbor(cls, value: object) -> ChainRange:
        """Parse one chain range."""
        what = "manifest chain"
        body = check_map(
            value, what, {"device", "seq_from", "seq_to", "first_prev", "head", "records"}
        )
        return cls(
            check_device_id(body["device"], what),
            get_int(body, "seq_from", what),
            get_int(body, "seq_to", what),
            get_bytes(body, "first_prev", what, size=HASH_LEN),
            get_bytes(body, "head", what, size=HASH_LEN),
            get_int(body, "records", what),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """A bundle's signed table of contents."""

    created: int
    log: str
    exporter: str
    scope: str
    chains: tuple[ChainRange, ...]
    openings: bool
    #: SHA-256 of each trust and log file of the bundle, by path: files that carry signed
    #: items but are not signed as a whole (a duplicated or dropped item changes them).
    files: Mapping[str, bytes] = field(default_factory=dict)
    encoded: bytes = field(default=b"", compare=False)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return {
            "v": FORMAT_VERSION,
            "kind": "export",
            "created": self.created,
            "log": self.log,
            "exporter": self.exporter,
            "scope": self.scope,
            "chains": [c.to_cbor() for c in self.chains],
            "openings": self.openings,
            "files": dict(self.files),
        }

    def sign(self, signer: Signer) -> bytes:
        """The encoded COSE_Sign1."""
        return cose.sign_object(signer, cose.ContentType.MANIFEST, self.to_cbor())

    @classmethod
    def parse(cls, data: bytes) -> tuple[Manifest, cose.Sign1]:
        """Parse (signature unchecked)."""
        msg = cose.decode(data, cose.ContentType.MANIFEST)
        what = "manifest"
        body = check_map(
            msg.body(what),
            what,
            {"v", "kind", "created", "log", "exporter", "scope", "chains", "openings", "files"},
        )
        check_version(body, what)
        chains = body["chains"]
        if body["kind"] != "export" or not isinstance(chains, list | tuple):
            raise DecodeError(f"{what}: malformed")
        if len(chains) > MAX_CHAINS:
            raise DecodeError(f"{what}: more than {MAX_CHAINS} chains")
        parsed = tuple(ChainRange.from_cbor(c) for c in chains)
        if len({c.device for c in parsed}) != len(parsed):
            raise DecodeError(f"{what}: a device is listed twice")
        files = body["files"]
        if (
            not isinstance(files, Mapping)
            or len(files) > MAX_FILES
            or not all(
                isinstance(k, str) and isinstance(v, bytes) and len(v) == HASH_LEN
                for k, v in files.items()
            )
        ):
            raise DecodeError(f"{what}: files must map paths to 32-byte hashes")
        return cls(
            get_int(body, "created", what),
            get_text(body, "log", what, limit=200),
            get_text(body, "exporter", what, limit=200),
            get_text(body, "scope", what, limit=1000),
            parsed,
            get_bool(body, "openings", what),
            dict(files),
            bytes(data),
        ), msg
