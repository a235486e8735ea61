"""The server's keys, kept under ``{data}/keys`` in files of mode 0600, made on first start.

* ``root.key`` / ``root.cose``: the fleet root (Ed25519, self-signed). It certifies device
  keys at enrolment and signs revocation lists. **In production the root belongs on an
  offline host or in an HSM**: then ``root.key`` is absent here, enrolment certificates are
  made by whoever holds the root, and this server only serves ``root.cose``. The server runs
  without the root key; only enrolment and revocation need it (see :attr:`ServerKeys.root`).
* ``server.key`` / ``server.cert``: the server signing key (certificate kind ``server``):
  receipts, checkpoints and export manifests.
* ``encryption.key`` / ``encryption.cert``: the X25519 key (certificate kind
  ``encryption``) to which devices encrypt media (HPKE); only exports with openings use it.

Every file is written to a temporary name, fsynced, renamed and the directory fsynced, so
a crash during first start leaves no half-written key.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from protocol.certs import Certificate, KeyKind, RootKey, TrustStore
from protocol.errors import ProtocolError
from protocol.keys import EncryptionKey, Signer, SoftwareSigner, check_private_mode
from server.errors import ConfigError

ROOT_KEY = "root.key"
ROOT_COSE = "root.cose"
SERVER_KEY = "server.key"
SERVER_CERT = "server.cert"
ENCRYPTION_KEY = "encryption.key"
ENCRYPTION_CERT = "encryption.cert"
ADMIN_TOKEN = "admin.token"  # noqa: S105 - a file name, not a secret


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600, never wider) atomically and durably; refuse to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a crash before the link: never linked, so never a key
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)  # fails if path exists: never overwrite a key
    tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_public(path: Path) -> bytes:
    """Read a certificate file (also kept 0600: it sits among the keys)."""
    check_private_mode(path)
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The keys and certificates the server works with."""

    root: Signer | None
    root_cose: bytes
    server: Signer
    server_cert: bytes
    encryption: EncryptionKey
    encryption_cert: bytes

    @property
    def root_key(self) -> RootKey:
        """The parsed, self-checked root."""
        return RootKey.load(self.root_cose)

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the fleet root: what ``unbroken verify --trust`` pins."""
        return self.root_key.fingerprint

    def trust(self) -> TrustStore:
        """A trust store holding the root and the server's own certificates."""
        trust = TrustStore(self.root_key)
        trust.add(self.server_cert)
        trust.add(self.encryption_cert)
        return trust

    def require_root(self) -> Signer:
        """The root signer; ConfigError when the root is kept offline."""
        if self.root is None:
            raise ConfigError(
                "the fleet root key is not on this server (kept offline): "
                "enrolment and revocation need it"
            )
        return self.root


def load_or_create(key_dir: Path, fleet_name: str, server_name: str, now: int) -> ServerKeys:
    """Load the keys under ``key_dir``, creating what is missing (first start)."""
    try:
        return _load_or_create(key_dir, fleet_name, server_name, now)
    except (ProtocolError, OSError) as exc:
        raise ConfigError(f"server keys in {key_dir}: {exc}") from exc


def _load_or_create(key_dir: Path, fleet_name: str, server_name: str, now: int) -> ServerKeys:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root_path, root_cose_path = key_dir / ROOT_KEY, key_dir / ROOT_COSE
    root: SoftwareSigner | None = None
    if root_path.exists():
        root = SoftwareSigner.load(root_path)
    elif not root_cose_path.exists():
        root = SoftwareSigner.generate()
        write_secret(root_path, root.private_pem())
    if not root_cose_path.exists():
        if root is None:
            raise ConfigError(f"{root_cose_path} is missing")
        write_secret(root_cose_path, RootKey.issue(root, fleet_name, now))
    root_cose = read_public(root_cose_path)
    root_key = RootKey.load(root_cose)
    if root is not None and root.public_key != root_key.key:
        raise ConfigError(f"{root_path} does not match {root_cose_path}")

    server = _signer(key_dir / SERVER_KEY)
    server_cert = _cert(
        key_dir / SERVER_CERT, root, KeyKind.SERVER, server_name, server.public_key, now
    )
    encryption_path = key_dir / ENCRYPTION_KEY
    if not encryption_path.exists():
        write_secret(encryption_path, EncryptionKey.generate().private_pem())
    encryption = EncryptionKey.load(encryption_path)
    encryption_cert = _cert(
        key_dir / ENCRYPTION_CERT,
        root,
        KeyKind.ENCRYPTION,
        server_name,
        encryption.public_key,
        now,
    )
    keys = ServerKeys(root, root_cose, server, server_cert, encryption, encryption_cert)
    trust = TrustStore(root_key)
    if trust.add(server_cert).key != server.public_key:
        raise ConfigError(f"{SERVER_CERT} does not certify {SERVER_KEY}")
    if trust.add(encryption_cert).key != encryption.public_key:
        raise ConfigError(f"{ENCRYPTION_CERT} does not certify {ENCRYPTION_KEY}")
    return keys


def _signer(path: Path) -> SoftwareSigner:
    if not path.exists():
        write_secret(path, SoftwareSigner.generate().private_pem())
    return SoftwareSigner.load(path)


def _cert(
    path: Path, root: Signer | None, kind: KeyKind, subject: str, key: bytes, now: int
) -> bytes:
    if not path.exists():
        if root is None:
            raise ConfigError(f"{path} is missing and the root key is offline")
        write_secret(path, Certificate.issue(root, kind, subject, key, now))
    return read_public(path)
