"""Ed25519 signing keys behind a signer interface, and X25519 encryption keys.

A :class:`Signer` is what the rest of the system signs with. The software implementation
keeps a private key in memory (loaded from a PKCS#8 PEM file of mode 0600); a TPM or secure
element implements the same three members. Key ids (``kid``) are the SHA-256 of the raw
32-byte public key, so that anyone can recompute them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.errors import DecodeError, SignatureError
from protocol.hashing import fingerprint, sha256

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


def key_id(public_key: bytes) -> bytes:
    """The key id of a raw public key: its SHA-256."""
    return sha256(public_key)


class Signer(Protocol):
    """Something that signs with an Ed25519 key it may not reveal."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    @property
    def kid(self) -> bytes:
        """SHA-256 of :attr:`public_key`."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        ...


class SoftwareSigner:
    """An Ed25519 key held in process memory."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._kid = key_id(self._public)

    @classmethod
    def generate(cls) -> SoftwareSigner:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SoftwareSigner:
        """A key from a 32-byte seed (RFC 8032 private key); used for test vectors."""
        if len(seed) != 32:
            raise DecodeError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def kid(self) -> bytes:
        return self._kid

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the public key."""
        return fingerprint(self._public)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key, unencrypted (protect it with file permissions)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the key to ``path`` with mode 0600, durably, refusing to overwrite."""
        write_private_file(path, self.private_pem())

    @classmethod
    def load(cls, path: Path) -> SoftwareSigner:
        """Load a PKCS#8 PEM Ed25519 key; refuse a file readable by group or others."""
        check_private_mode(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"{path}: not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise DecodeError(f"{path}: not an Ed25519 key")
        return cls(key)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature or raise :class:`SignatureError`."""
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        raise SignatureError("malformed Ed25519 key or signature length")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("Ed25519 signature does not verify") from exc


class EncryptionKey:
    """An X25519 key pair for HPKE; only the server holds the private half."""

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> EncryptionKey:
        """A fresh random key pair."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> EncryptionKey:
        """A key from 32 fixed bytes; used for test vectors."""
        return cls(X25519PrivateKey.from_private_bytes(seed))

    @property
    def private_key(self) -> X25519PrivateKey:
        """The private key object, for decryption."""
        return self._key

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the private key with mode 0600, refusing to overwrite."""
        write_private_file(path, self.private_pem())

    @classmethod
    def load(cls, path: Path) -> EncryptionKey:
        """Load a PKCS#8 PEM X25519 key."""
        check_private_mode(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"{path}: not a PEM private key") from exc
        if not isinstance(key, X25519PrivateKey):
            raise DecodeError(f"{path}: not an X25519 key")
        return cls(key)


def x25519_public(raw: bytes) -> X25519PublicKey:
    """Load a raw X25519 public key."""
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise DecodeError("not a raw X25519 public key") from exc


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never wider, even briefly), write, fsync, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read key file ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DecodeError(f"{path}: private key file must have mode 0600, has {mode & 0o777:o}")
