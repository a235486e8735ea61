"""The media envelope: header, HPKE (checked against an independent RFC 9180 implementation
written here from the RFC text), the info binding and the salted commitment."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor, media
from protocol.errors import AlgorithmError, CryptoError, DecodeError, ProtocolError
from protocol.hashing import sha256
from protocol.keys import EncryptionKey
from protocol.record import Suite

KEY = EncryptionKey.from_seed(sha256(b"unbroken media test key"))
DEV, SESSION, SEQ = "cam-001", bytes(range(16)), 42
SALT = bytes(range(100, 132))
MEDIA = b"\x47" + bytes(range(187)) * 3


# ----------------------------------------------------------------- independent RFC 9180
def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)


def _raw(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_schedule(shared: bytes, info: bytes, aead_id: int) -> tuple[bytes, bytes]:
    suite_id = b"HPKE" + struct.pack(">HHH", 0x0020, 0x0001, aead_id)
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash  # mode_base
    secret = _labeled_extract(suite_id, shared, b"secret", b"")
    nk = 16 if aead_id == 0x0001 else 32
    key = _labeled_expand(suite_id, secret, b"key", context, nk)
    nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, 12)
    return key, nonce


def _shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    kem_suite = b"KEM" + struct.pack(">H", 0x0020)
    prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return _labeled_expand(kem_suite, prk, b"shared_secret", enc + pk_r, 32)


def _aead(aead_id: int, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if aead_id == 0x0001 else ChaCha20Poly1305(key)


def hpke_open(
    sk_r: X25519PrivateKey, enc: bytes, ct: bytes, info: bytes, aad: bytes, aead_id: int
) -> bytes:
    """RFC 9180 base mode, single shot (sequence number 0), X25519 + HKDF-SHA256."""
    dh = sk_r.exchange(X25519PublicKey.from_public_bytes(enc))
    shared = _shared_secret(dh, enc, _raw(sk_r))
    key, nonce = _key_schedule(shared, info, aead_id)
    return _aead(aead_id, key).decrypt(nonce, ct, aad)


def hpke_seal(pk_r: bytes, sk_e: X25519PrivateKey, pt: bytes, info: bytes, aead_id: int) -> bytes:
    """The sender side, with a chosen ephemeral key: returns enc || ct."""
    enc = _raw(sk_e)
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(pk_r))
    key, nonce = _key_schedule(_shared_secret(dh, enc, pk_r), info, aead_id)
    return enc + _aead(aead_id, key).encrypt(nonce, pt, b"")


def test_independent_hpke_reproduces_rfc9180_a1() -> None:
    # RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base.
    sk_r = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    )
    assert _raw(sk_r).hex() == "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    dh = sk_r.exchange(X25519PublicKey.from_public_bytes(enc))
    shared = _shared_secret(dh, enc, _raw(sk_r))
    assert shared.hex() == "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc"
    key, nonce = _key_schedule(shared, info, 0x0001)
    assert key.hex() == "4531685d41d65f03dc48f6b8302c05b0"
    assert nonce.hex() == "56d890e5accaaf011cff4b7d"
    ct = bytes.fromhex(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    pt = hpke_open(sk_r, enc, ct, info, b"Count-0", 0x0001)
    assert pt == b"Beauty is truth, truth beauty"


@pytest.mark.parametrize("suite", list(Suite))
def test_our_envelope_opens_with_the_independent_hpke(suite: Suite) -> None:
    sealed = media.seal(MEDIA, KEY.public_key, suite, DEV, SESSION, SEQ, salt=SALT)
    data = sealed.data
    magic, kem, kdf, aead = struct.unpack(">4sHHH", data[:10])
    assert (magic, kem, kdf, aead) == (b"UBM1", 0x0020, 0x0001, media.AEAD_OF_SUITE[suite])
    info = cbor.encode(["unbroken/media/v1", DEV, SESSION, SEQ])
    assert info == media.hpke_info(DEV, SESSION, SEQ)
    plain = hpke_open(KEY.private_key, data[10:42], data[42:], info, b"", aead)
    assert plain == SALT + MEDIA
    assert sealed.commitment == sha256(SALT + MEDIA) == media.commitment(SALT, MEDIA)
    assert sealed.hash == sha256(data)
    assert len(data) == len(MEDIA) + media.OVERHEAD


@pytest.mark.parametrize("suite", list(Suite))
def test_independent_envelope_opens_with_ours(suite: Suite) -> None:
    eph = X25519PrivateKey.from_private_bytes(sha256(b"fixed ephemeral key"))
    aead = media.AEAD_OF_SUITE[suite]
    info = media.hpke_info(DEV, SESSION, SEQ)
    data = struct.pack(">4sHHH", b"UBM1", 0x20, 1, aead) + hpke_seal(
        KEY.public_key, eph, SALT + MEDIA, info, aead
    )
    assert media.open_sealed(
        data, KEY, DEV, SESSION, SEQ, expect=sha256(SALT + MEDIA), suite=suite
    ) == (
        SALT,
        MEDIA,
    )


# ----------------------------------------------------------------- our envelope
@pytest.mark.parametrize("suite", list(Suite))
def test_round_trip(suite: Suite) -> None:
    sealed = media.seal(MEDIA, KEY.public_key, suite, DEV, SESSION, SEQ)
    salt, plain = media.open_sealed(
        sealed.data, KEY, DEV, SESSION, SEQ, expect=sealed.commitment, suite=suite
    )
    assert plain == MEDIA
    assert len(salt) == 32
    assert sealed.commitment == media.commitment(salt, MEDIA)
    assert media.parse_header(sealed.data) == media.AEAD_OF_SUITE[suite]


def test_encryption_is_randomised_but_the_commitment_is_not() -> None:
    a = media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ, salt=SALT)
    b = media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ, salt=SALT)
    assert a.data != b.data
    assert a.commitment == b.commitment


def test_empty_media() -> None:
    sealed = media.seal(b"", KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ, salt=SALT)
    assert media.open_sealed(sealed.data, KEY, DEV, SESSION, SEQ) == (SALT, b"")
    assert len(sealed.data) == media.OVERHEAD


@pytest.mark.parametrize(
    ("device", "session", "seq"),
    [("cam-002", SESSION, SEQ), (DEV, bytes(16), SEQ), (DEV, SESSION, SEQ + 1)],
)
def test_info_binds_the_place_in_the_chain(device: str, session: bytes, seq: int) -> None:
    sealed = media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ)
    with pytest.raises(CryptoError):
        media.open_sealed(sealed.data, KEY, device, session, seq)


def test_wrong_key_altered_bytes_wrong_commitment() -> None:
    sealed = media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ)
    with pytest.raises(CryptoError):
        media.open_sealed(sealed.data, EncryptionKey.generate(), DEV, SESSION, SEQ)
    for pos in (10, 41, 42, len(sealed.data) - 1):
        altered = bytearray(sealed.data)
        altered[pos] ^= 1
        with pytest.raises(CryptoError):
            media.open_sealed(bytes(altered), KEY, DEV, SESSION, SEQ)
    with pytest.raises(CryptoError, match="commitment"):
        media.open_sealed(sealed.data, KEY, DEV, SESSION, SEQ, expect=bytes(32))
    with pytest.raises(CryptoError):
        media.open_sealed(sealed.data[:-1], KEY, DEV, SESSION, SEQ)


def test_suite_must_match_the_record() -> None:
    sealed = media.seal(MEDIA, KEY.public_key, Suite.AESGCM, DEV, SESSION, SEQ)
    with pytest.raises(AlgorithmError):
        media.open_sealed(sealed.data, KEY, DEV, SESSION, SEQ, suite=Suite.CHACHA)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (b"UBM2" + bytes.fromhex("002000010003"), DecodeError),
        (b"ubm1" + bytes.fromhex("002000010003"), DecodeError),
        (b"UBM1" + bytes.fromhex("001000010003"), AlgorithmError),  # P-256 KEM
        (b"UBM1" + bytes.fromhex("002000020003"), AlgorithmError),  # HKDF-SHA384
        (b"UBM1" + bytes.fromhex("002000010002"), AlgorithmError),  # AES-256-GCM
        (b"UBM1" + bytes.fromhex("00200001ffff"), AlgorithmError),  # export-only
    ],
)
def test_header_rules(header: bytes, error: type[Exception]) -> None:
    sealed = media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ)
    with pytest.raises(error):
        media.open_sealed(header + sealed.data[10:], KEY, DEV, SESSION, SEQ)


def test_too_short_for_an_envelope() -> None:
    header = b"UBM1" + bytes.fromhex("002000010003")
    with pytest.raises(DecodeError):
        media.parse_header(header + bytes(47))
    assert media.parse_header(header + bytes(48)) == 3


def test_plaintext_shorter_than_the_salt() -> None:
    eph = X25519PrivateKey.from_private_bytes(sha256(b"eph"))
    info = media.hpke_info(DEV, SESSION, SEQ)
    data = (
        b"UBM1" + bytes.fromhex("002000010003") + hpke_seal(KEY.public_key, eph, b"short", info, 3)
    )
    with pytest.raises(CryptoError, match="shorter than its salt"):
        media.open_sealed(data, KEY, DEV, SESSION, SEQ)


def test_salt_must_be_32_bytes() -> None:
    with pytest.raises(CryptoError):
        media.seal(MEDIA, KEY.public_key, Suite.CHACHA, DEV, SESSION, SEQ, salt=bytes(31))


def test_recipient_must_be_an_x25519_key() -> None:
    with pytest.raises(DecodeError):
        media.seal(MEDIA, b"\x01" * 31, Suite.CHACHA, DEV, SESSION, SEQ)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_junk_files_raise_protocol_errors_only(data: bytes) -> None:
    for candidate in (data, b"UBM1\x00\x20\x00\x01\x00\x03" + data):
        with pytest.raises(ProtocolError):
            media.open_sealed(candidate, KEY, DEV, SESSION, SEQ)
