"""Fleet health as JSON: every device's newest readings, and the alerts."""

from __future__ import annotations

from fastapi import APIRouter, Query

from protocol.api import API_PREFIX
from server.deps import AdminDep, ServicesDep
from server.routers.problems import PROBLEMS
from server.schemas import DEVICE_PATTERN, AlertList, FleetHealth


def router() -> APIRouter:
    """The fleet routes (administrator)."""
    api = APIRouter(prefix=f"{API_PREFIX}/fleet", tags=["fleet"], responses=PROBLEMS)

    @api.get("", response_model=FleetHealth)
    async def fleet(services: ServicesDep, _: AdminDep) -> FleetHealth:
        """Battery, storage, clock offset, last seen, backlog and open alerts per device."""
        return await services.monitor.health()

    @api.get("/alerts", response_model=AlertList)
    async def alerts(
        services: ServicesDep,
        _: AdminDep,
        device: str | None = Query(default=None, pattern=DEVICE_PATTERN),
        active: bool = True,
        limit: int = Query(default=200, ge=1, le=10_000),
    ) -> AlertList:
        """Alerts, newest first (only those not cleared, unless ``active=false``)."""
        return await services.monitor.alerts(device, active, limit)

    return api
