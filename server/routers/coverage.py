"""Coverage per device, day, shift (session) and incident: covered runs and gaps with causes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query

from protocol.api import API_PREFIX
from server import models
from server.coverage import day_bounds
from server.deps import MAX_SEQ, AdminDep, DevicePath, ServicesDep
from server.errors import NotFoundError
from server.routers.problems import PROBLEMS
from server.schemas import CoverageReport

SessionPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="session id, hex")]
IncidentPath = Annotated[str, Path(min_length=1, max_length=200)]


def router() -> APIRouter:
    """The coverage routes (administrator)."""
    api = APIRouter(prefix=f"{API_PREFIX}/coverage", tags=["coverage"], responses=PROBLEMS)

    async def known(device: str) -> None:
        if not await models.Device.filter(id=device).exists():
            raise NotFoundError(f"unknown device {device!r}")

    @api.get("/devices/{device}", response_model=CoverageReport)
    async def device_coverage(
        device: DevicePath,
        services: ServicesDep,
        _: AdminDep,
        start: int | None = Query(default=None, ge=0, le=MAX_SEQ),
        end: int | None = Query(default=None, ge=0, le=MAX_SEQ),
    ) -> CoverageReport:
        """A device's coverage, optionally within ``start``..``end`` (µs)."""
        await known(device)
        await services.coverage.catch_up(device)
        return await services.coverage.report(
            device=device, start=start, end=end, scope=f"device {device}"
        )

    @api.get("/devices/{device}/days/{day}", response_model=CoverageReport)
    async def day_coverage(
        device: DevicePath, day: dt.date, services: ServicesDep, _: AdminDep
    ) -> CoverageReport:
        """A device's coverage on one local day (the server's time zone)."""
        await known(device)
        await services.coverage.catch_up(device)
        start, end = day_bounds(day, ZoneInfo(services.settings.timezone))
        return await services.coverage.report(
            device=device, start=start, end=end, scope=f"device {device} day {day.isoformat()}"
        )

    @api.get("/devices/{device}/sessions/{session}", response_model=CoverageReport)
    async def session_coverage(
        device: DevicePath, session: SessionPath, services: ServicesDep, _: AdminDep
    ) -> CoverageReport:
        """A device's coverage during one session (a shift)."""
        await known(device)
        await services.coverage.catch_up(device)
        return await services.coverage.report(
            device=device,
            session=bytes.fromhex(session),
            scope=f"device {device} session {session}",
        )

    @api.get("/incidents/{incident}", response_model=CoverageReport)
    async def incident_coverage(
        incident: IncidentPath, services: ServicesDep, _: AdminDep
    ) -> CoverageReport:
        """Coverage of an incident over every device that recorded it."""
        devices = (
            await models.Record.filter(incident=incident)
            .distinct()
            .values_list("device", flat=True)
        )
        if not devices:
            raise NotFoundError(f"no records of incident {incident!r}")
        for device in devices:
            await services.coverage.catch_up(str(device))
        return await services.coverage.report(incident=incident, scope=f"incident {incident}")

    return api
