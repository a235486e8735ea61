"""The verifier's report: findings, gaps, sessions, coverage, verdict; and its JSON form.

Memory stays bounded whatever the input size: findings of one code on consecutive seqs
merge into one range, per-session marks are run-length encoded, and past
:data:`MAX_FINDINGS` only counts are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protocol.verify.findings import Code, Severity, severity

MAX_FINDINGS = 10_000
MAX_GAPS = 100_000


def iso(us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC text."""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Finding:
    """Something the verifier found, on seqs ``seq_from..seq_to`` of ``device``."""

    code: Code
    message: str
    device: str | None = None
    seq_from: int | None = None
    seq_to: int | None = None

    @property
    def severity(self) -> Severity:
        """Error, warning or info."""
        return severity(self.code)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "device": self.device,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "message": self.message,
        }


@dataclass(slots=True)
class Gap:
    """Time with no recording between two segments, and why."""

    device: str
    start: int
    end: int
    cause: str
    seq_from: int | None = None
    seq_to: int | None = None

    @property
    def seconds(self) -> float:
        """Length in seconds."""
        return max(0, self.end - self.start) / 1e6

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "device": self.device,
            "start": iso(self.start),
            "end": iso(self.end),
            "seconds": round(self.seconds, 3),
            "cause": self.cause,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
        }


@dataclass(slots=True)
class Marks:
    """A run-length encoded per-record status string."""

    runs: list[list[Any]] = field(default_factory=list)

    def add(self, mark: str, count: int = 1) -> None:
        """Append ``count`` copies of ``mark``."""
        if count <= 0:
            return
        if self.runs and self.runs[-1][0] == mark:
            self.runs[-1][1] += count
        else:
            self.runs.append([mark, count])

    def set_last(self, mark: str) -> None:
        """Replace the mark of the last record (a later check downgraded it)."""
        if not self.runs:
            return
        last = self.runs[-1]
        if last[0] == mark:
            return
        last[1] -= 1
        if last[1] == 0:
            self.runs.pop()
        self.add(mark)

    def render(self, limit: int = 120) -> str:
        """The string, with long runs folded as ``.(3600)`` when it would exceed ``limit``."""
        total = sum(n for _, n in self.runs)
        if total <= limit:
            return "".join(m * n for m, n in self.runs)
        return "".join(m * n if n <= 3 else f"{m}({n})" for m, n in self.runs)


@dataclass(slots=True)
class SessionSummary:
    """One recording session of one device."""

    device: str
    session: str
    boot: str
    seq_from: int
    seq_to: int
    start: int
    end: int
    segments: int = 0
    covered: int = 0
    ended: str = "open"
    marks: Marks = field(default_factory=Marks)
    officer: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "device": self.device,
            "session": self.session,
            "boot": self.boot,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "start": iso(self.start),
            "end": iso(self.end),
            "segments": self.segments,
            "covered_seconds": round(self.covered / 1e6, 3),
            "ended": self.ended,
            "officer": self.officer,
            "marks": self.marks.render(limit=1 << 30),
        }


@dataclass(slots=True)
class Report:
    """Everything ``verify`` found out about one bundle or store."""

    source: str
    kind: str
    fingerprint: str | None = None
    pinned: bool = False
    root_name: str | None = None
    findings: list[Finding] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    sessions: list[SessionSummary] = field(default_factory=list)
    records: int = 0
    segments: int = 0
    segments_ok: int = 0
    covered: int = 0
    media_bytes: int = 0
    dropped_findings: int = 0
    dropped_gaps: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        code: Code,
        message: str,
        device: str | None = None,
        seq_from: int | None = None,
        seq_to: int | None = None,
    ) -> None:
        """Record a finding, merging it into the previous one when it continues its range."""
        self.counts[code.value] = self.counts.get(code.value, 0) + 1
        seq_to = seq_from if seq_to is None else seq_to
        if self.findings:
            last = self.findings[-1]
            if (
                last.code is code
                and last.device == device
                and last.seq_to is not None
                and seq_from is not None
                and seq_from == last.seq_to + 1
            ):
                last.seq_to = seq_to
                return
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped_findings += 1
            return
        self.findings.append(Finding(code, message, device, seq_from, seq_to))

    def add_gap(self, gap: Gap) -> None:
        """Record a gap (bounded)."""
        if len(self.gaps) >= MAX_GAPS:
            self.dropped_gaps += 1
            return
        self.gaps.append(gap)

    @property
    def authentic(self) -> bool:
        """No finding of severity error."""
        return not any(f.severity is Severity.ERROR for f in self.findings) and not (
            self.dropped_findings and any(severity(Code(c)) is Severity.ERROR for c in self.counts)
        )

    @property
    def verdict(self) -> str:
        """``authentic`` or ``not_authentic``."""
        return "authentic" if self.authentic else "not_authentic"

    def to_json(self) -> dict[str, Any]:
        """The ``verify --json`` object."""
        return {
            "verdict": self.verdict,
            "source": {"path": self.source, "kind": self.kind},
            "trust": {
                "fingerprint": self.fingerprint,
                "pinned": self.pinned,
                "root_name": self.root_name,
            },
            "records": self.records,
            "segments": self.segments,
            "segments_ok": self.segments_ok,
            "covered_seconds": round(self.covered / 1e6, 3),
            "media_bytes": self.media_bytes,
            "gaps": [g.to_json() for g in self.gaps],
            "findings": [f.to_json() for f in self.findings],
            "finding_counts": dict(sorted(self.counts.items())),
            "dropped": {"findings": self.dropped_findings, "gaps": self.dropped_gaps},
            "sessions": [s.to_json() for s in self.sessions],
        }
