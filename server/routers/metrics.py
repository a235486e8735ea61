"""``GET /metrics``: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from server.deps import ServicesDep
from server.metrics import CONTENT_TYPE


def router() -> APIRouter:
    """The metrics route."""
    api = APIRouter(tags=["metrics"])

    @api.get("/metrics", response_class=Response)
    async def metrics(services: ServicesDep) -> Response:
        """Per-device gauges (battery, storage, clock offset, backlog, last seen) and counters."""
        await services.monitor.refresh_metrics()
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    return api
