"""Alerts: findings a person should look at, one row per condition.

An alert is keyed by its condition (``battery:cam-1``, ``fork:cam-1:41``), so a finding
repeated by every telemetry message stays one alert. A condition that ends is *cleared*
(time kept); if it comes back, the same alert is raised again with a new time.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from server import models
from server.db import IntegrityError

log = logging.getLogger(__name__)


class AlertKind(StrEnum):
    """What an alert is about."""

    LOW_BATTERY = "low_battery"
    LOW_STORAGE = "low_storage"
    STORAGE_FULL = "storage_full"
    CLOCK_OFFSET = "clock_offset"
    CLOCK_ROLLBACK = "clock_rollback"
    CLOCK_FAULT = "clock_fault"
    SILENT = "silent"
    LATE_UPLOAD = "late_upload"
    MISSING_UPLOAD = "missing_upload"
    GAP_IN_INCIDENT = "gap_in_incident"
    GAP_UNEXPLAINED = "gap_unexplained"
    DELETION_REFUSED = "deletion_refused"
    MEDIA_FAILING = "media_failing"
    SELF_CHECK_FAILED = "self_check_failed"
    TAMPER = "tamper"
    FORK = "fork"
    REVOKED_UPLOAD = "revoked_upload"
    CUSTODY = "custody"
    ORPHAN_BLOB = "orphan_blob"
    EVENT_REJECTED = "event_rejected"


class Severity(StrEnum):
    """How urgent."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


async def raise_alert(
    key: str,
    kind: AlertKind,
    severity: Severity,
    message: str,
    time: int,
    device: str | None = None,
    seq_from: int | None = None,
    seq_to: int | None = None,
) -> bool:
    """Raise (or re-raise a cleared) alert; True if it is new or re-opened."""
    key = key[:300]
    message = message[:1000]
    existing = await models.Alert.get_or_none(key=key)
    if existing is not None:
        if existing.cleared is None:
            return False
        existing.cleared = None
        existing.time = time
        existing.message = message
        await existing.save(update_fields=["cleared", "time", "message"])
        log.warning("alert again %s: %s", key, message)
        return True
    try:
        await models.Alert.create(
            key=key,
            device=device,
            kind=kind.value,
            severity=severity.value,
            message=message,
            time=time,
            seq_from=seq_from,
            seq_to=seq_to,
        )
    except IntegrityError:
        return False  # raised meanwhile by another replica
    log.warning("alert %s: %s", key, message)
    return True


async def clear_alert(key: str, time: int) -> None:
    """The condition behind ``key`` has ended."""
    await models.Alert.filter(key=key[:300], cleared__isnull=True).update(cleared=time)
