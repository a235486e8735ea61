"""Running the server: over HTTP (uvicorn), in-process (ASGI), and one-shot admin tasks.

What the command line calls:

* :func:`serve` — ``unbroken server``: uvicorn on ``host:port`` until SIGINT/SIGTERM, then a
  graceful shutdown (requests finish, background tasks are cancelled and awaited).
* :func:`embedded` — an in-process server for tests and ``unbroken sim record``: the app
  with its lifespan running, reached through an ``httpx`` ASGI transport, no socket.
* :func:`create_enrolment_token`, :func:`export_bundle`, :func:`get_admin_token` — admin
  tasks on the data directory, with no server running (or beside one: the database
  serialises them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from protocol.keys import Signer
from server.app import create_app
from server.blobs import BlobStore
from server.schemas import EnrolmentTokenIssued, ExportDone, ExportRequest
from server.services import Clock, Services, admin_token, open_services
from server.settings import Settings

log = logging.getLogger(__name__)

BASE_URL = "http://unbroken.internal"


async def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "info",
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    keep_alive: float = 5.0,
) -> None:
    """Serve over HTTP until SIGINT/SIGTERM (or ``stop`` is set); shut down gracefully.

    Graceful: no new connections, requests in flight finish (up to 30 s), then the
    lifespan cancels and awaits the background tasks and closes the database.
    """
    app = create_app(settings, clock=clock)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=int(keep_alive),
        proxy_headers=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    log.info("unbroken server on http://%s:%d, data in %s", host, port, settings.data)
    if stop is None:
        await server.serve()
        return

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(stop_when_asked(), name="serve-stop")
        await server.serve()
        watcher.cancel()


@dataclass
class EmbeddedServer:
    """A server running in this process, reached without a socket."""

    app: FastAPI
    services: Services
    base_url: str = BASE_URL

    def client(self, token: str | None = None, *, timeout: float = 60.0) -> httpx.AsyncClient:
        """An HTTP client of this server; ``token`` is a device API token or the admin token."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
        )

    def admin_client(self) -> httpx.AsyncClient:
        """A client holding the administrator token."""
        return self.client(self.services.admin_token)

    @property
    def fingerprint(self) -> str:
        """The fleet root fingerprint (``sha256:<hex>``) to pin when verifying."""
        return self.services.keys.fingerprint

    async def enrolment_token(self, device: str | None = None) -> str:
        """A one-time enrolment token."""
        issued = await self.services.registry.create_enrolment_token(device)
        return issued.token

    async def export(self, request: ExportRequest, out: Path) -> ExportDone:
        """Write an export bundle to ``out`` (a new or empty directory)."""
        return await self.services.exporter.export(request, out)

    async def create_enrolment_token(self, device: str | None = None) -> str:
        """The same as :meth:`enrolment_token`."""
        return await self.enrolment_token(device)

    async def export_bundle(self, device: str, out: Path, *, openings: bool = True) -> ExportDone:
        """Export the whole chain of ``device`` to ``out`` (with openings by default)."""
        return await self.export(ExportRequest(device=device, openings=openings), out)


@contextlib.asynccontextmanager
async def embedded(
    settings: Settings,
    *,
    clock: Clock | None = None,
    blobs: BlobStore | None = None,
    root: Signer | None = None,
) -> AsyncIterator[EmbeddedServer]:
    """Run the app in-process (lifespan and background tasks) for the context's duration."""
    app = create_app(settings, clock=clock, blobs=blobs, root=root)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        with services.db.active():
            yield EmbeddedServer(app, services)


async def create_enrolment_token(
    settings: Settings, device: str | None = None, ttl: float | None = None
) -> EnrolmentTokenIssued:
    """Make a one-time enrolment token in the server's database (no server needed)."""
    async with open_services(settings, background=False) as services:
        return await services.registry.create_enrolment_token(device, ttl)


async def export_bundle(settings: Settings, request: ExportRequest, out: Path) -> ExportDone:
    """Write an export bundle from the server's data directory (no server needed)."""
    async with open_services(settings, background=False) as services:
        return await services.exporter.export(request, out)


def get_admin_token(settings: Settings) -> str:
    """The administrator token (made on first use, kept in the key directory, mode 0600)."""
    return admin_token(settings)
