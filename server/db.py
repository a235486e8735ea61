"""The database: a tortoise context of our own, opened, migrated and closed by the app.

Each :class:`Database` owns one ``TortoiseContext`` (tortoise 1.x), so several servers
(tests, an in-process server beside a real one) can live in one process. Code reaches the
context through :meth:`Database.active`, which the app enters for every request and for
its background tasks.

SQLite is opened with ``synchronous=FULL`` in WAL mode, so a commit is on disk when it
returns. PostgreSQL goes through asyncpg (``postgres://user@host:port/db``).

Migrations use tortoise's own migration engine (``tortoise.migrations``, new in 1.0), not
aerich: aerich targets the 0.x releases, while the engine shipped with tortoise 1.x reads
migration files from ``server/migrations`` and records them in ``tortoise_migrations``.
The app applies pending migrations at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import (
    TortoiseContext,
    _current_context,  # see Database.active
)
from tortoise.exceptions import BaseORMException, IntegrityError
from tortoise.migrations.executor import MigrationExecutor
from tortoise.transactions import in_transaction

from server.errors import ConfigError

__all__ = [
    "DATABASE_ERRORS",
    "Database",
    "IntegrityError",  # re-exported: what a duplicate row raises
    "connection_config",
    "connection_name",
    "tortoise_config",
]

log = logging.getLogger(__name__)

#: What the database can raise at any query (the app answers them 503).
DATABASE_ERRORS: tuple[type[Exception], ...] = (BaseORMException, OSError)

APP = "models"
MODELS = "server.models"
MIGRATIONS = "server.migrations"
#: Tries at opening (and migrating) the database before giving up.
MIGRATE_ATTEMPTS = 3


def connection_config(url: str) -> dict[str, Any]:
    """The tortoise connection settings for a database URL."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite://")
        if not path or path == ":memory:":
            raise ConfigError("an in-memory SQLite database is not durable; give a file path")
        return {
            "engine": "tortoise.backends.sqlite",
            "credentials": {
                "file_path": path,
                "journal_mode": "WAL",
                "synchronous": "FULL",
                "foreign_keys": "ON",
                "busy_timeout": 10000,
            },
        }
    if scheme in ("postgres", "postgresql", "asyncpg"):
        try:
            config = expand_db_url(url.replace(f"{scheme}://", "asyncpg://", 1))
        except BaseORMException as exc:
            raise ConfigError(f"bad database URL: {exc}") from exc
        return config
    raise ConfigError(f"unsupported database URL scheme {scheme!r} (sqlite:// or postgres://)")


def connection_name(url: str) -> str:
    """The tortoise connection name: one per SQL dialect.

    tortoise 1.1 caches each model's SQL by (connection name, table), whatever the dialect,
    so a process that opens SQLite and then PostgreSQL under one name would send SQLite
    placeholders to PostgreSQL. A name per dialect keeps the caches apart.
    """
    return "sqlite" if urlsplit(url).scheme == "sqlite" else "postgres"


def tortoise_config(url: str) -> dict[str, Any]:
    """The whole tortoise configuration (also what ``tortoise makemigrations`` needs)."""
    name = connection_name(url)
    return {
        "connections": {name: connection_config(url)},
        "apps": {APP: {"models": [MODELS], "migrations": MIGRATIONS, "default_connection": name}},
        "use_tz": True,
        "timezone": "UTC",
    }


class Database:
    """One database connection set, with its own tortoise context."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._config = tortoise_config(url)
        self._ctx: TortoiseContext | None = None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgres`` (also the connection's name)."""
        return connection_name(self.url)

    async def open(self, *, migrate: bool = True) -> None:
        """Connect and apply pending migrations.

        Replicas started together on a fresh database race to migrate it: the loser's
        migration fails on what the winner just created. It waits and tries again, and
        finds the migrations applied.
        """
        for attempt in range(MIGRATE_ATTEMPTS):
            try:
                await self._open(migrate=migrate)
                return
            except ConfigError as exc:
                unreachable = isinstance(exc.__cause__, OSError)
                if not migrate or unreachable or attempt == MIGRATE_ATTEMPTS - 1:
                    raise
                log.warning("opening the database failed (%s); trying again", exc)
                await asyncio.sleep(1.0 + attempt)

    async def _open(self, *, migrate: bool) -> None:
        ctx = TortoiseContext()
        try:
            with ctx:
                await ctx.init(config=self._config)
                if migrate:
                    await self._migrate(ctx)
        except BaseORMException as exc:
            await ctx.close_connections()
            raise ConfigError(f"cannot open the database: {exc}") from exc
        except OSError as exc:
            await ctx.close_connections()
            raise ConfigError(f"cannot reach the database: {exc}") from exc
        self._ctx = ctx

    async def _migrate(self, ctx: TortoiseContext) -> None:
        executor = MigrationExecutor(ctx.db(), {APP: self._config["apps"][APP]})
        applied: list[str] = []

        def progress(event: str, app: str, name: str) -> None:
            if event == "apply_done":
                applied.append(f"{app}.{name}")

        await executor.migrate(progress=progress)
        if applied:
            log.info("database migrated: %s", ", ".join(applied))

    async def close(self) -> None:
        """Close the connections."""
        if self._ctx is not None:
            with self._ctx:
                await self._ctx.close_connections()
            self._ctx = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this database the one models use in the current task.

        ``TortoiseContext.__enter__`` keeps one reset token on the context object, so
        concurrent requests entering it would reset each other's; the token is kept here,
        per call, instead.
        """
        if self._ctx is None:
            raise ConfigError("the database is not open")
        token = _current_context.set(self._ctx)
        try:
            yield
        finally:
            _current_context.reset(token)

    def connection(self) -> BaseDBAsyncClient:
        """The default connection (for raw SQL)."""
        if self._ctx is None:
            raise ConfigError("the database is not open")
        return self._ctx.db()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[BaseDBAsyncClient]:
        """A transaction on the default connection; models inside it use it."""
        async with in_transaction(self.dialect) as conn:
            yield conn
