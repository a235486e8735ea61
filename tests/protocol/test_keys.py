"""Keys, key ids, fingerprints and key files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from protocol.errors import DecodeError, SignatureError
from protocol.hashing import (
    ZERO_HASH,
    fingerprint,
    parse_fingerprint,
    require_hash,
    sha256,
    sha256_stream,
)
from protocol.keys import EncryptionKey, SoftwareSigner, key_id, verify_signature, x25519_public

# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    signer = SoftwareSigner.from_seed(bytes.fromhex(seed))
    assert signer.public_key.hex() == public
    assert signer.sign(bytes.fromhex(message)).hex() == signature
    verify_signature(signer.public_key, bytes.fromhex(message), bytes.fromhex(signature))


def test_kid_and_fingerprint() -> None:
    signer = SoftwareSigner.from_seed(bytes(32))
    assert signer.kid == key_id(signer.public_key) == sha256(signer.public_key)
    assert signer.fingerprint == "sha256:" + sha256(signer.public_key).hex()
    assert fingerprint(signer.public_key) == signer.fingerprint
    assert parse_fingerprint(signer.fingerprint) == signer.kid


@pytest.mark.parametrize("variant", [str.upper, lambda t: f"  {t}\n", str.lower])
def test_fingerprint_parsing_is_lenient_about_case_and_spaces(variant: object) -> None:
    text = "sha256:" + "ab" * 32
    assert callable(variant)
    assert parse_fingerprint(variant(text)) == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ab" * 32,
        "sha256:" + "ab" * 31,
        "sha256:" + "ab" * 33,
        "sha256:" + "zz" * 32,
        "sha512:" + "ab" * 32,
        "sha256: " + "ab" * 32,
        "sha256:" + "ab" * 32 + "\nx",
    ],
)
def test_fingerprint_parsing_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_fingerprint(text)


def test_hash_helpers() -> None:
    assert sha256(b"a", b"bc") == sha256(b"abc")
    assert sha256_stream(io.BytesIO(b"x" * 200_000), chunk=4096) == (
        sha256(b"x" * 200_000),
        200_000,
    )
    assert require_hash(ZERO_HASH, "x") == ZERO_HASH
    with pytest.raises(DecodeError):
        require_hash(b"\x00" * 31, "x")
    with pytest.raises(DecodeError):
        require_hash("0" * 32, "x")


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(DecodeError):
        SoftwareSigner.from_seed(b"short")


def test_verify_signature_rejects() -> None:
    signer = SoftwareSigner.from_seed(bytes(32))
    sig = signer.sign(b"m")
    with pytest.raises(SignatureError):
        verify_signature(signer.public_key, b"n", sig)
    with pytest.raises(SignatureError):
        verify_signature(signer.public_key[:31], b"m", sig)
    with pytest.raises(SignatureError):
        verify_signature(signer.public_key, b"m", sig[:63])
    with pytest.raises(SignatureError):
        verify_signature(b"\xff" * 32, b"m", sig)  # not a curve point


def test_signer_key_file(tmp_path: Path) -> None:
    signer = SoftwareSigner.generate()
    path = tmp_path / "keys" / "device.pem"
    signer.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SoftwareSigner.load(path).public_key == signer.public_key
    with pytest.raises(FileExistsError):
        signer.save(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.pem"
    SoftwareSigner.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(DecodeError, match="0600"):
        SoftwareSigner.load(path)


def test_key_file_of_wrong_type_or_junk(tmp_path: Path) -> None:
    enc = tmp_path / "enc.pem"
    EncryptionKey.generate().save(enc)
    with pytest.raises(DecodeError, match="not an Ed25519 key"):
        SoftwareSigner.load(enc)
    sig = tmp_path / "sig.pem"
    SoftwareSigner.generate().save(sig)
    with pytest.raises(DecodeError, match="not an X25519 key"):
        EncryptionKey.load(sig)
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n")
    junk.chmod(0o600)
    with pytest.raises(DecodeError):
        SoftwareSigner.load(junk)
    with pytest.raises(DecodeError):
        SoftwareSigner.load(tmp_path / "missing.pem")


def test_encryption_key(tmp_path: Path) -> None:
    key = EncryptionKey.from_seed(bytes(range(32)))
    # RFC 7748 clamping happens inside; the public key is stable for a seed.
    assert EncryptionKey.from_seed(bytes(range(32))).public_key == key.public_key
    path = tmp_path / "enc.pem"
    key.save(path)
    assert EncryptionKey.load(path).public_key == key.public_key
    assert x25519_public(key.public_key) is not None
    with pytest.raises(DecodeError):
        x25519_public(b"\x00" * 31)


def test_rfc7748_alice() -> None:
    alice = EncryptionKey.from_seed(
        bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    )
    assert alice.public_key.hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
