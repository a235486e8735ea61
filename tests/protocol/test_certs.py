"""The fleet root, certificates of each kind, session certificates, revocations, the trust store."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from protocol import cbor, cose
from protocol.certs import (
    ALG_OF,
    ISSUER_OF,
    Certificate,
    KeyKind,
    Revocation,
    RootKey,
    TrustStore,
    issue_revocations,
    parse_revocations,
)
from protocol.errors import CertificateError, DecodeError, SignatureError, VersionError
from protocol.hashing import sha256
from protocol.keys import EncryptionKey, SoftwareSigner

T = 1_790_000_000_000_000
DEV = "cam-001"
SESSION = bytes(range(16))


def _key(name: str) -> SoftwareSigner:
    return SoftwareSigner.from_seed(sha256(f"unbroken certs test {name}".encode()))


ROOT, SERVER, DEVICE, SESSION_KEY, OTHER = (
    _key(n) for n in ("root", "server", "device", "session", "other")
)
ENCRYPTION = EncryptionKey.from_seed(sha256(b"unbroken certs test encryption"))


@pytest.fixture
def root() -> RootKey:
    """The test root, loaded."""
    return RootKey.load(RootKey.issue(ROOT, "Test fleet", T))


@pytest.fixture
def trust(root: RootKey) -> TrustStore:
    """A trust store holding server, encryption and device certificates."""
    store = TrustStore(root)
    store.add(Certificate.issue(ROOT, KeyKind.SERVER, "server", SERVER.public_key, T))
    store.add(Certificate.issue(ROOT, KeyKind.ENCRYPTION, "server", ENCRYPTION.public_key, T))
    store.add(Certificate.issue(ROOT, KeyKind.DEVICE, DEV, DEVICE.public_key, T))
    return store


def _session_cert(issuer: SoftwareSigner = DEVICE, subject: str = DEV) -> bytes:
    return Certificate.issue(
        issuer, KeyKind.SESSION, subject, SESSION_KEY.public_key, T, session=SESSION
    )


def _resign(signer: SoftwareSigner, ct: cose.ContentType, body: dict[str, Any]) -> bytes:
    return cose.sign_object(signer, ct, body)


# ----------------------------------------------------------------- root
def test_root_round_trip(root: RootKey) -> None:
    assert root.key == ROOT.public_key
    assert root.name == "Test fleet"
    assert root.created == T
    assert root.kid == ROOT.kid
    assert root.fingerprint == ROOT.fingerprint
    msg = cose.decode(RootKey.issue(ROOT, "Test fleet", T), cose.ContentType.ROOT)
    assert msg.body("root") == {
        "v": 1,
        "kind": "root",
        "alg": "Ed25519",
        "key": ROOT.public_key,
        "name": "Test fleet",
        "created": T,
    }


def test_root_signed_by_another_key_is_refused() -> None:
    body = RootKey(ROOT.public_key, "Test fleet", T).to_cbor()
    with pytest.raises(CertificateError, match="own key"):
        RootKey.load(_resign(OTHER, cose.ContentType.ROOT, body))


def test_root_with_forged_signature_under_its_own_kid() -> None:
    body = cbor.encode(RootKey(ROOT.public_key, "Test fleet", T).to_cbor())
    good = cose.decode(cose.sign(ROOT, cose.ContentType.ROOT, body))
    forged = OTHER.sign(good.to_be_signed())
    data = cbor.encode(cbor2.CBORTag(18, [good.protected, {}, body, forged]))
    with pytest.raises(SignatureError):
        RootKey.load(data)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"v": 2}, VersionError),
        ({"v": True}, DecodeError),
        ({"kind": "device"}, DecodeError),
        ({"alg": "ES256"}, CertificateError),
        ({"key": b"\x00" * 31}, DecodeError),
        ({"name": "n" * 201}, DecodeError),
        ({"created": -1}, DecodeError),
        ({"extra": 1}, DecodeError),
    ],
)
def test_root_field_rules(change: dict[str, Any], error: type[Exception]) -> None:
    body = {**RootKey(ROOT.public_key, "Test fleet", T).to_cbor(), **change}
    with pytest.raises(error):
        RootKey.load(_resign(ROOT, cose.ContentType.ROOT, body))


def test_root_of_wrong_content_type() -> None:
    body = RootKey(ROOT.public_key, "Test fleet", T).to_cbor()
    with pytest.raises(DecodeError):
        RootKey.load(_resign(ROOT, cose.ContentType.CERTIFICATE, body))


# ----------------------------------------------------------------- certificates
@pytest.mark.parametrize("kind", [KeyKind.DEVICE, KeyKind.SERVER, KeyKind.ENCRYPTION])
def test_root_issued_certificates(trust: TrustStore, kind: KeyKind) -> None:
    key = ENCRYPTION.public_key if kind is KeyKind.ENCRYPTION else DEVICE.public_key
    subject = DEV if kind is KeyKind.DEVICE else "server"
    data = Certificate.issue(ROOT, kind, subject, key, T)
    cert, msg = Certificate.parse(data)
    assert (cert.kind, cert.subject, cert.key, cert.issued) == (kind, subject, key, T)
    assert cert.alg == ALG_OF[kind]
    assert cert.issuer == ROOT.kid == msg.kid
    assert cert.kid == sha256(key)
    assert cert.encoded == data
    assert cert.session is None
    assert "session" not in msg.body("c")
    assert ISSUER_OF[kind] == "root"


def test_session_certificate(trust: TrustStore) -> None:
    cert, device_cert = trust.session_certificate(_session_cert(), DEV)
    assert cert.kind is KeyKind.SESSION
    assert cert.session == SESSION
    assert cert.issuer == DEVICE.kid
    assert device_cert.key == DEVICE.public_key
    assert cose.decode(_session_cert()).body("c")["session"] == SESSION


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": KeyKind.DEVICE, "subject": "Cam_1"}, DecodeError),
        ({"kind": KeyKind.SESSION, "subject": DEV}, DecodeError),  # no session id
        ({"kind": KeyKind.DEVICE, "subject": DEV, "session": SESSION}, DecodeError),
        ({"kind": KeyKind.SESSION, "subject": DEV, "session": b"\x00" * 15}, DecodeError),
        ({"kind": KeyKind.SERVER, "subject": "server", "key": b"\x00" * 33}, DecodeError),
    ],
)
def test_certificate_issue_checks_shape(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args = {"key": DEVICE.public_key, "issued": T, **kwargs}
    with pytest.raises(error):
        Certificate.issue(ROOT, **args)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"v": 0}, VersionError),
        ({"kind": "root"}, DecodeError),
        ({"kind": ["device"]}, DecodeError),
        ({"alg": "X25519"}, CertificateError),
        ({"alg": 5}, DecodeError),
        ({"subject": "has space"}, DecodeError),
        ({"subject": 7}, DecodeError),
        ({"issued": "now"}, DecodeError),
        ({"issued": 1 << 63}, DecodeError),
        ({"session": SESSION}, DecodeError),
        ({"key": DEVICE.public_key.hex()}, DecodeError),
        ({"issuer": ROOT.kid}, DecodeError),
    ],
)
def test_certificate_parse_rules(change: dict[str, Any], error: type[Exception]) -> None:
    body = {
        "v": 1,
        "kind": "device",
        "subject": DEV,
        "alg": "Ed25519",
        "key": DEVICE.public_key,
        "issued": T,
        **change,
    }
    with pytest.raises(error):
        Certificate.parse(_resign(ROOT, cose.ContentType.CERTIFICATE, body))


def test_certificate_missing_field() -> None:
    body = {"v": 1, "kind": "device", "subject": DEV, "alg": "Ed25519", "key": DEVICE.public_key}
    with pytest.raises(DecodeError, match="missing"):
        Certificate.parse(_resign(ROOT, cose.ContentType.CERTIFICATE, body))


def test_trust_store_refuses_foreign_issuers(root: RootKey) -> None:
    store = TrustStore(root)
    with pytest.raises(CertificateError, match="trusted root"):
        store.add(Certificate.issue(OTHER, KeyKind.DEVICE, DEV, DEVICE.public_key, T))
    with pytest.raises(CertificateError, match="not issued by the root"):
        store.add(_session_cert())
    assert store.certificates() == []


def test_trust_store_refuses_a_forged_signature_under_the_root_kid(root: RootKey) -> None:
    good = cose.decode(Certificate.issue(ROOT, KeyKind.DEVICE, DEV, DEVICE.public_key, T))
    forged = cbor.encode(
        cbor2.CBORTag(18, [good.protected, {}, good.payload, OTHER.sign(good.to_be_signed())])
    )
    with pytest.raises(SignatureError):
        TrustStore(root).add(forged)


def test_session_certificate_rules(trust: TrustStore) -> None:
    with pytest.raises(CertificateError, match="uncertified"):
        trust.session_certificate(_session_cert(issuer=OTHER), DEV)
    with pytest.raises(CertificateError, match="uncertified"):
        trust.session_certificate(_session_cert(issuer=SERVER), DEV)  # a server key
    with pytest.raises(CertificateError, match="belongs to"):
        trust.session_certificate(_session_cert(), "cam-002")
    with pytest.raises(CertificateError, match="belongs to"):
        trust.session_certificate(_session_cert(subject="cam-002"), DEV)
    with pytest.raises(CertificateError, match="expected a session"):
        trust.session_certificate(
            Certificate.issue(DEVICE, KeyKind.DEVICE, DEV, SESSION_KEY.public_key, T), DEV
        )


def test_trust_store_lookups(trust: TrustStore) -> None:
    assert trust.server_key(SERVER.kid).key == SERVER.public_key
    assert trust.get(DEVICE.kid, KeyKind.DEVICE, DEV).subject == DEV
    device = trust.device_key(DEV)
    assert device is not None
    assert device.key == DEVICE.public_key
    assert trust.device_key("cam-404") is None
    with pytest.raises(CertificateError, match="not certified"):
        trust.get(OTHER.kid, KeyKind.SERVER)
    with pytest.raises(CertificateError, match="device key, not server"):
        trust.server_key(DEVICE.kid)
    with pytest.raises(CertificateError, match="belongs to"):
        trust.get(DEVICE.kid, KeyKind.DEVICE, "cam-002")
    assert [c.kind for c in trust.certificates()] == [
        KeyKind.SERVER,
        KeyKind.ENCRYPTION,
        KeyKind.DEVICE,
    ]


def test_device_key_is_the_newest(trust: TrustStore) -> None:
    newer = SoftwareSigner.from_seed(sha256(b"rotated device key"))
    trust.add(Certificate.issue(ROOT, KeyKind.DEVICE, DEV, newer.public_key, T + 1))
    device = trust.device_key(DEV)
    assert device is not None
    assert device.key == newer.public_key


def test_verify_server_signed(trust: TrustStore) -> None:
    msg = cose.decode(cose.sign(SERVER, cose.ContentType.CHECKPOINT, cbor.encode({"a": 1})))
    assert trust.verify_server_signed(msg).kind is KeyKind.SERVER
    by_device = cose.decode(cose.sign(DEVICE, cose.ContentType.CHECKPOINT, cbor.encode({})))
    with pytest.raises(CertificateError):
        trust.verify_server_signed(by_device)


# ----------------------------------------------------------------- revocations
def _entry(**change: Any) -> dict[str, Any]:
    return {**Revocation(DEV, b"k" * 32, 0, 0, "").to_cbor(), **change}


def test_revocations_round_trip(root: RootKey, trust: TrustStore) -> None:
    entry = Revocation(DEV, DEVICE.kid, T + 5, 17, "lost")
    data = issue_revocations(ROOT, T + 6, [entry])
    assert parse_revocations(data, root) == [entry]
    trust.add_revocations(data)
    assert trust.revoked == {DEVICE.kid: entry}
    assert parse_revocations(issue_revocations(ROOT, T, []), root) == []


def test_revocations_must_come_from_the_root(root: RootKey) -> None:
    entry = Revocation(DEV, DEVICE.kid, T, 0, "lost")
    with pytest.raises(CertificateError, match="not signed by the root"):
        parse_revocations(issue_revocations(OTHER, T, [entry]), root)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"kind": "revocation"}, DecodeError),
        ({"entries": {"a": 1}}, DecodeError),
        ({"entries": [{"device": DEV}]}, DecodeError),
        ({"entries": [_entry(device="BAD")]}, DecodeError),
        ({"entries": [_entry(kid=b"k" * 31)]}, DecodeError),
        ({"entries": [_entry(log_size=-1)]}, DecodeError),
        ({"entries": [_entry(time="then")]}, DecodeError),
        ({"entries": [_entry(reason="r" * 501)]}, DecodeError),
        ({"entries": [{**_entry(), "extra": 1}]}, DecodeError),
        ({"v": 9}, VersionError),
        ({"more": 1}, DecodeError),
    ],
)  # fmt: skip
def test_revocation_list_rules(
    root: RootKey, change: dict[str, Any], error: type[Exception]
) -> None:
    body = {"v": 1, "kind": "revocations", "issued": T, "entries": [], **change}
    with pytest.raises(error):
        parse_revocations(_resign(ROOT, cose.ContentType.REVOCATIONS, body), root)
