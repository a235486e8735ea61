"""``unbroken server`` and ``unbroken enrol-token``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from server.errors import ConfigError, ServerError
from server.run import create_enrolment_token, get_admin_token, serve
from server.settings import Settings, load_settings

Data = Annotated[Path | None, typer.Option("--data", help="Data folder (database, blobs, keys).")]
Config = Annotated[Path | None, typer.Option("--config", help="TOML settings ([server] table).")]


def _settings(config: Path | None, data: Path | None, **more: object) -> Settings:
    try:
        settings = load_settings(config, data=data, **more)
        if settings.mqtt_url and settings.mqtt_url.startswith("mqtts:"):
            from server.mqtt import tls_context

            tls_context(settings)  # unreadable certificate files fail here, not at start-up
    except (ValidationError, OSError, ValueError, ConfigError) as exc:
        typer.echo(f"unbroken server: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def server(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    data: Data = None,
    config: Config = None,
    mqtt: Annotated[
        str | None, typer.Option("--mqtt", help="Broker to consume announcements from.")
    ] = None,
) -> None:
    """Run the sync server (settings: env UNBROKEN_* or a TOML file; SQLite by default)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(config, data, mqtt_url=mqtt)
    try:
        # The database first (and its migrations): an unreachable one is one line, not a
        # traceback from inside the web server's start-up.
        asyncio.run(_open_database(settings))
        get_admin_token(settings)
    except ServerError as exc:
        typer.echo(f"unbroken server: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"admin token in {settings.data}/keys/admin.token; console at http://{host}:{port}/console"
    )
    asyncio.run(serve(settings, host, port))


async def _open_database(settings: Settings) -> None:
    from server.services import open_services

    async with open_services(settings, background=False):
        pass


def enrol_token(
    device: Annotated[
        str | None, typer.Option("--device", help="Bind the token to this id.")
    ] = None,
    data: Data = None,
    config: Config = None,
) -> None:
    """Make a one-time enrolment token for a device (printed once, stored as a hash)."""
    settings = _settings(config, data)
    try:
        issued = asyncio.run(create_enrolment_token(settings, device))
    except ServerError as exc:
        typer.echo(f"unbroken enrol-token: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(issued.token)
