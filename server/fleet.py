"""Fleet state and health (R-DEV-1, R-REC-5): what each device last said, and the alerts.

Telemetry, status and events (from :mod:`server.mqtt`) and uploads update one
:class:`models.FleetState` row per device. Thresholds raise alerts and clear them when the
reading is back to normal. A watch task runs every :data:`WATCH_PERIOD` seconds: devices
silent for too long, and media of a past recording day still not on the server after the
same-day deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from protocol.events import Event, EventKind
from server import models
from server.alerts import AlertKind, Severity, clear_alert, raise_alert
from server.coverage import US, CoverageRules, day_start
from server.db import Database
from server.schemas import AlertInfo, AlertList, DeviceHealth, FleetHealth

log = logging.getLogger(__name__)

Clock = Callable[[], int]
WATCH_PERIOD = 15.0
_INT_FIELDS = {
    "storage_free": "storage_free",
    "storage_total": "storage_total",
    "clock_offset_us": "clock_offset_us",
    "backlog_records": "backlog_records",
    "backlog_bytes": "backlog_bytes",
    "battery_permille": "battery_permille",
}
_BOOL_FIELDS = {"charging": "charging", "recording": "recording", "clock_synced": None}


class Fleet:
    """Per-device health, the thresholds that raise alerts, and the fleet view."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        battery_low_permille: int,
        storage_low_bytes: int,
        clock_offset_max_us: int,
        silent_after_us: int,
        rules: CoverageRules,
    ) -> None:
        self.db = db
        self.clock = clock
        self.battery_low = battery_low_permille
        self.storage_low = storage_low_bytes
        self.clock_max = clock_offset_max_us
        self.silent_after = silent_after_us
        self.rules = rules

    async def _state(self, device: str) -> models.FleetState:
        state, _ = await models.FleetState.get_or_create(device=device)
        return state

    async def seen(self, device: str, *, upload: bool = False) -> None:
        """The device talked to the server (an upload or any message)."""
        now = self.clock()
        state = await self._state(device)
        state.last_seen = now
        fields = ["last_seen"]
        if upload:
            state.last_upload = now
            fields.append("last_upload")
        await state.save(update_fields=fields)
        await clear_alert(f"silent:{device}", now)

    async def event(self, event: Event) -> None:
        """Apply a checked, first-seen announcement."""
        now = self.clock()
        state = await self._state(event.device)
        state.last_seen = now
        if event.kind is EventKind.TELEMETRY:
            self._telemetry(state, event.body)
            state.online = True
        elif event.kind is EventKind.STATUS:
            state.online = event.body.get("state") != "offline"
        elif event.kind is EventKind.RECORDING_STARTED:
            state.recording = True
        elif event.kind is EventKind.RECORDING_STOPPED:
            state.recording = False
        await state.save()
        await clear_alert(f"silent:{event.device}", now)
        await self._thresholds(state)
        await self._event_alerts(event)

    @staticmethod
    def _telemetry(state: models.FleetState, body: Mapping[str, Any]) -> None:
        for key, attr in _INT_FIELDS.items():
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(state, attr, value)
        for key, flag in _BOOL_FIELDS.items():
            value = body.get(key)
            if flag is not None and isinstance(value, bool | int):
                setattr(state, flag, bool(value))

    async def _thresholds(self, state: models.FleetState) -> None:
        device, now = state.device, self.clock()
        checks: list[tuple[str, AlertKind, bool, str]] = []
        if state.battery_permille is not None:
            checks.append(
                (
                    f"battery:{device}",
                    AlertKind.LOW_BATTERY,
                    state.battery_permille < self.battery_low and not state.charging,
                    f"{device} battery at {state.battery_permille / 10:.0f} %",
                )
            )
        if state.storage_free is not None:
            checks.append(
                (
                    f"storage:{device}",
                    AlertKind.LOW_STORAGE,
                    state.storage_free < self.storage_low,
                    f"{device} has {state.storage_free / 2**20:.0f} MiB of storage left",
                )
            )
        if state.clock_offset_us is not None:
            checks.append(
                (
                    f"clock:{device}",
                    AlertKind.CLOCK_OFFSET,
                    abs(state.clock_offset_us) > self.clock_max,
                    f"{device} clock is off by {state.clock_offset_us / US:+.2f} s",
                )
            )
        for key, kind, bad, message in checks:
            if bad:
                await raise_alert(key, kind, Severity.WARNING, message, now, device)
            else:
                await clear_alert(key, now)

    async def _event_alerts(self, event: Event) -> None:
        kinds = {
            EventKind.DELETION_REFUSED: AlertKind.DELETION_REFUSED,
            EventKind.STORAGE_FULL: AlertKind.STORAGE_FULL,
            EventKind.CLOCK_FAULT: AlertKind.CLOCK_FAULT,
            EventKind.MEDIA_FAILING: AlertKind.MEDIA_FAILING,
        }
        kind = kinds.get(event.kind)
        if event.kind is EventKind.SELF_CHECK and event.body.get("passed") is False:
            kind = AlertKind.SELF_CHECK_FAILED
        if kind is None:
            return
        seq = event.body.get("seq")
        key = f"{kind.value}:{event.device}:" + (
            str(seq) if isinstance(seq, int) else f"{event.boot.hex()}:{event.n}"
        )
        await raise_alert(
            key,
            kind,
            Severity.WARNING,
            f"{event.device} announced {event.kind.value}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(event.body.items()))[:600],
            self.clock(),
            event.device,
            seq if isinstance(seq, int) else None,
        )

    # ------------------------------------------------------------------ watch
    async def watch(self) -> None:
        """Forever: look for silent devices and missed same-day uploads."""
        while True:
            try:
                await self.check_silent()
                await self.check_missing_uploads()
            except Exception:  # one failed pass must not end the watch
                log.exception("fleet watch pass failed")
            await asyncio.sleep(WATCH_PERIOD)

    async def check_silent(self) -> int:
        """Alert devices not heard from within the silence limit; return how many."""
        now = self.clock()
        silent = await models.FleetState.filter(
            last_seen__lt=now - self.silent_after, last_seen__isnull=False
        )
        for state in silent:
            revoked = await models.Device.filter(id=state.device, revoked__isnull=False).exists()
            if revoked:
                continue
            assert state.last_seen is not None
            await raise_alert(
                f"silent:{state.device}",
                AlertKind.SILENT,
                Severity.WARNING,
                f"{state.device} silent for {(now - state.last_seen) / US:.0f} s",
                now,
                state.device,
            )
        return len(silent)

    async def check_missing_uploads(self) -> int:
        """Alert media of past days not on the server after the deadline (R-REC-5)."""
        now = self.clock()
        # Anything recorded before this instant is past its deadline.
        cutoff = day_start(now - self.rules.upload_deadline, self.rules.timezone)
        sql = (
            "SELECT r.device AS device, MIN(r.t0) AS t0, COUNT(*) AS n FROM record r "
            "LEFT JOIN media m ON m.device = r.device AND m.seq = r.seq "
            "WHERE r.media_hash IS NOT NULL AND m.id IS NULL AND r.t0 < "
            + ("?" if self.db.dialect == "sqlite" else "$1")
            + " GROUP BY r.device"
        )
        rows = await self.db.connection().execute_query_dict(sql, [cutoff])
        for row in rows:
            device = str(row["device"])
            day = dt.datetime.fromtimestamp(int(row["t0"]) / US, self.rules.timezone).date()
            await raise_alert(
                f"missing-upload:{device}:{day.isoformat()}",
                AlertKind.MISSING_UPLOAD,
                Severity.WARNING,
                f"{device}: {row['n']} media file(s) recorded on or after {day.isoformat()} "
                "are not on the server after the same-day deadline (R-REC-5)",
                now,
                device,
            )
        return len(rows)

    # ------------------------------------------------------------------ views
    async def health(self) -> FleetHealth:
        """Every device with its newest readings and its open alerts."""
        devices = await models.Device.all().order_by("id")
        states = {s.device: s for s in await models.FleetState.all()}
        open_alerts = await models.Alert.filter(cleared__isnull=True).values_list(
            "device", flat=True
        )
        counts: dict[str | None, int] = {}
        for device in open_alerts:
            counts[device] = counts.get(device, 0) + 1  # type: ignore[index]
        custody = {}
        for row in await models.Custody.all().order_by("id"):
            custody[row.device] = row.officer if row.action == "check_out" else None
        out = []
        for device in devices:
            state = states.get(device.id)
            out.append(
                DeviceHealth(
                    device=device.id,
                    online=bool(state and state.online),
                    last_seen=state.last_seen if state else None,
                    battery_percent=(
                        state.battery_permille / 10
                        if state and state.battery_permille is not None
                        else None
                    ),
                    charging=state.charging if state else None,
                    storage_free=state.storage_free if state else None,
                    storage_total=state.storage_total if state else None,
                    clock_offset_seconds=(
                        state.clock_offset_us / US
                        if state and state.clock_offset_us is not None
                        else None
                    ),
                    backlog_records=state.backlog_records if state else None,
                    backlog_bytes=state.backlog_bytes if state else None,
                    recording=state.recording if state else None,
                    last_upload=state.last_upload if state else None,
                    next_seq=device.next_seq,
                    revoked=device.revoked is not None,
                    custodian=custody.get(device.id),
                    open_alerts=counts.get(device.id, 0),
                )
            )
        return FleetHealth(time=self.clock(), devices=out, open_alerts=len(open_alerts))

    @staticmethod
    async def alerts(
        device: str | None = None, open_only: bool = True, limit: int = 500
    ) -> AlertList:
        """Alerts, newest first."""
        query = models.Alert.all()
        if device is not None:
            query = query.filter(device=device)
        if open_only:
            query = query.filter(cleared__isnull=True)
        rows = await query.order_by("-time", "-id").limit(limit)
        return AlertList(
            alerts=[
                AlertInfo(
                    id=r.id,
                    key=r.key,
                    device=r.device,
                    kind=r.kind,
                    severity=r.severity,
                    message=r.message,
                    time=r.time,
                    seq_from=r.seq_from,
                    seq_to=r.seq_to,
                    cleared=r.cleared,
                )
                for r in rows
            ]
        )
