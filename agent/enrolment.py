"""The device's identity: its key, and the trust material from enrolment.

Enrolment with a server sends the device's public key with a one-time token and keeps
what comes back (root, device certificate, server and encryption certificates, API
token). For offline use there is a *test* enrolment: a throwaway root and server keys made
on the device itself, which proves nothing to anyone else and says so in the log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from agent.capture.store import EvidenceStore
from agent.errors import EnrolmentError
from protocol.api import API_PREFIX, Enrolment, EnrolRequest, b64d, b64e, enrol_message
from protocol.certs import Certificate, KeyKind, RootKey
from protocol.keys import EncryptionKey, SoftwareSigner, write_private_file

log = logging.getLogger(__name__)

DEVICE_KEY = "keys/device.key"
ENROLMENT_FILE = "keys/enrolment.json"
TEST_ROOT_KEY = "keys/test-root.key"
TEST_SERVER_KEY = "keys/test-server.key"
TEST_ENCRYPTION_KEY = "keys/test-encryption.key"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the device is and whom it trusts."""

    device: str
    signer: SoftwareSigner
    recipient: bytes
    log_name: str
    api_token: str | None
    test_enrolment: bool


def device_key(key_dir: Path) -> SoftwareSigner:
    """Load the device key, creating it (mode 0600) on first start."""
    path = key_dir / DEVICE_KEY
    if path.exists():
        return SoftwareSigner.load(path)
    signer = SoftwareSigner.generate()
    signer.save(path)
    log.info("created device key %s (fingerprint %s)", path, signer.fingerprint)
    return signer


def provision_test_enrolment(store: EvidenceStore, key_dir: Path, device: str, now: int) -> None:
    """Make a throwaway root and server keys on the device, for offline use only."""
    signer = device_key(key_dir)
    root = SoftwareSigner.generate()
    server = SoftwareSigner.generate()
    encryption = EncryptionKey.generate()
    root.save(key_dir / TEST_ROOT_KEY)
    server.save(key_dir / TEST_SERVER_KEY)
    encryption.save(key_dir / TEST_ENCRYPTION_KEY)
    certs = [
        Certificate.issue(root, KeyKind.DEVICE, device, signer.public_key, now),
        Certificate.issue(root, KeyKind.SERVER, "test-server", server.public_key, now),
        Certificate.issue(root, KeyKind.ENCRYPTION, "test-server", encryption.public_key, now),
    ]
    store.save_enrolment(
        RootKey.issue(root, f"TEST enrolment of {device} (not a fleet)", now), certs
    )
    _save_json(
        key_dir / ENROLMENT_FILE,
        {"device": device, "log": "test-local", "api_token": None, "test": True},
    )
    log.warning(
        "TEST ENROLMENT: %s trusts a throwaway root %s made on this device; its "
        "recordings verify against that root only and prove nothing to a fleet",
        device,
        root.fingerprint,
    )


def save_server_enrolment(store: EvidenceStore, key_dir: Path, enrolment: Enrolment) -> None:
    """Keep what the server returned at enrolment."""
    certs = [
        b64d(enrolment.device_cert),
        b64d(enrolment.server_cert),
        b64d(enrolment.encryption_cert),
    ]
    store.save_enrolment(b64d(enrolment.root), certs)
    _save_json(
        key_dir / ENROLMENT_FILE,
        {
            "device": enrolment.device,
            "log": enrolment.log,
            "api_token": enrolment.api_token,
            "test": False,
        },
    )


async def enrol_with_server(
    client: httpx.AsyncClient, store: EvidenceStore, key_dir: Path, device: str, token: str
) -> Enrolment:
    """Enrol ``device`` with the server behind ``client`` using a one-time ``token``."""
    signer = device_key(key_dir)
    try:
        request = EnrolRequest(
            device=device,
            token=token,
            public_key=b64e(signer.public_key),
            proof=b64e(signer.sign(enrol_message(token, device, signer.public_key))),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EnrolmentError(f"cannot enrol {device!r}: {problems}") from exc
    try:
        response = await client.post(
            f"{API_PREFIX}/enrol",
            content=request.model_dump_json(),
            headers={"content-type": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise EnrolmentError(f"enrolment of {device} failed: {exc!r}") from exc
    if response.status_code != 200:
        raise EnrolmentError(
            f"enrolment of {device} refused: HTTP {response.status_code} {response.text[:300]}"
        )
    enrolment = Enrolment.model_validate_json(response.content)
    save_server_enrolment(store, key_dir, enrolment)
    log.info("%s enrolled with %s", device, client.base_url)
    return enrolment


def load_identity(store: EvidenceStore, key_dir: Path, device: str) -> Identity:
    """The enrolled identity; EnrolmentError if enrolment is missing or inconsistent."""
    path = key_dir / ENROLMENT_FILE
    if not path.exists() or not store.enrolled():
        raise EnrolmentError(f"{device} is not enrolled (no {path})")
    meta = json.loads(path.read_text())
    if meta.get("device") != device:
        raise EnrolmentError(f"the store is enrolled as {meta.get('device')!r}, not {device!r}")
    signer = device_key(key_dir)
    trust = store.load_trust()
    cert = trust.device_key(device)
    if cert is None or cert.key != signer.public_key:
        raise EnrolmentError(f"the device certificate of {device} does not match its key")
    encryption = [c for c in trust.certificates() if c.kind is KeyKind.ENCRYPTION]
    if not encryption:
        raise EnrolmentError("no encryption certificate: cannot seal media")
    return Identity(
        device,
        signer,
        encryption[-1].key,
        str(meta.get("log", "")),
        meta.get("api_token"),
        bool(meta.get("test")),
    )


def _save_json(path: Path, value: dict[str, object]) -> None:
    if path.exists():
        path.unlink()
    write_private_file(path, json.dumps(value).encode())
