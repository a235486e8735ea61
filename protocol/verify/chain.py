"""The chain checker: one device's records, in file order, checked one at a time.

It keeps only a bounded window of state (the last record, the current session, a window
of recent seqs for replay and fork detection), so memory does not grow with the chain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from protocol.certs import Certificate, TrustStore
from protocol.checkpoint import Checkpoint
from protocol.errors import (
    AlgorithmError,
    CertificateError,
    DecodeError,
    ProofError,
    SignatureError,
    VersionError,
)
from protocol.hashing import ZERO_HASH, sha256
from protocol.layout import LogProof
from protocol.log import verify_inclusion
from protocol.manifest import ChainRange
from protocol.record import MEDIA_KINDS, MediaRef, Record, RecordKind, SignedRecord
from protocol.verify.findings import MARK, Code
from protocol.verify.report import Gap, Report, SessionSummary

RECENT_WINDOW = 4096
#: A pause between consecutive segments shorter than this is not a gap (µs).
GAP_TOLERANCE = 500_000
#: Wall time may step back this much (µs) before it counts as a rollback (NTP slew).
ROLLBACK_TOLERANCE = 1_000_000
#: Wall time may run ahead of monotonic time this much (µs) before it counts as a jump.
JUMP_TOLERANCE = 60_000_000
#: Slack allowed between a record's time and the server times that bracket it (µs).
BRACKET_TOLERANCE = 300_000_000


class MediaStatus(StrEnum):
    """What the media check found for one record."""

    OK = "ok"
    ABSENT = "absent"
    RELEASED = "released"
    CORRUPT = "corrupt"
    OPENING_MISMATCH = "opening_mismatch"


class AnchorLookup(Protocol):
    """Finds the signed checkpoint of a tree size; asked with nondecreasing sizes."""

    def lookup(self, size: int) -> Checkpoint | None:
        """The checkpoint of ``size``, or None if there is none."""
        ...


class ReceiptLookup(Protocol):
    """Finds a record's log proof in the receipts a device kept."""

    def proof(self, seq: int, digest: bytes) -> tuple[LogProof, Checkpoint] | None:
        """The proof and checkpoint for ``seq`` if its receipt holds one for ``digest``."""
        ...


class MediaCheck(Protocol):
    """Looks up and hashes the media a record vouches for."""

    def check(self, seq: int, ref: MediaRef) -> tuple[MediaStatus, int]:
        """Status of seq's media and the number of bytes read."""
        ...


@dataclass(slots=True)
class _Session:
    summary: SessionSummary
    sid: bytes
    boot: bytes
    key: bytes
    kid: bytes
    device_cert: Certificate
    closed: bool = False
    needs_recovery: bool = False
    recovery_seen: bool = False
    before_open: tuple[int, bytes] | None = None


@dataclass(slots=True)
class _Last:
    seq: int
    t1: int
    m1: int
    boot: bytes


@dataclass(slots=True)
class ChainChecker:
    """Checks one device chain."""

    device: str
    trust: TrustStore
    anchors: AnchorLookup
    report: Report
    media: MediaCheck
    expect: ChainRange | None = None
    require_log: bool = True
    receipts: ReceiptLookup | None = None
    explained_torn: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    expected: int | None = None
    prev: bytes | None = None
    first_seq: int | None = None
    last_digest: bytes | None = None
    count: int = 0
    session: _Session | None = None
    last: _Last | None = None
    last_segment: _Last | None = None
    causes: set[str] = field(default_factory=set)
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    missing: set[int] = field(default_factory=set)
    missing_from: int | None = None
    storage_full: bool = False
    unlogged: int = 0

    # ----------------------------------------------------------------- helpers
    def _find(self, code: Code, message: str, seq: int | None, seq_to: int | None = None) -> None:
        self.report.add(code, message, self.device, seq, seq_to)

    def _mark(self, mark: str) -> None:
        if self.session is not None:
            self.session.summary.marks.add(mark)

    def _downgrade(self, code: Code) -> None:
        if self.session is not None and code in MARK:
            self.session.summary.marks.set_last(MARK[code])

    def _remember(self, seq: int, digest: bytes) -> None:
        self.recent[seq] = digest
        self.recent.move_to_end(seq)
        while len(self.recent) > RECENT_WINDOW:
            self.recent.popitem(last=False)

    def _advance_unreadable(self, raw: bytes, code: Code, message: str) -> None:
        """An entry we cannot read still occupies the next seq; its hash still chains."""
        seq = self.expected if self.expected is not None else None
        self._find(code, message, seq)
        self._mark(MARK.get(code, "C"))
        self.count += 1
        self.report.records += 1
        if self.expected is not None:
            self.expected += 1
        self.prev = sha256(raw)

    # ----------------------------------------------------------------- entry
    def feed(self, raw: bytes, proof: LogProof | None, proof_cp: Checkpoint | None) -> None:
        """Check the next entry of the chain."""
        try:
            signed = SignedRecord.parse(raw)
        except VersionError as exc:
            self._advance_unreadable(raw, Code.UNKNOWN_VERSION, str(exc))
            return
        except AlgorithmError as exc:
            self._advance_unreadable(raw, Code.ALG_CONFUSION, str(exc))
            return
        except DecodeError as exc:
            self._advance_unreadable(raw, Code.MALFORMED_RECORD, str(exc))
            return
        rec = signed.record
        if rec.device != self.device:
            self._find(
                Code.SPLICED,
                f"record of device {rec.device!r} in the chain of {self.device!r}",
                rec.seq,
            )
            self._mark("N")
            return
        if not self._order(rec, signed.digest):
            return
        self.count += 1
        self.report.records += 1
        mark_code = self._signature(rec, signed)
        self._session_rules(rec, signed.digest, mark_code)
        self._time(rec)
        logged_index = self._log(rec, signed.digest, proof, proof_cp)
        if mark_code is None:
            mark_code = self._revocation(rec, logged_index)
        status_code = self._media(rec, mark_code)
        self._coverage(rec, ok=mark_code is None and status_code is None)
        self._mark(
            "."
            if mark_code is None and status_code is None
            else MARK.get(mark_code or status_code or Code.MALFORMED_RECORD, "C")
        )
        self.last = _Last(rec.seq, rec.t1, rec.m1, rec.boot)
        self.last_digest = signed.digest
        if self.session is not None:
            s = self.session.summary
            s.seq_to = rec.seq
            s.end = max(s.end, rec.t1)

    # ----------------------------------------------------------------- order
    def _order(self, rec: Record, digest: bytes) -> bool:
        """Place the record in sequence; False if it is out of place and must be skipped."""
        seq = rec.seq
        if self.expected is None:
            self.first_seq = seq
            if self.expect is not None:
                if seq != self.expect.seq_from or rec.prev != self.expect.first_prev:
                    self._find(
                        Code.TRUNCATED_HEAD,
                        f"chain starts at seq {seq}, the manifest "
                        f"declares seq {self.expect.seq_from}",
                        seq,
                    )
            elif seq != 0 or rec.prev != ZERO_HASH or rec.kind is not RecordKind.SESSION_OPEN:
                self._find(
                    Code.TRUNCATED_HEAD,
                    f"chain starts at seq {seq}, not at the genesis record (seq 0, session open)",
                    0,
                    max(seq - 1, 0),
                )
                if seq > 0:
                    self._mark("M")
            self.expected = seq
            self.prev = rec.prev
        if seq == self.expected:
            if self.prev is not None and rec.prev != self.prev:
                self._find(
                    Code.CHAIN_BROKEN, f"seq {seq} does not link to the record before it", seq
                )
        elif seq > self.expected:
            gap = seq - self.expected
            self._find(
                Code.RECORD_MISSING,
                f"{gap} record(s) missing before seq {seq}",
                self.expected,
                seq - 1,
            )
            if self.session is not None:
                self.session.summary.marks.add("M", gap)
            for s in range(self.expected, seq):
                if len(self.missing) < RECENT_WINDOW:
                    self.missing.add(s)
            self.causes.add("missing")
            self.missing_from = self.expected if self.missing_from is None else self.missing_from
        else:
            if seq in self.missing:
                self.missing.discard(seq)
                self._find(Code.REORDERED, f"seq {seq} appears after seq {self.expected - 1}", seq)
            elif self.recent.get(seq) == digest:
                self._find(Code.DUPLICATE, f"seq {seq} appears again (replayed record)", seq)
            elif seq in self.recent:
                self._find(Code.FORK, f"two different records claim seq {seq}", seq)
            else:
                self._find(
                    Code.DUPLICATE,
                    f"seq {seq} appears after seq {self.expected - 1} (replayed or reordered)",
                    seq,
                )
            return False
        self._remember(seq, digest)
        self.expected = seq + 1
        self.prev = digest
        return True

    # ----------------------------------------------------------------- keys
    def _signature(self, rec: Record, signed: SignedRecord) -> Code | None:
        """Check the signing key and signature; return the failing code, if any."""
        try:
            if rec.kind is RecordKind.SESSION_OPEN:
                cert_bytes = rec.body.get("cert")
                if not isinstance(cert_bytes, bytes):
                    raise DecodeError("session open record lacks its session certificate")
                cert, device_cert = self.trust.session_certificate(cert_bytes, self.device)
                if cert.session != rec.session:
                    raise CertificateError("session certificate names another session")
                if signed.envelope.kid != cert.kid:
                    raise CertificateError("session open not signed by its session key")
                signed.envelope.verify(cert.key)
                self._open_session(rec, cert, device_cert)
                return None
            session = self.session
            if session is None or rec.session != session.sid:
                self._find(
                    Code.SPLICED,
                    f"seq {rec.seq} belongs to a session that was never opened in this chain",
                    rec.seq,
                )
                return Code.SPLICED
            if signed.envelope.kid != session.kid:
                raise CertificateError(f"seq {rec.seq} is not signed by its session key")
            signed.envelope.verify(session.key)
        except CertificateError as exc:
            self._find(Code.UNCERTIFIED_KEY, str(exc), rec.seq)
            return Code.UNCERTIFIED_KEY
        except SignatureError as exc:
            self._find(Code.BAD_SIGNATURE, f"seq {rec.seq}: {exc}", rec.seq)
            return Code.BAD_SIGNATURE
        except DecodeError as exc:
            self._find(Code.MALFORMED_RECORD, f"seq {rec.seq}: {exc}", rec.seq)
            return Code.MALFORMED_RECORD
        return None

    def _revocation(self, rec: Record, index: int | None) -> Code | None:
        session = self.session
        if session is None:
            return None
        revoked = self.trust.revoked.get(session.device_cert.kid)
        if revoked is None:
            return None
        after = index >= revoked.log_size if index is not None else rec.t0 >= revoked.time
        if not after:
            return None
        self._find(
            Code.REVOKED_KEY,
            f"seq {rec.seq} signed or logged after {self.device} was revoked ({revoked.reason})",
            rec.seq,
        )
        return Code.REVOKED_KEY

    # ----------------------------------------------------------------- sessions
    def _open_session(self, rec: Record, cert: Certificate, device_cert: Certificate) -> None:
        previous = self.session
        needs_recovery = False
        if previous is not None:
            if previous.closed:
                self.causes.add("off_duty")
            else:
                previous.summary.ended = "unclean"
                needs_recovery = True
        summary = SessionSummary(
            self.device,
            rec.session.hex(),
            rec.boot.hex(),
            rec.seq,
            rec.seq,
            rec.t0,
            rec.t1,
            officer=rec.officer,
        )
        self.report.sessions.append(summary)
        before = (rec.seq - 1, rec.prev) if rec.seq > 0 else None
        self.session = _Session(
            summary,
            rec.session,
            rec.boot,
            cert.key,
            cert.kid,
            device_cert,
            needs_recovery=needs_recovery,
            before_open=before,
        )

    def _session_rules(self, rec: Record, digest: bytes, failed: Code | None) -> None:
        session = self.session
        if session is None or rec.kind is RecordKind.SESSION_OPEN:
            return
        if session.closed:
            self._find(Code.BAD_SESSION, f"seq {rec.seq} follows the close of its session", rec.seq)
        if rec.kind is RecordKind.RECOVERY:
            self._recovery(rec, session)
        elif session.needs_recovery and not session.recovery_seen:
            session.recovery_seen = True  # report once
            self._find(
                Code.UNEXPLAINED_STOP,
                "the previous session ended without a close record and no recovery record follows",
                rec.seq,
            )
            self.causes.add("unexplained")
        if rec.kind is RecordKind.SESSION_CLOSE:
            session.closed = True
            session.summary.ended = "closed"
        elif rec.kind is RecordKind.STORAGE_FULL:
            self.storage_full = True
            self.causes.add("storage_full")
        elif rec.kind is RecordKind.STORAGE_RESUMED:
            self.storage_full = False

    def _recovery(self, rec: Record, session: _Session) -> None:
        session.recovery_seen = True
        body = rec.body
        last_seq, last_hash = body.get("last_seq"), body.get("last_hash")
        if session.before_open is not None and (
            last_seq != session.before_open[0] or last_hash != session.before_open[1]
        ):
            self._find(
                Code.RECOVERY_MISMATCH,
                f"recovery at seq {rec.seq} names seq {last_seq} as the last durable record",
                rec.seq,
            )
        if session.needs_recovery:
            self.causes.add("power_loss")
            for s in reversed(self.report.sessions[:-1]):
                if s.device == self.device:
                    s.ended = "power_loss"
                    break
        torn = body.get("torn")
        if isinstance(torn, list | tuple):
            for item in torn[:64]:
                if isinstance(item, Mapping):
                    name, length, h = item.get("name"), item.get("len"), item.get("hash")
                    if isinstance(name, str) and isinstance(length, int) and isinstance(h, bytes):
                        self.explained_torn[name] = (length, h)

    # ----------------------------------------------------------------- time
    def _time(self, rec: Record) -> None:
        last = self.last
        if last is None or last.boot != rec.boot:
            return
        mono = rec.m0 - last.m1
        wall = rec.t0 - last.t1
        if mono >= 0 and wall < -ROLLBACK_TOLERANCE:
            self._find(
                Code.CLOCK_ROLLBACK,
                f"wall clock went back {-wall / 1e6:.1f} s at seq "
                f"{rec.seq} while monotonic time advanced",
                rec.seq,
            )
        elif mono >= 0 and wall - mono > JUMP_TOLERANCE:
            self._find(
                Code.CLOCK_JUMP,
                f"wall clock jumped {(wall - mono) / 1e6:.0f} s ahead "
                f"of monotonic time at seq {rec.seq}",
                rec.seq,
            )

    # ----------------------------------------------------------------- log
    def _log(
        self, rec: Record, digest: bytes, proof: LogProof | None, cp: Checkpoint | None
    ) -> int | None:
        if proof is None and self.receipts is not None:
            found = self.receipts.proof(rec.seq, digest)
            if found is not None:
                proof, cp = found
        if rec.anchor is not None:
            anchor = self.anchors.lookup(rec.anchor.size)
            if anchor is None:
                self._find(
                    Code.ANCHOR_UNKNOWN,
                    f"seq {rec.seq} anchors to a checkpoint of size "
                    f"{rec.anchor.size} not present here",
                    rec.seq,
                )
            elif anchor.root != rec.anchor.root:
                self._find(
                    Code.CHECKPOINT_INCONSISTENT,
                    f"seq {rec.seq} anchors to a root for "
                    f"size {rec.anchor.size} that differs from the signed checkpoint",
                    rec.seq,
                )
            elif rec.t1 + BRACKET_TOLERANCE < anchor.time:
                self._find(
                    Code.TIME_OUTSIDE_LOG,
                    f"seq {rec.seq} claims to end before the "
                    "checkpoint it embeds was made (device clock behind)",
                    rec.seq,
                )
        if proof is None:
            if self.require_log:
                self._find(Code.LOG_PROOF_MISSING, f"seq {rec.seq} has no log proof", rec.seq)
            else:
                self.unlogged += 1
            return None
        try:
            if cp is None or cp.size != proof.size:
                raise ProofError(f"no signed checkpoint of size {proof.size} to check against")
            verify_inclusion(proof.index, proof.size, digest, proof.path, cp.root)
        except ProofError as exc:
            self._find(Code.LOG_PROOF_INVALID, f"seq {rec.seq}: {exc}", rec.seq)
            return None
        if rec.t0 > cp.time + BRACKET_TOLERANCE:
            self._find(
                Code.TIME_OUTSIDE_LOG,
                f"seq {rec.seq} claims to start after the "
                "checkpoint that includes it (device clock ahead)",
                rec.seq,
            )
        return proof.index

    # ----------------------------------------------------------------- media
    def _media(self, rec: Record, failed: Code | None) -> Code | None:
        if rec.kind not in MEDIA_KINDS or rec.media is None:
            return None
        if rec.kind is RecordKind.SEGMENT:
            self.report.segments += 1
        status, nbytes = self.media.check(rec.seq, rec.media)
        self.report.media_bytes += nbytes
        if status is MediaStatus.ABSENT:
            self._find(Code.MEDIA_ABSENT, f"media of seq {rec.seq} is not present", rec.seq)
            return Code.MEDIA_ABSENT
        if status is MediaStatus.CORRUPT:
            self._find(
                Code.MEDIA_CORRUPT, f"media of seq {rec.seq} does not match its hash", rec.seq
            )
            return Code.MEDIA_CORRUPT
        if status is MediaStatus.OPENING_MISMATCH:
            self._find(
                Code.OPENING_MISMATCH,
                f"decrypted media of seq {rec.seq} does not match its commitment",
                rec.seq,
            )
            return Code.OPENING_MISMATCH
        if status is MediaStatus.RELEASED:
            self._find(Code.MEDIA_RELEASED, "media released after a server receipt", rec.seq)
        if failed is None and rec.kind is RecordKind.SEGMENT:
            self.report.segments_ok += 1
        return None

    # ----------------------------------------------------------------- coverage
    def _coverage(self, rec: Record, ok: bool) -> None:
        if rec.kind is not RecordKind.SEGMENT:
            return
        last = self.last_segment
        if last is not None:
            same_boot = last.boot == rec.boot
            pause = rec.m0 - last.m1 if same_boot else rec.t0 - last.t1
            if not same_boot and pause < -ROLLBACK_TOLERANCE:
                self._find(
                    Code.CLOCK_ROLLBACK,
                    f"after a reboot the wall clock stands "
                    f"{-pause / 1e6:.1f} s before the last segment of the previous "
                    f"boot (seq {rec.seq})",
                    rec.seq,
                )
            # A reboot after a power loss is always a gap, even when the clocks cannot say
            # how long it was.
            if pause > GAP_TOLERANCE or (not same_boot and "power_loss" in self.causes):
                cause = self._cause()
                start = last.t1
                end = max(rec.t0, start + pause) if same_boot else max(rec.t0, start)
                self.report.add_gap(Gap(self.device, start, end, cause, last.seq, rec.seq))
                if cause == "unexplained":
                    self._find(
                        Code.GAP_UNEXPLAINED,
                        f"{pause / 1e6:.1f} s without recording "
                        f"between seq {last.seq} and {rec.seq}",
                        last.seq,
                        rec.seq,
                    )
        self.causes.clear()
        if ok:
            self.report.covered += rec.duration
            if self.session is not None:
                self.session.summary.covered += rec.duration
                self.session.summary.segments += 1
        self.last_segment = _Last(rec.seq, rec.t1, rec.m1, rec.boot)

    def _cause(self) -> str:
        for cause in ("missing", "power_loss", "storage_full", "off_duty", "unexplained"):
            if cause in self.causes:
                return cause
        return "unexplained"

    # ----------------------------------------------------------------- end
    def finish(self) -> None:
        """Checks that need the whole chain: its end, and what the manifest declared."""
        if self.expected is None:
            if self.expect is not None:
                self._find(
                    Code.MANIFEST_MISMATCH,
                    "the manifest declares records that are not in the bundle",
                    self.expect.seq_from,
                    self.expect.seq_to,
                )
            return
        last_seq = self.expected - 1
        if self.expect is not None:
            if last_seq != self.expect.seq_to or self.last_digest != self.expect.head:
                code = (
                    Code.TRUNCATED_TAIL if last_seq < self.expect.seq_to else Code.MANIFEST_MISMATCH
                )
                self._find(
                    code,
                    f"chain ends at seq {last_seq}; the manifest declares seq {self.expect.seq_to}",
                    min(last_seq + 1, self.expect.seq_to),
                    self.expect.seq_to,
                )
            elif self.count != self.expect.records:
                self._find(
                    Code.MANIFEST_MISMATCH,
                    f"{self.count} records, manifest declares {self.expect.records}",
                    None,
                )
            return
        session = self.session
        if session is not None and not session.closed:
            self._find(
                Code.TRUNCATED_TAIL,
                "the last session has no close record and no "
                "recovery record after it: the tail may be cut, or the device is still "
                "recording or stopped uncleanly",
                last_seq,
            )
        if self.unlogged:
            self._find(
                Code.NOT_YET_LOGGED, f"{self.unlogged} record(s) without a server receipt yet", None
            )
