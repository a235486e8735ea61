"""The media envelope: HPKE (RFC 9180, base mode) encryption with a salted commitment.

A media file (one segment or photo) is::

    "UBM1" | kem_id u16 | kdf_id u16 | aead_id u16 | enc (32 bytes) | ciphertext

all integers big-endian; ``kem_id`` 0x0020 (DHKEM X25519, HKDF-SHA256), ``kdf_id`` 0x0001
(HKDF-SHA256), ``aead_id`` 0x0003 (ChaCha20-Poly1305) or 0x0001 (AES-128-GCM), as the
record's suite says. The HPKE ``info`` is the deterministic CBOR of
``["unbroken/media/v1", device, session, seq]``, binding the ciphertext to its place in the
chain; the AAD is empty. The plaintext is ``salt (32 random bytes) || media bytes``. The
record carries SHA-256 of the whole file (what the server checks without the key) and the
commitment ``SHA-256(salt || media)`` (what a court checks on the decrypted media).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hpke

from protocol import cbor
from protocol.errors import AlgorithmError, CryptoError, DecodeError
from protocol.hashing import sha256
from protocol.keys import EncryptionKey, x25519_public
from protocol.record import Suite

MAGIC = b"UBM1"
KEM_X25519 = 0x0020
KDF_HKDF_SHA256 = 0x0001
AEAD_AES128GCM = 0x0001
AEAD_CHACHA20POLY1305 = 0x0003
HEADER = struct.Struct(">4sHHH")
ENC_LEN = 32
SALT_LEN = 32
TAG_LEN = 16
#: Overhead of the envelope over the media bytes.
OVERHEAD = HEADER.size + ENC_LEN + SALT_LEN + TAG_LEN

AEAD_OF_SUITE = {Suite.CHACHA: AEAD_CHACHA20POLY1305, Suite.AESGCM: AEAD_AES128GCM}
_HPKE_AEAD = {
    AEAD_CHACHA20POLY1305: hpke.AEAD.CHACHA20_POLY1305,
    AEAD_AES128GCM: hpke.AEAD.AES_128_GCM,
}


def hpke_info(device: str, session: bytes, seq: int) -> bytes:
    """The HPKE ``info`` that binds a media file to device, session and seq."""
    return cbor.encode(["unbroken/media/v1", device, session, seq])


def _suite(aead_id: int) -> hpke.Suite:
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, _HPKE_AEAD[aead_id])


@dataclass(frozen=True, slots=True)
class SealedMedia:
    """An encrypted media file and the values its record vouches for."""

    data: bytes
    commitment: bytes

    @property
    def hash(self) -> bytes:
        """SHA-256 of the whole file."""
        return sha256(self.data)


def commitment(salt: bytes, media: bytes) -> bytes:
    """``SHA-256(salt || media)``."""
    return sha256(salt, media)


def seal(
    media: bytes,
    recipient: bytes,
    suite: Suite,
    device: str,
    session: bytes,
    seq: int,
    *,
    salt: bytes | None = None,
) -> SealedMedia:
    """Encrypt ``media`` to the raw X25519 key ``recipient``."""
    salt = os.urandom(SALT_LEN) if salt is None else salt
    if len(salt) != SALT_LEN:
        raise CryptoError("salt must be 32 bytes")
    aead_id = AEAD_OF_SUITE[suite]
    header = HEADER.pack(MAGIC, KEM_X25519, KDF_HKDF_SHA256, aead_id)
    body = _suite(aead_id).encrypt(
        salt + media, x25519_public(recipient), info=hpke_info(device, session, seq)
    )
    return SealedMedia(header + body, commitment(salt, media))


def parse_header(data: bytes) -> int:
    """Check the envelope header; return the AEAD id."""
    if len(data) < HEADER.size + ENC_LEN + TAG_LEN:
        raise DecodeError("media file too short for its envelope")
    magic, kem, kdf, aead = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("not a media envelope (bad magic)")
    if kem != KEM_X25519 or kdf != KDF_HKDF_SHA256 or aead not in _HPKE_AEAD:
        raise AlgorithmError(
            f"media envelope suite kem={kem:#x} kdf={kdf:#x} aead={aead:#x} not allowed"
        )
    return int(aead)


def open_sealed(
    data: bytes,
    key: EncryptionKey,
    device: str,
    session: bytes,
    seq: int,
    *,
    expect: bytes | None = None,
    suite: Suite | None = None,
) -> tuple[bytes, bytes]:
    """Decrypt a media file; return ``(salt, media)``. Check the commitment if ``expect``."""
    aead = parse_header(data)
    if suite is not None and AEAD_OF_SUITE[suite] != aead:
        raise AlgorithmError("media envelope AEAD differs from the record's suite")
    try:
        plain = _suite(aead).decrypt(
            data[HEADER.size :], key.private_key, info=hpke_info(device, session, seq)
        )
    except Exception as exc:  # cryptography raises InvalidTag and others from Rust
        raise CryptoError("media does not decrypt (wrong key, wrong place or altered)") from exc
    if len(plain) < SALT_LEN:
        raise CryptoError("decrypted media is shorter than its salt")
    salt, media = plain[:SALT_LEN], plain[SALT_LEN:]
    if expect is not None and commitment(salt, media) != expect:
        raise CryptoError("decrypted media does not match its commitment")
    return salt, media
