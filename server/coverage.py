"""Coverage: when each device recorded, the gaps between, and why (R-REC-2, R-SUP-2).

Coverage is derived from the chain, record by record in seq order, with the same rules as
the offline verifier (:mod:`protocol.verify.chain`): a pause between consecutive segments
longer than :data:`GAP_TOLERANCE` is a gap, and its cause comes from the records in
between: a recovery record after an unclosed session is ``power_loss``, ``storage_full``
records say so, a closed session followed by a new one is ``off_duty``, anything else is
``unexplained``. A segment whose media has not reached the server counts as ``missing``
when coverage is asked for.

Runs of segments of one session and one incident binding are stored *merged* as one
interval row, so a device-year is a few thousand rows, not millions. A cursor per device
says how far the chain has been read; the same pass raises the alerts that the records
call for (gap inside an incident, refused deletion, storage full, clock faults, late
upload, use outside a custody assignment).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from protocol.record import RecordKind
from protocol.verify.chain import GAP_TOLERANCE, ROLLBACK_TOLERANCE
from server import models
from server.alerts import AlertKind, Severity, raise_alert
from server.db import Database, IntegrityError
from server.schemas import CoverageReport, GapInfo, IntervalInfo

log = logging.getLogger(__name__)

Clock = Callable[[], int]
PAGE = 1000
CAUSE_ORDER = ("missing", "power_loss", "storage_full", "off_duty", "unexplained")
US = 1_000_000


@dataclass(frozen=True, slots=True)
class CoverageRules:
    """Thresholds that turn records into alerts."""

    clock_offset_max: int
    upload_deadline: int
    timezone: ZoneInfo


def day_start(t: int, zone: ZoneInfo) -> int:
    """Start (µs) of the local day that holds ``t``."""
    local = dt.datetime.fromtimestamp(t / US, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * US)


def day_bounds(day: dt.date, zone: ZoneInfo) -> tuple[int, int]:
    """Start and end (µs) of a local day."""
    start = dt.datetime.combine(day, dt.time(), zone)
    end = start + dt.timedelta(days=1)
    return int(start.timestamp() * US), int(end.timestamp() * US)


class Coverage:
    """Reads device chains into merged intervals and alerts; answers coverage questions."""

    def __init__(self, db: Database, clock: Clock, rules: CoverageRules) -> None:
        self.db = db
        self.clock = clock
        self.rules = rules
        # A lock lives while a pass holds it (weak values).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ building
    async def catch_up(self, device: str) -> int:
        """Read the records of ``device`` not yet read; return how many were read.

        One pass per device at a time: in this process by a lock, across replicas by the
        cursor row, locked for the transaction (made first, outside it, if missing).
        """
        async with self._locks.setdefault(device, asyncio.Lock()):
            if not await models.CoverageCursor.filter(device=device).exists():
                with contextlib.suppress(IntegrityError):
                    await models.CoverageCursor.create(device=device, seq=0, state={})
            return await self._catch_up(device)

    async def _catch_up(self, device: str) -> int:
        total = 0
        while True:
            async with self.db.transaction():
                cursor = await models.CoverageCursor.select_for_update().get(device=device)
                records = (
                    await models.Record.filter(device=device, seq__gte=cursor.seq)
                    .order_by("seq")
                    .limit(PAGE)
                )
                if not records:
                    return total
                custody = await models.Custody.filter(device=device).order_by("id")
                state = _State.load(cursor.state)
                for record in records:
                    await self._read(record, state, custody)
                cursor.seq = records[-1].seq + 1
                cursor.state = state.dump()
                await cursor.save(update_fields=["seq", "state"])
                total += len(records)
            if len(records) < PAGE:
                return total

    async def _read(
        self, record: models.Record, state: _State, custody: list[models.Custody]
    ) -> None:
        kind = RecordKind(record.kind)
        await self._alerts(record, kind, state, custody)
        if kind is RecordKind.SESSION_OPEN:
            if state.session is not None:
                if state.closed:
                    state.causes.add("off_duty")
                else:
                    state.needs_recovery = True
            state.session = bytes(record.session).hex()
            state.closed = False
            state.recovery_seen = False
            return
        if kind is RecordKind.RECOVERY:
            state.recovery_seen = True
            if state.needs_recovery:
                state.causes.add("power_loss")
                state.needs_recovery = False
        elif state.needs_recovery and not state.recovery_seen:
            state.recovery_seen = True
            state.needs_recovery = False
            state.causes.add("unexplained")
        if kind is RecordKind.SESSION_CLOSE:
            state.closed = True
        elif kind is RecordKind.STORAGE_FULL:
            state.causes.add("storage_full")
        elif kind is RecordKind.SEGMENT:
            await self._segment(record, state)

    async def _segment(self, record: models.Record, state: _State) -> None:
        last = state.last
        gap: models.Interval | None = None
        session = bytes(record.session)
        if last is not None:
            same_boot = last["boot"] == bytes(record.boot).hex()
            pause = record.m0 - last["m1"] if same_boot else record.t0 - last["t1"]
            if pause > GAP_TOLERANCE or (not same_boot and "power_loss" in state.causes):
                cause = next((c for c in CAUSE_ORDER if c in state.causes), "unexplained")
                start = last["t1"]
                end = max(record.t0, start + pause) if same_boot else max(record.t0, start)
                in_incident = record.incident is not None and record.incident == last["incident"]
                gap = await models.Interval.create(
                    device=record.device,
                    state="gap",
                    cause=cause,
                    start=start,
                    end=end,
                    seq_from=last["seq"],
                    seq_to=record.seq,
                    segments=0,
                    session=session,
                    officer=record.officer,
                    incident=record.incident if in_incident else None,
                )
                await self._gap_alerts(record, gap, in_incident)
        state.causes.clear()
        current = (
            await models.Interval.get_or_none(id=state.interval)
            if state.interval is not None and gap is None
            else None
        )
        if (
            current is not None
            and bytes(current.session) == session
            and current.incident == record.incident
            and current.officer == record.officer
        ):
            current.end = max(current.end, record.t1)
            current.seq_to = record.seq
            current.segments += 1
            await current.save(update_fields=["end", "seq_to", "segments"])
        else:
            current = await models.Interval.create(
                device=record.device,
                state="covered",
                start=record.t0,
                end=record.t1,
                seq_from=record.seq,
                seq_to=record.seq,
                segments=1,
                session=session,
                officer=record.officer,
                incident=record.incident,
            )
            state.interval = current.id
        state.last = {
            "t1": record.t1,
            "m1": record.m1,
            "boot": bytes(record.boot).hex(),
            "seq": record.seq,
            "incident": record.incident,
        }

    async def _gap_alerts(self, record: models.Record, gap: models.Interval, inside: bool) -> None:
        seconds = (gap.end - gap.start) / US
        if inside:
            await raise_alert(
                f"gap-incident:{record.device}:{gap.seq_from}",
                AlertKind.GAP_IN_INCIDENT,
                Severity.WARNING,
                f"{seconds:.1f} s without recording inside incident {record.incident!r} "
                f"({gap.cause}) between seq {gap.seq_from} and {gap.seq_to}",
                self.clock(),
                record.device,
                gap.seq_from,
                gap.seq_to,
            )
        if gap.cause == "unexplained":
            await raise_alert(
                f"gap:{record.device}:{gap.seq_from}",
                AlertKind.GAP_UNEXPLAINED,
                Severity.WARNING,
                f"{seconds:.1f} s without recording and no recorded cause "
                f"between seq {gap.seq_from} and {gap.seq_to}",
                self.clock(),
                record.device,
                gap.seq_from,
                gap.seq_to,
            )

    async def _alerts(
        self,
        record: models.Record,
        kind: RecordKind,
        state: _State,
        custody: list[models.Custody],
    ) -> None:
        device, seq, now = record.device, record.seq, self.clock()
        simple = {
            RecordKind.DELETION_REFUSED: (
                AlertKind.DELETION_REFUSED,
                "a deletion of evidence was attempted and refused",
            ),
            RecordKind.STORAGE_FULL: (AlertKind.STORAGE_FULL, "the device storage filled up"),
            RecordKind.CLOCK_FAULT: (AlertKind.CLOCK_FAULT, "the device reported a clock fault"),
            RecordKind.MEDIA_FAILING: (
                AlertKind.MEDIA_FAILING,
                "the device storage does not keep what is written",
            ),
        }
        if kind in simple:
            alert_kind, text = simple[kind]
            await raise_alert(
                f"{alert_kind.value}:{device}:{seq}",
                alert_kind,
                Severity.WARNING,
                f"{device} seq {seq}: {text}",
                now,
                device,
                seq,
                seq,
            )
        if kind is RecordKind.SELF_CHECK:
            body = _body(record)
            if body.get("passed") is False:
                await raise_alert(
                    f"self-check:{device}:{seq}",
                    AlertKind.SELF_CHECK_FAILED,
                    Severity.WARNING,
                    f"{device} failed its self-check (seq {seq})",
                    now,
                    device,
                    seq,
                    seq,
                )
        if record.t0 > record.received + self.rules.clock_offset_max:
            await raise_alert(
                f"clock-ahead:{device}:{bytes(record.boot).hex()}",
                AlertKind.CLOCK_OFFSET,
                Severity.WARNING,
                f"{device} seq {seq} starts {(record.t0 - record.received) / US:.1f} s after "
                "the server received it: the device clock is ahead",
                now,
                device,
                seq,
            )
        last = state.last_record
        boot = bytes(record.boot).hex()
        if (
            last is not None
            and last["boot"] == boot
            and record.m0 >= last["m1"]
            and record.t0 < last["t1"] - ROLLBACK_TOLERANCE
        ):
            await raise_alert(
                f"rollback:{device}:{seq}",
                AlertKind.CLOCK_ROLLBACK,
                Severity.WARNING,
                f"{device}: wall clock went back {(last['t1'] - record.t0) / US:.1f} s at seq "
                f"{seq} while monotonic time advanced",
                now,
                device,
                seq,
            )
        state.last_record = {"t1": record.t1, "m1": record.m1, "boot": boot}
        deadline = day_start(record.t0, self.rules.timezone) + self.rules.upload_deadline
        if record.received > deadline:
            day = dt.datetime.fromtimestamp(record.t0 / US, self.rules.timezone).date()
            await raise_alert(
                f"late:{device}:{day.isoformat()}",
                AlertKind.LATE_UPLOAD,
                Severity.WARNING,
                f"{device}: records of {day.isoformat()} reached the server after the "
                "same-day deadline (R-REC-5)",
                now,
                device,
                seq,
            )
        if kind in (RecordKind.SESSION_OPEN, RecordKind.SEGMENT) and record.officer:
            holder = _holder(custody, record.t0)
            if holder != record.officer:
                await raise_alert(
                    f"custody:{device}:{bytes(record.session).hex()}",
                    AlertKind.CUSTODY,
                    Severity.WARNING,
                    f"{device} recorded for officer {record.officer!r} at seq {seq} while "
                    + (f"checked out to {holder!r}" if holder else "not checked out")
                    + " (use outside an assignment, R-DEV-2)",
                    now,
                    device,
                    seq,
                )

    # ------------------------------------------------------------------ questions
    async def report(
        self,
        *,
        device: str | None = None,
        incident: str | None = None,
        session: bytes | None = None,
        start: int | None = None,
        end: int | None = None,
        scope: str,
    ) -> CoverageReport:
        """Covered runs and gaps of a device (optionally a period or a session) or incident."""
        query = models.Interval.all()
        if device is not None:
            query = query.filter(device=device)
        if incident is not None:
            query = query.filter(incident=incident)
        if session is not None:
            query = query.filter(session=session)
        if start is not None:
            query = query.filter(end__gte=start)
        if end is not None:
            query = query.filter(start__lte=end)
        rows = await query.order_by("start", "id")
        missing = await self._missing_media(device, incident, session, start, end)
        intervals: list[IntervalInfo] = []
        gaps: list[GapInfo] = []
        covered = 0
        for row in rows:
            lo = max(row.start, start) if start is not None else row.start
            hi = min(row.end, end) if end is not None else row.end
            if row.state == "gap":
                gaps.append(_gap(lo, hi, row.cause or "unexplained", row.seq_from, row.seq_to))
                continue
            covered += hi - lo
            intervals.append(
                IntervalInfo(
                    start=lo,
                    end=hi,
                    seconds=(hi - lo) / US,
                    segments=row.segments,
                    seq_from=row.seq_from,
                    seq_to=row.seq_to,
                    session=bytes(row.session).hex(),
                    officer=row.officer,
                    incident=row.incident,
                )
            )
        for seq, t0, t1 in missing:
            lo = max(t0, start) if start is not None else t0
            hi = min(t1, end) if end is not None else t1
            covered -= max(0, hi - lo)
            gaps.append(_gap(lo, hi, "missing", seq, seq))
        gaps.sort(key=lambda g: (g.start, g.end))
        return CoverageReport(
            scope=scope,
            device=device,
            start=start,
            end=end,
            covered_seconds=max(0, covered) / US,
            gaps=_merge_gaps(gaps),
            intervals=intervals,
        )

    async def _missing_media(
        self,
        device: str | None,
        incident: str | None,
        session: bytes | None,
        start: int | None,
        end: int | None,
    ) -> list[tuple[int, int, int]]:
        """Segments in scope whose media the server does not hold: (seq, t0, t1)."""
        # Only the segments still pending are looked at (a few rows, not a device-year's
        # millions); one whose media row exists (a crash between the media commit and the
        # pending row's removal) is not missing.
        clauses = ["m.id IS NULL"]
        values: list[Any] = []
        for column, value in (
            ("p.device", device),
            ("p.incident", incident),
            ("p.session", session),
        ):
            if value is not None:
                values.append(value)
                clauses.append(f"{column} = {self._placeholder(len(values))}")
        if start is not None:
            values.append(start)
            clauses.append(f"p.t1 >= {self._placeholder(len(values))}")
        if end is not None:
            values.append(end)
            clauses.append(f"p.t0 <= {self._placeholder(len(values))}")
        sql = (
            "SELECT p.seq AS seq, p.t0 AS t0, p.t1 AS t1 FROM pending_media p "  # noqa: S608 - fixed text
            "LEFT JOIN media m ON m.device = p.device AND m.seq = p.seq "
            f"WHERE {' AND '.join(clauses)} ORDER BY p.t0 LIMIT 100000"
        )
        rows = await self.db.connection().execute_query_dict(sql, values)
        return [(int(r["seq"]), int(r["t0"]), int(r["t1"])) for r in rows]

    def _placeholder(self, n: int) -> str:
        return "?" if self.db.dialect == "sqlite" else f"${n}"


class _State:
    """What the coverage pass carries from one record to the next (kept as JSON)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.session: str | None = raw.get("session")
        self.closed: bool = bool(raw.get("closed", False))
        self.needs_recovery: bool = bool(raw.get("needs_recovery", False))
        self.recovery_seen: bool = bool(raw.get("recovery_seen", False))
        self.causes: set[str] = set(raw.get("causes", []))
        self.interval: int | None = raw.get("interval")
        self.last: dict[str, Any] | None = raw.get("last")
        self.last_record: dict[str, Any] | None = raw.get("last_record")

    @classmethod
    def load(cls, raw: object) -> _State:
        return cls(raw if isinstance(raw, dict) else {})

    def dump(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "closed": self.closed,
            "needs_recovery": self.needs_recovery,
            "recovery_seen": self.recovery_seen,
            "causes": sorted(self.causes),
            "interval": self.interval,
            "last": self.last,
            "last_record": self.last_record,
        }


def _body(record: models.Record) -> dict[str, Any]:
    from protocol.record import SignedRecord  # noqa: PLC0415 - rare path

    return dict(SignedRecord.parse(bytes(record.encoded)).record.body)


def _holder(custody: list[models.Custody], at: int) -> str | None:
    holder: str | None = None
    for entry in custody:
        if entry.time > at:
            break
        holder = entry.officer if entry.action == "check_out" else None
    return holder


def _gap(start: int, end: int, cause: str, seq_from: int | None, seq_to: int | None) -> GapInfo:
    return GapInfo(
        start=start,
        end=end,
        seconds=max(0, end - start) / US,
        cause=cause,
        seq_from=seq_from,
        seq_to=seq_to,
    )


def _merge_gaps(gaps: list[GapInfo]) -> list[GapInfo]:
    """Adjacent missing-media gaps become one gap."""
    merged: list[GapInfo] = []
    for gap in gaps:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and prev.cause == gap.cause == "missing"
            and gap.start - prev.end <= GAP_TOLERANCE
        ):
            merged[-1] = _gap(
                prev.start, max(prev.end, gap.end), "missing", prev.seq_from, gap.seq_to
            )
        else:
            merged.append(gap)
    return merged
