"""``GET /healthz``: is the database answering, how big is the log."""

from __future__ import annotations

from fastapi import APIRouter

from server import models
from server.db import DATABASE_ERRORS
from server.deps import ServicesDep
from server.schemas import Health


def router() -> APIRouter:
    """The health route."""
    api = APIRouter(tags=["health"])

    @api.get("/healthz", response_model=Health)
    async def healthz(services: ServicesDep) -> Health:
        """Liveness and readiness: the database answers and the log head is readable."""
        try:
            head = await models.LogHead.get_or_none(id=1)
            database, size = "ok", head.size if head is not None else 0
        except DATABASE_ERRORS as exc:
            database, size = f"error: {type(exc).__name__}", 0
        ok = database == "ok" and services.writer.running
        return Health(
            status="ok" if ok else "degraded",
            database=database,
            blobs=services.blobs.name,
            log_size=size,
            time=services.clock(),
        )

    return api
