"""Fleet state and alerts: what each device last said about its health, and what needs a look.

The :class:`FleetMonitor` takes signed announcements that the MQTT consumer has already
checked (signature, duplicates) and keeps one ``fleet_state`` row per device: battery,
storage, clock offset, backlog, recording, online, last seen (R-DEV-1). Readings over a
threshold raise an alert keyed by its condition (one row however often it repeats) and
clear it when the reading recovers. A periodic :meth:`FleetMonitor.check` finds silent
devices and devices that still had evidence to upload when their upload deadline passed
(R-REC-5).

Alerts raised from the signed chain itself (gaps inside incidents, refused deletions,
late uploads) come from :mod:`server.coverage`; forks and uploads after revocation from
:mod:`server.ingest`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from protocol.events import Event, EventKind
from server import models
from server.alerts import AlertKind, Severity, clear_alert, raise_alert
from server.metrics import DeviceGauges, Metrics
from server.schemas import AlertInfo, AlertList, DeviceHealth, FleetHealth
from server.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], int]
#: How often the periodic checks run (seconds).
CHECK_INTERVAL = 15.0
MAX_ALERTS = 1000
#: What an announcement may change in a device's fleet state (never ``last_upload``).
ANNOUNCED_FIELDS = [
    "online",
    "last_seen",
    "battery_permille",
    "charging",
    "storage_free",
    "storage_total",
    "clock_offset_us",
    "backlog_records",
    "backlog_bytes",
    "recording",
]
US = 1_000_000
#: ``seen`` writes a device's last-seen time at most this often (µs): uploads come in bursts
#: of requests, and one database write per request would cost a commit each.
SEEN_RESOLUTION = 1_000_000


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if type(value) is int else None


def _bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    return value if isinstance(value, bool) else None


class FleetMonitor:
    """Keeps the fleet state and raises and clears the health alerts."""

    def __init__(self, settings: Settings, metrics: Metrics, clock: Clock) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        # Last write of ``seen`` per device (one entry per device: bounded by the fleet).
        self._seen: dict[tuple[str, bool], int] = {}

    # ------------------------------------------------------------------ thresholds
    def upload_deadline(self, t: int) -> int:
        """When evidence recorded at ``t`` (µs) must be on the server (µs)."""
        local = datetime.fromtimestamp(t / US, ZoneInfo(self.settings.timezone))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(midnight.timestamp() * US) + int(self.settings.upload_deadline_hours * 3600 * US)

    # ------------------------------------------------------------------ announcements
    async def event(self, event: Event) -> None:
        """Take one checked, de-duplicated announcement."""
        now = self.clock()
        device = event.device
        state, _ = await models.FleetState.get_or_create(device=device)
        state.last_seen = max(int(state.last_seen or 0), now)
        body = event.body
        kind = event.kind
        state.online = kind is not EventKind.STATUS or body.get("state") != "offline"
        if kind is EventKind.TELEMETRY:
            self._telemetry(state, body)
        elif kind is EventKind.RECORDING_STARTED:
            state.recording = True
        elif kind is EventKind.RECORDING_STOPPED:
            state.recording = False
        # Not last_upload: an upload noted meanwhile (another request, another replica)
        # must not be overwritten with what this row held when it was read.
        await state.save(update_fields=ANNOUNCED_FIELDS)
        await clear_alert(f"silent:{device}", now)
        if kind is EventKind.TELEMETRY:
            await self._telemetry_alerts(state, now)
        else:
            await self._event_alerts(event, now)

    async def seen(self, device: str, *, upload: bool = False) -> None:
        """The device talked to the server over HTTP (an upload, when ``upload``)."""
        now = self.clock()
        last = self._seen.get((device, upload))
        if last is not None and 0 <= now - last < SEEN_RESOLUTION:
            return
        self._seen[(device, upload)] = now
        state, _ = await models.FleetState.get_or_create(device=device)
        state.last_seen = max(int(state.last_seen or 0), now)
        if upload:
            state.last_upload = now
        await state.save(update_fields=["last_seen", "last_upload"] if upload else ["last_seen"])
        await clear_alert(f"silent:{device}", now)

    async def _event_alerts(self, event: Event, now: int) -> None:
        device, body, kind = event.device, event.body, event.kind
        if kind is EventKind.DELETION_REFUSED:
            await raise_alert(
                f"deletion_refused:{device}:{event.boot.hex()}:{event.n}",
                AlertKind.DELETION_REFUSED,
                Severity.WARNING,
                f"{device} refused to delete {str(body.get('target', '?'))[:200]!r} "
                f"(asked through {str(body.get('interface', '?'))[:32]})",
                now,
                device,
            )
        elif kind is EventKind.STORAGE_FULL:
            await raise_alert(
                f"storage_full:{device}",
                AlertKind.STORAGE_FULL,
                Severity.CRITICAL,
                f"{device} announced that its storage is full",
                now,
                device,
            )
        elif kind is EventKind.CLOCK_FAULT:
            await raise_alert(
                f"clock_fault:{device}",
                AlertKind.CLOCK_FAULT,
                Severity.WARNING,
                f"{device} announced a clock fault ({dict(body)})"[:1000],
                now,
                device,
            )
        elif kind is EventKind.MEDIA_FAILING:
            await raise_alert(
                f"media_failing:{device}",
                AlertKind.MEDIA_FAILING,
                Severity.CRITICAL,
                f"{device} announced that its storage medium is failing",
                now,
                device,
            )
        elif kind is EventKind.SELF_CHECK:
            key = f"self_check:{device}"
            if body.get("passed") is False:
                await raise_alert(
                    key,
                    AlertKind.SELF_CHECK_FAILED,
                    Severity.WARNING,
                    f"{device} failed its pre-shift self-check",
                    now,
                    device,
                )
            elif body.get("passed") is True:
                await clear_alert(key, now)

    def _telemetry(self, state: models.FleetState, body: Mapping[str, Any]) -> None:
        permille = _int(body, "battery_permille")
        if permille is not None:
            state.battery_permille = max(0, min(permille, 1000))
        for name, value in (
            ("charging", _bool(body, "charging")),
            ("recording", _bool(body, "recording")),
            ("storage_free", _int(body, "storage_free")),
            ("storage_total", _int(body, "storage_total")),
            ("clock_offset_us", _int(body, "clock_offset_us")),
            ("backlog_records", _int(body, "backlog_records")),
            ("backlog_bytes", _int(body, "backlog_bytes")),
        ):
            if value is not None:
                setattr(state, name, value)

    async def _telemetry_alerts(self, state: models.FleetState, now: int) -> None:
        device = str(state.device)
        s = self.settings
        battery = state.battery_permille
        key = f"battery:{device}"
        if battery is not None and battery < s.battery_low_percent * 10 and not state.charging:
            await raise_alert(
                key,
                AlertKind.LOW_BATTERY,
                Severity.WARNING,
                f"{device} battery at {battery / 10:.0f}%",
                now,
                device,
            )
        elif battery is not None:
            await clear_alert(key, now)
        free = state.storage_free
        key = f"storage:{device}"
        if free is not None and free < s.storage_low_bytes:
            await raise_alert(
                key,
                AlertKind.LOW_STORAGE,
                Severity.WARNING,
                f"{device} has {free / 1e6:.0f} MB of storage left",
                now,
                device,
            )
        elif free is not None:
            await clear_alert(key, now)
            await clear_alert(f"storage_full:{device}", now)
        offset = state.clock_offset_us
        key = f"clock:{device}"
        if offset is not None and abs(offset) > s.clock_offset_max_seconds * US:
            await raise_alert(
                key,
                AlertKind.CLOCK_OFFSET,
                Severity.WARNING,
                f"{device} clock is off by {offset / US:+.3f} s "
                f"(threshold {s.clock_offset_max_seconds} s)",
                now,
                device,
            )
        elif offset is not None:
            await clear_alert(key, now)

    # ------------------------------------------------------------------ periodic
    async def check(self) -> None:
        """Silent devices, and evidence still on a device when its upload deadline passed."""
        now = self.clock()
        silent_after = int(self.settings.silent_after_seconds * US)
        states = {str(s.device): s for s in await models.FleetState.all()}
        for device in await models.Device.filter(revoked__isnull=True):
            name = str(device.id)
            state = states.get(name)
            seen = max(
                int(device.enrolled),
                int(state.last_seen or 0) if state else 0,
                int(state.last_upload or 0) if state else 0,
            )
            key = f"silent:{name}"
            if now - seen > silent_after:
                await raise_alert(
                    key,
                    AlertKind.SILENT,
                    Severity.WARNING,
                    f"nothing heard from {name} for {(now - seen) / US:.0f} s",
                    now,
                    name,
                )
            else:
                await clear_alert(key, now)
            if state is not None:
                await self._backlog_at_deadline(name, state, now)

    async def _backlog_at_deadline(self, name: str, state: models.FleetState, now: int) -> None:
        """The device reported evidence still to upload after the last deadline passed."""
        backlog = int(state.backlog_records or 0) + int(state.backlog_bytes or 0)
        if backlog <= 0 or state.last_seen is None:
            return
        # The last deadline that has passed: today's if past it, else yesterday's.
        deadline = self.upload_deadline(now)
        if deadline > now:
            deadline = self.upload_deadline(now - 86_400 * US)
        if int(state.last_seen) >= deadline and int(state.last_upload or 0) < deadline:
            day = datetime.fromtimestamp(deadline / US, UTC).date().isoformat()
            await raise_alert(
                f"missing_upload:{name}:{day}",
                AlertKind.MISSING_UPLOAD,
                Severity.WARNING,
                f"{name} still held {state.backlog_records or 0} record(s) and "
                f"{state.backlog_bytes or 0} media file(s) to upload after the "
                "upload deadline (R-REC-5)",
                now,
                name,
            )

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Run :meth:`check` every ``interval`` seconds (the caller activates the database)."""
        while True:
            try:
                await self.check()
            except Exception:  # one failed pass must not end the checks: log and go on
                log.exception("fleet check failed")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ views
    async def device_health(self, device: str) -> DeviceHealth | None:
        """The fleet view of one device, or None if it is not enrolled."""
        row = await models.Device.get_or_none(id=device)
        if row is None:
            return None
        state = await models.FleetState.get_or_none(device=device)
        custodians = await _custodians([device])
        alerts = await models.Alert.filter(device=device, cleared__isnull=True).count()
        return _health(row, state, custodians.get(device), alerts)

    async def health(self) -> FleetHealth:
        """The fleet view of every device."""
        rows = await models.Device.all().order_by("id")
        states = {str(s.device): s for s in await models.FleetState.all()}
        custodians = await _custodians([str(r.id) for r in rows])
        open_alerts: dict[str, int] = {}
        total = 0
        for device in await models.Alert.filter(cleared__isnull=True).values_list(
            "device", flat=True
        ):
            total += 1
            if device is not None:
                open_alerts[str(device)] = open_alerts.get(str(device), 0) + 1
        devices = [
            _health(
                r, states.get(str(r.id)), custodians.get(str(r.id)), open_alerts.get(str(r.id), 0)
            )
            for r in rows
        ]
        return FleetHealth(time=self.clock(), devices=devices, open_alerts=total)

    async def alerts(
        self, device: str | None = None, active: bool = True, limit: int = 100
    ) -> AlertList:
        """Alerts, newest first."""
        query = models.Alert.all()
        if device is not None:
            query = query.filter(device=device)
        if active:
            query = query.filter(cleared__isnull=True)
        rows = await query.order_by("-time", "-id").limit(max(1, min(limit, MAX_ALERTS)))
        return AlertList(
            alerts=[
                AlertInfo(
                    id=int(a.id),
                    key=str(a.key),
                    device=a.device,
                    kind=str(a.kind),
                    severity=str(a.severity),
                    message=str(a.message),
                    time=int(a.time),
                    seq_from=a.seq_from,
                    seq_to=a.seq_to,
                    cleared=a.cleared,
                )
                for a in rows
            ]
        )

    async def refresh_metrics(self) -> None:
        """Set the per-device gauges from the fleet state (called before each scrape)."""
        devices = [str(d) for d in await models.Device.all().values_list("id", flat=True)]
        states = {str(s.device): s for s in await models.FleetState.all()}
        gauges = []
        for name in devices:
            s = states.get(name)
            if s is None:
                gauges.append(DeviceGauges(name, None, None, None, None, None, None, False))
                continue
            seen = max(int(s.last_seen or 0), int(s.last_upload or 0))
            gauges.append(
                DeviceGauges(
                    name,
                    s.battery_permille / 10 if s.battery_permille is not None else None,
                    s.storage_free,
                    s.clock_offset_us / US if s.clock_offset_us is not None else None,
                    s.backlog_records,
                    s.backlog_bytes,
                    seen / US if seen else None,
                    bool(s.online),
                )
            )
        self.metrics.set_devices(gauges)


async def _custodians(devices: list[str]) -> dict[str, str | None]:
    """The officer each device is checked out to now (None if checked in)."""
    found: dict[str, str | None] = {}
    if not devices:
        return found
    for row in await models.Custody.filter(device__in=devices).order_by("id"):
        found[str(row.device)] = str(row.officer) if row.action == "check_out" else None
    return found


def _health(
    row: models.Device, state: models.FleetState | None, custodian: str | None, alerts: int
) -> DeviceHealth:
    s = state
    return DeviceHealth(
        device=str(row.id),
        online=bool(s.online) if s else False,
        last_seen=s.last_seen if s else None,
        battery_percent=s.battery_permille / 10 if s and s.battery_permille is not None else None,
        charging=s.charging if s else None,
        storage_free=s.storage_free if s else None,
        storage_total=s.storage_total if s else None,
        clock_offset_seconds=(
            s.clock_offset_us / US if s and s.clock_offset_us is not None else None
        ),
        backlog_records=s.backlog_records if s else None,
        backlog_bytes=s.backlog_bytes if s else None,
        recording=s.recording if s else None,
        last_upload=s.last_upload if s else None,
        next_seq=int(row.next_seq),
        revoked=row.revoked is not None,
        custodian=custodian,
        open_alerts=alerts,
    )
