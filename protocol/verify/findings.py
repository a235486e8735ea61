"""Finding codes of the verifier: what each means, how bad it is, and its segment mark.

Marks in the per-session string: ``.`` ok, ``M`` missing, ``N`` bad signature or key,
``C`` corrupt, ``D`` logged but media absent.
"""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """An ``error`` makes the verdict ``not_authentic``; the others are reported only."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Code(StrEnum):
    """Finding codes. Each is listed in SPEC.md with the check that raises it."""

    # trust
    UNTRUSTED_ROOT = "UNTRUSTED_ROOT"
    ROOT_NOT_PINNED = "ROOT_NOT_PINNED"
    ROOT_INVALID = "ROOT_INVALID"
    CERT_INVALID = "CERT_INVALID"
    REVOCATIONS_INVALID = "REVOCATIONS_INVALID"
    # records
    MALFORMED_RECORD = "MALFORMED_RECORD"
    UNKNOWN_VERSION = "UNKNOWN_VERSION"
    ALG_CONFUSION = "ALG_CONFUSION"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNCERTIFIED_KEY = "UNCERTIFIED_KEY"
    REVOKED_KEY = "REVOKED_KEY"
    # chain
    RECORD_MISSING = "RECORD_MISSING"
    REORDERED = "REORDERED"
    DUPLICATE = "DUPLICATE"
    FORK = "FORK"
    SPLICED = "SPLICED"
    CHAIN_BROKEN = "CHAIN_BROKEN"
    TRUNCATED_HEAD = "TRUNCATED_HEAD"
    TRUNCATED_TAIL = "TRUNCATED_TAIL"
    BAD_SESSION = "BAD_SESSION"
    RECOVERY_MISMATCH = "RECOVERY_MISMATCH"
    UNEXPLAINED_STOP = "UNEXPLAINED_STOP"
    # media
    MEDIA_ABSENT = "MEDIA_ABSENT"
    MEDIA_CORRUPT = "MEDIA_CORRUPT"
    OPENING_MISMATCH = "OPENING_MISMATCH"
    MEDIA_RELEASED = "MEDIA_RELEASED"
    # log
    LOG_PROOF_INVALID = "LOG_PROOF_INVALID"
    LOG_PROOF_MISSING = "LOG_PROOF_MISSING"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    CHECKPOINT_INCONSISTENT = "CHECKPOINT_INCONSISTENT"
    ANCHOR_UNKNOWN = "ANCHOR_UNKNOWN"
    RECEIPT_INVALID = "RECEIPT_INVALID"
    NOT_YET_LOGGED = "NOT_YET_LOGGED"
    # time
    CLOCK_ROLLBACK = "CLOCK_ROLLBACK"
    CLOCK_JUMP = "CLOCK_JUMP"
    TIME_OUTSIDE_LOG = "TIME_OUTSIDE_LOG"
    # container
    MANIFEST_INVALID = "MANIFEST_INVALID"
    MANIFEST_MISMATCH = "MANIFEST_MISMATCH"
    UNEXPECTED_FILE = "UNEXPECTED_FILE"
    TORN_UNEXPLAINED = "TORN_UNEXPLAINED"
    TORN_EXPLAINED = "TORN_EXPLAINED"
    # coverage
    GAP_UNEXPLAINED = "GAP_UNEXPLAINED"


_W, _I = Severity.WARNING, Severity.INFO
SEVERITY: dict[Code, Severity] = {
    Code.ROOT_NOT_PINNED: _W,
    Code.UNEXPLAINED_STOP: _W,
    Code.MEDIA_RELEASED: _I,
    Code.ANCHOR_UNKNOWN: _W,
    Code.NOT_YET_LOGGED: _I,
    Code.CLOCK_ROLLBACK: _W,
    Code.CLOCK_JUMP: _W,
    Code.TIME_OUTSIDE_LOG: _W,
    Code.TORN_EXPLAINED: _I,
    Code.GAP_UNEXPLAINED: _W,
}

DESCRIPTION: dict[Code, str] = {
    Code.UNTRUSTED_ROOT: "the root key is not the one pinned with --trust",
    Code.ROOT_NOT_PINNED: "no --trust given: authentic only relative to the root inside",
    Code.ROOT_INVALID: "the root key file is missing or malformed",
    Code.CERT_INVALID: "a certificate does not chain to the root",
    Code.REVOCATIONS_INVALID: "the revocation list is malformed or not signed by the root",
    Code.MALFORMED_RECORD: "a record cannot be decoded",
    Code.UNKNOWN_VERSION: "a record has a format version this verifier does not know",
    Code.ALG_CONFUSION: "a record names an algorithm or suite the format does not allow",
    Code.BAD_SIGNATURE: "a signature does not verify",
    Code.UNCERTIFIED_KEY: "a record is signed by a key that does not chain to the root",
    Code.REVOKED_KEY: "a record was signed or logged after its device was revoked",
    Code.RECORD_MISSING: "records are missing from the chain",
    Code.REORDERED: "records appear out of order",
    Code.DUPLICATE: "a record appears twice (replay)",
    Code.FORK: "two different records claim the same seq",
    Code.SPLICED: "a record from another device or session is in the chain",
    Code.CHAIN_BROKEN: "a record does not link to its predecessor",
    Code.TRUNCATED_HEAD: "the chain does not start where it must",
    Code.TRUNCATED_TAIL: "the chain ends without a close record or declared end",
    Code.BAD_SESSION: "session records are out of place",
    Code.RECOVERY_MISMATCH: "a recovery record names another last durable record",
    Code.UNEXPLAINED_STOP: "a session ended without close and no recovery record explains it",
    Code.MEDIA_ABSENT: "a record's media is not present",
    Code.MEDIA_CORRUPT: "media bytes do not match the hash in their record",
    Code.OPENING_MISMATCH: "decrypted media does not match its commitment",
    Code.MEDIA_RELEASED: "media was released by the device after a server receipt",
    Code.LOG_PROOF_INVALID: "an inclusion proof does not hold",
    Code.LOG_PROOF_MISSING: "a record has no transparency-log proof",
    Code.CHECKPOINT_INVALID: "a checkpoint is malformed or not signed by a certified server key",
    Code.CHECKPOINT_INCONSISTENT: "two checkpoints (or an anchor) disagree about the log",
    Code.ANCHOR_UNKNOWN: "a record anchors to a checkpoint that is not in the bundle",
    Code.RECEIPT_INVALID: "a stored server receipt does not verify",
    Code.NOT_YET_LOGGED: "records not yet acknowledged by the server",
    Code.CLOCK_ROLLBACK: "wall-clock time went back while monotonic time advanced",
    Code.CLOCK_JUMP: "wall-clock time jumped forward far more than monotonic time",
    Code.TIME_OUTSIDE_LOG: "record time falls outside the bracket of its log checkpoints",
    Code.MANIFEST_INVALID: "the export manifest is missing, malformed or not server-signed",
    Code.MANIFEST_MISMATCH: "the bundle does not hold what its manifest declares",
    Code.UNEXPECTED_FILE: "a file that is not evidence nor documentation, or not vouched for",
    Code.TORN_UNEXPLAINED: "a torn write is not explained by a recovery record",
    Code.TORN_EXPLAINED: "a torn write, kept and explained by a signed recovery record",
    Code.GAP_UNEXPLAINED: "a gap in recording with no recorded cause",
}

MARK: dict[Code, str] = {
    Code.MALFORMED_RECORD: "C",
    Code.UNKNOWN_VERSION: "C",
    Code.ALG_CONFUSION: "N",
    Code.BAD_SIGNATURE: "N",
    Code.UNCERTIFIED_KEY: "N",
    Code.REVOKED_KEY: "N",
    Code.SPLICED: "N",
    Code.MEDIA_ABSENT: "D",
    Code.MEDIA_CORRUPT: "C",
    Code.OPENING_MISMATCH: "C",
}


def severity(code: Code) -> Severity:
    """How bad a finding of ``code`` is."""
    return SEVERITY.get(code, Severity.ERROR)
