"""Errors raised by the protocol package.

Every error a caller can see derives from :class:`ProtocolError`; third-party exceptions
(cbor2, cryptography) are translated at the boundary with ``raise ... from exc``::

    ProtocolError
    ├── DecodeError          bytes that are not a valid encoding of the expected type
    │   └── VersionError     a well-formed object of a format version we do not know
    ├── AlgorithmError       an algorithm or suite other than the ones the format allows
    ├── SignatureError       a signature that does not verify
    ├── CertificateError     a key that does not chain to the trusted root, or is revoked
    ├── CryptoError          decryption or commitment failure of a media envelope
    └── ProofError           a Merkle inclusion or consistency proof that does not hold
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by :mod:`protocol`."""


class DecodeError(ProtocolError):
    """Input bytes are malformed, oversized, non-canonical or of the wrong shape."""


class VersionError(DecodeError):
    """A well-formed object carries a format version this implementation does not know."""


class AlgorithmError(ProtocolError):
    """An algorithm identifier or suite is not one the format allows (algorithm confusion)."""


class SignatureError(ProtocolError):
    """A signature does not verify under the named key."""


class CertificateError(ProtocolError):
    """A key is not certified by the trusted root, is of the wrong kind, or is revoked."""


class CryptoError(ProtocolError):
    """A media envelope cannot be opened, or its plaintext does not match its commitment."""


class ProofError(ProtocolError):
    """A transparency-log proof does not hold."""
