"""Keys and certificates: the fleet root, device, session and server keys, and revocations.

The trust chain is::

    root (self-signed, pinned by fingerprint)
     ├── device certificate    kind "device",     Ed25519, subject = device id
     │    └── session certificate   kind "session", Ed25519, issued by the device key
     ├── server certificate    kind "server",     Ed25519: receipts, checkpoints, exports
     └── encryption certificate kind "encryption", X25519: the HPKE recipient of media

Every certificate is a COSE_Sign1 (content type ``cert``) signed by its issuer, whose key id
is the COSE ``kid``. Revocations are a root-signed list naming device keys and the log size
and time from which what they sign is no longer trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import cose
from protocol.errors import AlgorithmError, CertificateError, DecodeError
from protocol.hashing import fingerprint
from protocol.keys import PUBLIC_KEY_LEN, Signer, key_id
from protocol.wire import (
    FORMAT_VERSION,
    check_device_id,
    check_map,
    check_version,
    get_bytes,
    get_int,
    get_text,
    without_none,
)


class KeyKind(StrEnum):
    """What a certified key may sign (or, for ``encryption``, receive)."""

    DEVICE = "device"
    SESSION = "session"
    SERVER = "server"
    ENCRYPTION = "encryption"


#: Which issuer kind may certify which subject kind ("root" is the root itself).
ISSUER_OF = {
    KeyKind.DEVICE: "root",
    KeyKind.SERVER: "root",
    KeyKind.ENCRYPTION: "root",
    KeyKind.SESSION: KeyKind.DEVICE.value,
}
ALG_OF = {
    KeyKind.DEVICE: "Ed25519",
    KeyKind.SESSION: "Ed25519",
    KeyKind.SERVER: "Ed25519",
    KeyKind.ENCRYPTION: "X25519",
}


@dataclass(frozen=True, slots=True)
class RootKey:
    """The fleet root: a self-signed Ed25519 public key with a human name."""

    key: bytes
    name: str
    created: int

    @property
    def kid(self) -> bytes:
        """Key id of the root key."""
        return key_id(self.key)

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>``: what ``verify --trust`` pins."""
        return fingerprint(self.key)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return {
            "v": FORMAT_VERSION,
            "kind": "root",
            "alg": "Ed25519",
            "key": self.key,
            "name": self.name,
            "created": self.created,
        }

    @classmethod
    def issue(cls, signer: Signer, name: str, created: int) -> bytes:
        """Self-sign the root described by ``signer``'s key."""
        root = cls(signer.public_key, name, created)
        return cose.sign_object(signer, cose.ContentType.ROOT, root.to_cbor())

    @classmethod
    def load(cls, data: bytes) -> RootKey:
        """Parse and check a self-signed root."""
        msg = cose.decode(data, cose.ContentType.ROOT)
        what = "root key"
        body = check_map(msg.body(what), what, {"v", "kind", "alg", "key", "name", "created"})
        check_version(body, what)
        if body["kind"] != "root":
            raise DecodeError(f"{what}: kind must be 'root'")
        if body["alg"] != "Ed25519":
            raise CertificateError(f"{what}: alg {body['alg']!r} is not Ed25519")
        root = cls(
            get_bytes(body, "key", what, size=PUBLIC_KEY_LEN),
            get_text(body, "name", what, limit=200),
            get_int(body, "created", what),
        )
        if msg.kid != root.kid:
            raise CertificateError(f"{what}: not signed by its own key")
        msg.verify(root.key)
        return root


@dataclass(frozen=True, slots=True)
class Certificate:
    """A key certified by an issuer; the signed bytes are kept in ``encoded``."""

    kind: KeyKind
    subject: str
    alg: str
    key: bytes
    issued: int
    issuer: bytes
    session: bytes | None = None
    encoded: bytes = field(default=b"", compare=False)

    @property
    def kid(self) -> bytes:
        """Key id of the certified key."""
        return key_id(self.key)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return without_none(
            {
                "v": FORMAT_VERSION,
                "kind": self.kind.value,
                "subject": self.subject,
                "alg": self.alg,
                "key": self.key,
                "issued": self.issued,
                "session": self.session,
            }
        )

    @classmethod
    def issue(
        cls,
        issuer: Signer,
        kind: KeyKind,
        subject: str,
        key: bytes,
        issued: int,
        session: bytes | None = None,
    ) -> bytes:
        """Certify ``key`` as a ``kind`` key of ``subject``; return the signed certificate."""
        cert = cls(kind, subject, ALG_OF[kind], key, issued, issuer.kid, session)
        cert.check_shape()
        return cose.sign_object(issuer, cose.ContentType.CERTIFICATE, cert.to_cbor())

    def check_shape(self) -> None:
        """Validate field values (not the signature)."""
        what = f"{self.kind.value} certificate"
        if self.kind in (KeyKind.DEVICE, KeyKind.SESSION):
            check_device_id(self.subject, what)
        if len(self.key) != PUBLIC_KEY_LEN:
            raise DecodeError(f"{what}: key must be {PUBLIC_KEY_LEN} bytes")
        if self.alg != ALG_OF[self.kind]:
            raise CertificateError(f"{what}: alg {self.alg!r}, expected {ALG_OF[self.kind]}")
        if (self.kind is KeyKind.SESSION) != (self.session is not None):
            raise DecodeError(f"{what}: a session id belongs in session certificates only")
        if self.session is not None and len(self.session) != 16:
            raise DecodeError(f"{what}: session id must be 16 bytes")

    @classmethod
    def parse(cls, data: bytes) -> tuple[Certificate, cose.Sign1]:
        """Parse a certificate (signature unchecked); return it with its envelope."""
        msg = cose.decode(data, cose.ContentType.CERTIFICATE)
        what = "certificate"
        body = check_map(
            msg.body(what), what, {"v", "kind", "subject", "alg", "key", "issued"}, {"session"}
        )
        check_version(body, what)
        try:
            kind = KeyKind(body["kind"])
        except ValueError as exc:
            raise DecodeError(f"{what}: unknown kind {body['kind']!r}") from exc
        if not isinstance(body["alg"], str):
            raise DecodeError(f"{what}: alg must be text")
        cert = cls(
            kind,
            get_text(body, "subject", what, limit=200),
            body["alg"],
            get_bytes(body, "key", what, size=PUBLIC_KEY_LEN),
            get_int(body, "issued", what),
            msg.kid,
            get_bytes(body, "session", what, size=16) if "session" in body else None,
            bytes(data),
        )
        cert.check_shape()
        return cert, msg


@dataclass(frozen=True, slots=True)
class Revocation:
    """A device key that the fleet no longer trusts from ``log_size`` / ``time`` on."""

    device: str
    kid: bytes
    time: int
    log_size: int
    reason: str

    def to_cbor(self) -> dict[str, Any]:
        """The map inside a revocation list."""
        return {
            "device": self.device,
            "kid": self.kid,
            "time": self.time,
            "log_size": self.log_size,
            "reason": self.reason,
        }

    @classmethod
    def from_cbor(cls, value: object) -> Revocation:
        """Parse one entry of a revocation list."""
        what = "revocation"
        body = check_map(value, what, {"device", "kid", "time", "log_size", "reason"})
        return cls(
            check_device_id(body["device"], what),
            get_bytes(body, "kid", what, size=32),
            get_int(body, "time", what),
            get_int(body, "log_size", what),
            get_text(body, "reason", what, limit=500),
        )


def issue_revocations(root: Signer, issued: int, entries: list[Revocation]) -> bytes:
    """A root-signed revocation list."""
    body = {
        "v": FORMAT_VERSION,
        "kind": "revocations",
        "issued": issued,
        "entries": [e.to_cbor() for e in entries],
    }
    return cose.sign_object(root, cose.ContentType.REVOCATIONS, body)


def parse_revocations(data: bytes, root: RootKey) -> list[Revocation]:
    """Parse and check a revocation list signed by ``root``."""
    msg = cose.decode(data, cose.ContentType.REVOCATIONS)
    what = "revocation list"
    if msg.kid != root.kid:
        raise CertificateError(f"{what}: not signed by the root")
    msg.verify(root.key)
    body = check_map(msg.body(what), what, {"v", "kind", "issued", "entries"})
    check_version(body, what)
    entries = body["entries"]
    if body["kind"] != "revocations" or not isinstance(entries, list | tuple):
        raise DecodeError(f"{what}: malformed")
    return [Revocation.from_cbor(e) for e in entries]


class TrustStore:
    """Keys known to chain to one root; the verifier's view of who may sign what."""

    def __init__(self, root: RootKey) -> None:
        self.root = root
        self._by_kid: dict[bytes, Certificate] = {}
        self.revoked: dict[bytes, Revocation] = {}

    def add(self, data: bytes) -> Certificate:
        """Check a root-issued certificate (device, server, encryption) and remember it."""
        cert, msg = Certificate.parse(data)
        if ISSUER_OF[cert.kind] != "root":
            raise CertificateError(f"a {cert.kind.value} certificate is not issued by the root")
        if msg.kid != self.root.kid:
            raise CertificateError(
                f"{cert.kind.value} certificate for {cert.subject!r} "
                "is not issued by the trusted root"
            )
        msg.verify(self.root.key)
        self._by_kid[cert.kid] = cert
        return cert

    def add_revocations(self, data: bytes) -> None:
        """Apply a root-signed revocation list."""
        for entry in parse_revocations(data, self.root):
            self.revoked[entry.kid] = entry

    def session_certificate(self, data: bytes, device: str) -> tuple[Certificate, Certificate]:
        """Check a session certificate issued by ``device``'s certified device key.

        Returns the session certificate and the device certificate that issued it.
        """
        try:
            cert, msg = Certificate.parse(data)
        except AlgorithmError as exc:
            # A certificate under another algorithm certifies nothing.
            raise CertificateError(f"session certificate of {device!r}: {exc}") from exc
        if cert.kind is not KeyKind.SESSION:
            raise CertificateError("expected a session certificate")
        issuer = self._by_kid.get(msg.kid)
        if issuer is None or issuer.kind is not KeyKind.DEVICE:
            raise CertificateError(
                f"session key of {cert.subject!r} is issued by an uncertified key"
            )
        if issuer.subject != device or cert.subject != device:
            raise CertificateError(
                f"session key names {cert.subject!r}, chain belongs to {device!r}"
            )
        msg.verify(issuer.key)
        return cert, issuer

    def get(self, kid: bytes, kind: KeyKind, subject: str | None = None) -> Certificate:
        """The certified key with ``kid`` of ``kind`` (and ``subject``), or CertificateError."""
        cert = self._by_kid.get(kid)
        if cert is None:
            raise CertificateError(f"key {kid.hex()[:16]} is not certified by the trusted root")
        if cert.kind is not kind:
            raise CertificateError(
                f"key {kid.hex()[:16]} is a {cert.kind.value} key, not {kind.value}"
            )
        if subject is not None and cert.subject != subject:
            raise CertificateError(
                f"key {kid.hex()[:16]} belongs to {cert.subject!r}, not {subject!r}"
            )
        return cert

    def device_key(self, device: str) -> Certificate | None:
        """The device certificate of ``device`` (the newest one added), if any."""
        found = None
        for cert in self._by_kid.values():
            if cert.kind is KeyKind.DEVICE and cert.subject == device:
                found = cert
        return found

    def server_key(self, kid: bytes) -> Certificate:
        """The certified server key with ``kid``."""
        return self.get(kid, KeyKind.SERVER)

    def verify_server_signed(self, msg: cose.Sign1) -> Certificate:
        """Check a server-signed envelope (receipt, checkpoint, manifest)."""
        cert = self.server_key(msg.kid)
        msg.verify(cert.key)
        return cert

    def certificates(self) -> list[Certificate]:
        """Every certificate added, in the order added."""
        return list(self._by_kid.values())
