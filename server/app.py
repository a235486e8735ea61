"""The FastAPI app factory: ``create_app(settings)``, its collaborators passed in.

The app's lifespan opens the services (:func:`server.services.open_services`) and runs the
background tasks; nothing is made at import time. Every error reaches the client as a
:class:`protocol.api.Problem` with a stable code, and every response carries the server
time in ``X-Unbroken-Time``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from protocol.api import Problem
from protocol.keys import Signer
from server.blobs import BlobStore
from server.db import DATABASE_ERRORS
from server.errors import ExportError, RequestError, ServerError
from server.middleware import BodyLimit, DatabaseScope, ServerTimeHeader
from server.routers import (
    admin,
    bundle,
    chain,
    console,
    coverage,
    enrol,
    fleet,
    health,
    log,
    metrics,
)
from server.services import Clock, Services, open_services, wall_clock
from server.settings import Settings

logger = logging.getLogger(__name__)


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(Problem(code=code, message=message[:2000]).model_dump(), status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    blobs: BlobStore | None = None,
    root: Signer | None = None,
) -> FastAPI:
    """The sync server as an ASGI app.

    ``clock`` (µs since the epoch) replaces the wall clock, ``blobs`` the blob store the
    settings name, ``root`` the fleet root signer (when it is not in the key directory).
    """
    now = clock or wall_clock

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, clock=now, blobs=blobs, root=root) as services:
            app.state.services = services
            try:
                yield
            finally:
                app.state.services = None

    app = FastAPI(
        title="unbroken sync server",
        version="1",
        summary="Receives signed evidence from body-worn cameras and proves that it is whole.",
        lifespan=lifespan,
    )
    app.state.services = None

    def current() -> Services | None:
        services: Services | None = app.state.services
        return services

    # Added last runs first: the time header wraps everything, even a 413.
    app.add_middleware(DatabaseScope, services=current)
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, media_limit=settings.max_media_bytes
    )
    app.add_middleware(ServerTimeHeader, clock=now)

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError) -> JSONResponse:
        return _problem(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(ExportError)
    async def export_failed(_: Request, exc: ExportError) -> JSONResponse:
        return _problem(409, "export_failed", str(exc))

    @app.exception_handler(ServerError)
    async def server_failed(_: Request, exc: ServerError) -> JSONResponse:
        logger.error("request failed: %s", exc)
        return _problem(503, "unavailable", str(exc))

    for error in DATABASE_ERRORS:

        @app.exception_handler(error)
        async def database_failed(_: Request, exc: Exception) -> JSONResponse:
            logger.error("database failure: %r", exc)
            return _problem(503, "unavailable", "the database is not answering; retry later")

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected failure: %r", exc)
        return _problem(500, "internal", "internal error; it has been logged")

    for module in (health, enrol, chain, log, admin, bundle, fleet, coverage, metrics, console):
        app.include_router(module.router())
    return app
