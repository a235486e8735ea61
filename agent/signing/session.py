"""Session keys: a fresh Ed25519 key per session, certified by the device key.

The device key (possibly in a TPM or secure element, slow) signs one certificate per
session; the session key, held only in memory, signs the records. A stolen device's disk
therefore holds no key that signs for past sessions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from protocol.certs import Certificate, KeyKind
from protocol.keys import Signer, SoftwareSigner
from protocol.record import ID_LEN


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session's id, signing key and its certificate."""

    session: bytes
    signer: SoftwareSigner
    certificate: bytes


def new_session(device: str, device_signer: Signer, issued: int) -> SessionKey:
    """Generate a session key and certify it with the device key."""
    session = os.urandom(ID_LEN)
    signer = SoftwareSigner.generate()
    cert = Certificate.issue(
        device_signer, KeyKind.SESSION, device, signer.public_key, issued, session=session
    )
    return SessionKey(session, signer, cert)
