"""Fixtures of the server tests: every test that touches the database runs on SQLite and on
PostgreSQL (a uniquely named database on 127.0.0.1:5432, made for the session and dropped at
its end; tables emptied before each test). The server runs in-process (``server.run.embedded``)
and is reached through ``httpx`` over its ASGI transport.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from server.run import EmbeddedServer, embedded
from server.settings import Settings
from tests.server.devicekit import SimDevice

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN = f"postgres://postgres@{PG_HOST}:{PG_PORT}/test"
ADMIN_TOKEN = "test-admin-token-0123456789"
T = TypeVar("T")


def answers(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a loop of its own (fixtures may run inside a loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg(sql: str, url: str = PG_ADMIN) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_session_db() -> Iterator[str]:
    """A PostgreSQL database for this test session, dropped at its end."""
    if not answers(PG_HOST, PG_PORT):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    name = f"unbroken_server_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    run_async(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_async(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty(url: str) -> None:
    """Empty every table of the server schema (the migrations' record stays)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'tortoise_migrations'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of one test: a fresh SQLite file, or the emptied session PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/unbroken.db"
    url = str(request.getfixturevalue("pg_session_db"))
    run_async(_empty(url))
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Embedded defaults in a temporary data directory."""
    return Settings(
        data=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        log_batch_window=0.005,
        checkpoint_interval=3600,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[EmbeddedServer]:
    """The server, running in-process."""
    async with embedded(settings) as srv:
        yield srv


@pytest.fixture
async def anon(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials."""
    async with server.client() as client:
        yield client


@pytest.fixture
async def admin(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the admin token."""
    async with server.admin_client() as client:
        yield client


Enrol = Callable[[str], Awaitable[tuple[SimDevice, httpx.AsyncClient]]]


@pytest.fixture
async def enrolled(server: EmbeddedServer, anon: httpx.AsyncClient) -> AsyncIterator[Enrol]:
    """Enrol simulated devices; each comes with a client holding its API token."""
    clients: list[httpx.AsyncClient] = []

    async def make(name: str) -> tuple[SimDevice, httpx.AsyncClient]:
        device = SimDevice(name)
        await device.enrol(anon, await server.enrolment_token(name))
        client = device.client(anon)
        clients.append(client)
        return device, client

    yield make
    for client in clients:
        await client.aclose()
