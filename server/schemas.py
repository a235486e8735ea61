"""HTTP schemas that only the server speaks (administration, fleet, coverage, export).

The device-facing schemas are in :mod:`protocol.api`; these follow the same rules (frozen,
unknown fields refused, versioned, binary as base64url, times in µs since the epoch).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from protocol.api import Wire

DEVICE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
MAX_TIME = (1 << 63) - 1


class Health(Wire):
    """``GET /healthz``."""

    status: Literal["ok", "degraded"]
    database: str
    blobs: str
    log_size: int
    time: int


class TrustMaterial(Wire):
    """What anyone needs to check this server's signatures: root and certificates."""

    root: str
    fingerprint: str
    server_cert: str
    encryption_cert: str
    log: str


class EnrolmentTokenRequest(Wire):
    """An administrator asks for a one-time enrolment token."""

    device: str | None = Field(default=None, pattern=DEVICE_PATTERN)
    ttl: float | None = Field(default=None, gt=0, le=366 * 86400)


class EnrolmentTokenIssued(Wire):
    """A one-time token; shown once, stored only as a hash."""

    token: str
    device: str | None
    expires: int


class DeviceInfo(Wire):
    """One device of the registry."""

    device: str
    fingerprint: str
    enrolled: int
    next_seq: int
    head: str | None
    revoked: int | None
    revoked_reason: str | None
    custodian: str | None


class DeviceList(Wire):
    """The device registry."""

    devices: list[DeviceInfo]


class RevokeRequest(Wire):
    """Report a device lost, stolen or misused."""

    reason: str = Field(min_length=1, max_length=500)


class RevocationIssued(Wire):
    """The revocation, and the root-signed list that now holds it."""

    device: str
    time: int
    log_size: int
    reason: str
    revocations: str


class CustodyRequest(Wire):
    """Check a device out to an officer, or back in."""

    action: Literal["check_out", "check_in"]
    officer: str = Field(min_length=1, max_length=200)
    actor: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)


class CustodyEntry(Wire):
    """One line of the custody register."""

    id: int
    device: str
    officer: str
    action: str
    time: int
    actor: str
    note: str
    hash: str


class CustodyRegister(Wire):
    """A device's custody register, oldest first; ``intact`` if its hash chain holds."""

    device: str
    custodian: str | None
    intact: bool
    entries: list[CustodyEntry]


class AlertInfo(Wire):
    """One alert."""

    id: int
    key: str
    device: str | None
    kind: str
    severity: str
    message: str
    time: int
    seq_from: int | None
    seq_to: int | None
    cleared: int | None


class AlertList(Wire):
    """Alerts, newest first."""

    alerts: list[AlertInfo]


class DeviceHealth(Wire):
    """What the fleet view shows for one device."""

    device: str
    online: bool
    last_seen: int | None
    battery_percent: float | None
    charging: bool | None
    storage_free: int | None
    storage_total: int | None
    clock_offset_seconds: float | None
    backlog_records: int | None
    backlog_bytes: int | None
    recording: bool | None
    last_upload: int | None
    next_seq: int
    revoked: bool
    custodian: str | None
    open_alerts: int


class FleetHealth(Wire):
    """The whole fleet."""

    time: int
    devices: list[DeviceHealth]
    open_alerts: int


class ExportRequest(Wire):
    """What to export: one device (whole chain, a seq range or a time range) or an incident."""

    device: str | None = Field(default=None, pattern=DEVICE_PATTERN)
    incident: str | None = Field(default=None, min_length=1, max_length=200)
    seq_from: int | None = Field(default=None, ge=0, le=MAX_TIME)
    seq_to: int | None = Field(default=None, ge=0, le=MAX_TIME)
    start: int | None = Field(default=None, ge=0, le=MAX_TIME)
    end: int | None = Field(default=None, ge=0, le=MAX_TIME)
    openings: bool = False
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

    @model_validator(mode="after")
    def _scope(self) -> ExportRequest:
        if (self.device is None) == (self.incident is None):
            raise ValueError("name exactly one of device or incident")
        if self.incident is not None and any(
            v is not None for v in (self.seq_from, self.seq_to, self.start, self.end)
        ):
            raise ValueError("an incident export takes no seq or time range")
        if self.seq_from is not None and self.seq_to is not None and self.seq_to < self.seq_from:
            raise ValueError("seq_to is before seq_from")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        if (self.seq_from is not None or self.seq_to is not None) and (
            self.start is not None or self.end is not None
        ):
            raise ValueError("give a seq range or a time range, not both")
        return self


class OrphanScan(Wire):
    """What a walk of the blob store found."""

    new: int
    total: int


class ExportDone(Wire):
    """Where the bundle is, and what it holds."""

    path: str
    scope: str
    devices: list[str]
    records: int
    media: int
    checkpoint_size: int
    fingerprint: str


class GapInfo(Wire):
    """Time without recording and why."""

    start: int
    end: int
    seconds: float
    cause: str
    seq_from: int | None
    seq_to: int | None


class IntervalInfo(Wire):
    """A merged run of recorded segments."""

    start: int
    end: int
    seconds: float
    segments: int
    seq_from: int
    seq_to: int
    session: str
    officer: str | None
    incident: str | None


class CoverageReport(Wire):
    """Coverage of a device (or an incident) over a period: runs, gaps, causes."""

    scope: str
    device: str | None
    start: int | None
    end: int | None
    covered_seconds: float
    gaps: list[GapInfo]
    intervals: list[IntervalInfo]
