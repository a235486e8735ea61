"""COSE_Sign1 (RFC 9052 section 4.2) with EdDSA over Ed25519, the one signature envelope.

The encoded form is the tagged array ``18([protected, unprotected, payload, signature])``:

* ``protected`` is a byte string holding the deterministic CBOR map
  ``{1: -8, 3: <content type text>, 4: <kid, 32 bytes>}`` (alg EdDSA, content type, key id);
* ``unprotected`` is the empty map;
* ``payload`` is the deterministic CBOR of the signed object;
* ``signature`` is the 64-byte Ed25519 signature of the CBOR encoding of the
  ``Sig_structure`` ``["Signature1", protected, h'', payload]``.

Only alg -8 is accepted; any other value is an :class:`AlgorithmError` (algorithm
confusion), never a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import cbor2

from protocol import cbor
from protocol.errors import AlgorithmError, DecodeError
from protocol.hashing import sha256
from protocol.keys import SIGNATURE_LEN, Signer, verify_signature

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HEADER_ALG = 1
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4


class ContentType(StrEnum):
    """The content types (COSE header 3) that name what a signed payload is."""

    RECORD = "application/vnd.unbroken.record+cbor"
    CERTIFICATE = "application/vnd.unbroken.cert+cbor"
    ROOT = "application/vnd.unbroken.root+cbor"
    REVOCATIONS = "application/vnd.unbroken.revocations+cbor"
    CHECKPOINT = "application/vnd.unbroken.checkpoint+cbor"
    RECEIPT = "application/vnd.unbroken.receipt+cbor"
    MANIFEST = "application/vnd.unbroken.manifest+cbor"
    EVENT = "application/vnd.unbroken.event+cbor"


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded COSE_Sign1 whose structure is valid; its signature is not yet checked."""

    protected: bytes
    content_type: ContentType
    kid: bytes
    payload: bytes
    signature: bytes
    encoded: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole encoded envelope: the hash that chains and logs refer to."""
        return sha256(self.encoded)

    def to_be_signed(self) -> bytes:
        """The bytes the signature covers (the encoded Sig_structure)."""
        return _sig_structure(self.protected, self.payload)

    def verify(self, public_key: bytes) -> None:
        """Check the signature with ``public_key`` or raise ``SignatureError``."""
        verify_signature(public_key, self.to_be_signed(), self.signature)

    def body(self, what: str) -> Any:
        """Decode the payload as deterministic CBOR."""
        return cbor.decode(self.payload, what=what)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


def sign(signer: Signer, content_type: ContentType, payload: bytes) -> bytes:
    """Sign ``payload`` (already deterministic CBOR) and return the encoded COSE_Sign1."""
    protected = cbor.encode(
        {HEADER_ALG: ALG_EDDSA, HEADER_CONTENT_TYPE: str(content_type), HEADER_KID: signer.kid}
    )
    signature = signer.sign(_sig_structure(protected, payload))
    return cbor.encode(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def sign_object(signer: Signer, content_type: ContentType, value: Any) -> bytes:
    """Encode ``value`` deterministically and sign it."""
    return sign(signer, content_type, cbor.encode(value))


def decode(data: bytes, expect: ContentType | None = None) -> Sign1:
    """Parse a COSE_Sign1 strictly; check alg and (if given) the content type."""
    item = cbor.decode(data, allow_tags=True, what="COSE_Sign1")
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise DecodeError("not a tagged COSE_Sign1 (tag 18)")
    value = item.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise DecodeError("COSE_Sign1 must be an array of four items")
    protected, unprotected, payload, signature = value
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise DecodeError("COSE_Sign1 protected header and payload must be byte strings")
    if not isinstance(unprotected, Mapping) or len(unprotected) != 0:
        raise DecodeError("COSE_Sign1 unprotected header must be empty")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
        raise DecodeError("COSE_Sign1 signature must be 64 bytes")
    headers = cbor.decode(protected, what="COSE protected header")
    if not isinstance(headers, dict) or set(headers) != {
        HEADER_ALG,
        HEADER_CONTENT_TYPE,
        HEADER_KID,
    }:
        raise DecodeError("COSE protected header must hold exactly alg, content type and kid")
    if headers[HEADER_ALG] != ALG_EDDSA:
        raise AlgorithmError(f"COSE alg {headers[HEADER_ALG]!r} is not EdDSA (-8)")
    try:
        content_type = ContentType(headers[HEADER_CONTENT_TYPE])
    except ValueError as exc:
        raise DecodeError(f"unknown content type {headers[HEADER_CONTENT_TYPE]!r}") from exc
    kid = headers[HEADER_KID]
    if not isinstance(kid, bytes) or len(kid) != 32:
        raise DecodeError("COSE kid must be 32 bytes")
    if expect is not None and content_type is not expect:
        raise DecodeError(f"expected {expect.value}, found {content_type.value}")
    return Sign1(protected, content_type, kid, payload, signature, bytes(data))
