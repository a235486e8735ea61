"""The server's collaborators, built from the settings, and the long-lived tasks they run.

:func:`open_services` opens the database (migrating it), loads or makes the keys, opens
the blob store and builds everything the routes and the command line use. With
``background=True`` it also runs the long-lived coroutines as named tasks in one
TaskGroup: the log writer, the periodic checkpoint, the crash reconciliation of blobs,
the coverage follower, the fleet watch and the MQTT consumer. Each runs under a
supervisor that logs a failure and restarts it after a capped, jittered pause; leaving the
context cancels them all and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from protocol.keys import Signer
from server import models
from server.blobs import BlobStore, open_blob_store
from server.coverage import Coverage, CoverageRules
from server.db import Database, IntegrityError
from server.errors import ConfigError
from server.export import Exporter
from server.fleet import FleetMonitor
from server.ingest import LogWriter, RecordIngest
from server.intake import EventIntake
from server.keys import ADMIN_TOKEN, ServerKeys, load_or_create, read_public, write_secret
from server.metrics import Metrics
from server.registry import Registry
from server.settings import Settings
from server.translog import NodeReader
from server.uploads import MediaUploads

if TYPE_CHECKING:
    from server.mqtt import EventConsumer

log = logging.getLogger(__name__)

Clock = Callable[[], int]
#: Devices whose coverage waits to be brought up to date. When full, the device is already
#: pending or will be caught up by the next pass over all devices: nothing is lost.
COVERAGE_QUEUE = 1024
RESTART_MAX = 60.0


def wall_clock() -> int:
    """Server time: µs since the Unix epoch."""
    return time.time_ns() // 1000


@dataclass
class Services:
    """Everything the routes use; one per app."""

    settings: Settings
    clock: Clock
    db: Database
    keys: ServerKeys
    blobs: BlobStore
    nodes: NodeReader
    writer: LogWriter
    ingest: RecordIngest
    uploads: MediaUploads
    registry: Registry
    exporter: Exporter
    coverage: Coverage
    metrics: Metrics
    monitor: FleetMonitor
    admin_token: str
    #: Checks and applies announcements sent over HTTP (the MQTT consumer has its own).
    intake: EventIntake
    coverage_queue: asyncio.Queue[str] = field(
        default_factory=lambda: asyncio.Queue(maxsize=COVERAGE_QUEUE)
    )
    #: The MQTT consumer, when the settings name a broker.
    consumer: EventConsumer | None = None
    #: Set once the start-up reconciliation of blobs has finished.
    reconciled: asyncio.Event = field(default_factory=asyncio.Event)

    def coverage_due(self, device: str) -> None:
        """Ask the coverage follower to read ``device``'s new records."""
        with contextlib.suppress(asyncio.QueueFull):
            self.coverage_queue.put_nowait(device)

    async def follow_coverage(self) -> None:
        """Forever: bring coverage up to date for devices with new records."""
        for name in await models.Device.all().values_list("id", flat=True):
            await self.coverage.catch_up(str(name))
        while True:
            device = await self.coverage_queue.get()
            await self.coverage.catch_up(device)

    async def checkpoints(self) -> None:
        """Forever: sign a checkpoint each interval if the log grew."""
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            await self.writer.checkpoint()

    async def reconcile(self) -> None:
        """Once, at start: finish the media commits a crash interrupted."""
        completed = await self.uploads.reconcile()
        if completed:
            log.warning("completed %d media commit(s) a crash had interrupted", completed)
        self.reconciled.set()


def admin_token(settings: Settings) -> str:
    """The administrator token: from the settings, or made once into the key directory."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.key_dir / ADMIN_TOKEN
    if not path.exists():
        import secrets  # noqa: PLC0415 - only on first start

        write_secret(path, secrets.token_urlsafe(32).encode())
    try:
        return read_public(path).decode().strip()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


async def _ensure_log(db: Database) -> None:
    if not await models.LogHead.filter(id=1).exists():
        with contextlib.suppress(IntegrityError):  # another replica made it meanwhile
            await models.LogHead.create(id=1, size=0)


async def _supervise(name: str, run: Callable[[], Awaitable[None]], once: bool = False) -> None:
    """Run ``run``; on failure log and restart after a capped, jittered pause."""
    delay = 1.0
    while True:
        try:
            await run()
            if once:
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task must not take the server down
            log.exception("background task %s failed; restarting in %.0f s", name, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
            delay = min(delay * 2, RESTART_MAX)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    blobs: BlobStore | None = None,
    root: Signer | None = None,
    background: bool = True,
) -> AsyncIterator[Services]:
    """Open everything; with ``background``, run the long-lived tasks until the context ends.

    ``blobs`` replaces the blob store the settings name; ``root`` supplies the fleet root
    signer when it is not kept in the key directory (an HSM, an offline host's session).
    The database stays active (for tortoise models) in the calling task inside the context.
    """
    clock = clock or wall_clock
    settings.data.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    await db.open()
    store = blobs or open_blob_store(settings)
    try:
        with db.active():
            await _ensure_log(db)
            services = _build(settings, clock, db, store, root)
            if not background:
                yield services
                return
            stop = asyncio.Event()
            # The TaskGroup lives in a task of its own so that an error in the caller's
            # body reaches the caller as itself, not wrapped in an ExceptionGroup.
            runner = asyncio.create_task(_background(services, stop), name="server-background")
            try:
                await _started(services, runner)
                yield services
            finally:
                stop.set()
                await runner
    finally:
        await store.close()
        await db.close()


async def _background(services: Services, stop: asyncio.Event) -> None:
    """Run the long-lived tasks until ``stop`` is set; then cancel and await them."""
    async with asyncio.TaskGroup() as group:
        jobs: list[tuple[str, Callable[[], Awaitable[None]], bool]] = [
            ("log-writer", services.writer.run, False),
            ("checkpoints", services.checkpoints, False),
            ("reconcile", services.reconcile, True),
            ("coverage", services.follow_coverage, False),
            ("fleet-watch", services.monitor.run, False),
        ]
        if services.consumer is not None:
            jobs.append(("mqtt", services.consumer.run, False))
        tasks = [
            group.create_task(_supervise(name, job, once), name=name) for name, job, once in jobs
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()


async def _started(services: Services, runner: asyncio.Task[None]) -> None:
    """Wait (briefly) until the log writer takes batches."""
    for _ in range(400):
        if services.writer.running or runner.done():
            break
        await asyncio.sleep(0.005)
    if runner.done():
        runner.result()  # raises what stopped it


def _build(
    settings: Settings, clock: Clock, db: Database, blobs: BlobStore, root: Signer | None
) -> Services:
    keys = load_or_create(settings.key_dir, settings.fleet_name, settings.server_name, clock())
    if root is not None:
        if root.public_key != keys.root_key.key:
            raise ConfigError("the root signer given is not the fleet root of this server")
        keys = ServerKeys(
            root,
            keys.root_cose,
            keys.server,
            keys.server_cert,
            keys.encryption,
            keys.encryption_cert,
        )
    nodes = NodeReader()
    writer = LogWriter(db, nodes, keys.server, settings.log_name, clock, settings.log_batch_window)
    metrics = Metrics()
    monitor = FleetMonitor(settings, metrics, clock)
    rules = CoverageRules(
        clock_offset_max=int(settings.clock_offset_max_seconds * 1_000_000),
        upload_deadline=int(settings.upload_deadline_hours * 3600 * 1_000_000),
        timezone=ZoneInfo(settings.timezone),
    )
    services = Services(
        settings=settings,
        clock=clock,
        db=db,
        keys=keys,
        blobs=blobs,
        nodes=nodes,
        writer=writer,
        ingest=RecordIngest(writer, keys.root_key, clock),
        uploads=MediaUploads(
            settings.upload_dir, blobs, keys.server, clock, settings.max_media_bytes
        ),
        registry=Registry(keys, writer, settings.log_name, clock, settings.enrolment_token_ttl),
        exporter=Exporter(
            keys, writer, nodes, blobs, settings.log_name, settings.server_name, clock
        ),
        coverage=Coverage(db, clock, rules),
        metrics=metrics,
        monitor=monitor,
        admin_token=admin_token(settings),
        intake=EventIntake(monitor, metrics, clock),
    )
    if settings.mqtt_url:
        from server.mqtt import EventConsumer, tls_context  # noqa: PLC0415 - aiomqtt when used

        services.consumer = EventConsumer(
            settings.mqtt_url,
            settings.mqtt_group,
            monitor,
            metrics,
            clock,
            # Unique per replica (two replicas on one host must not take over each other's
            # session) and stable across restarts (the broker keeps the persistent session).
            client_id=f"{settings.mqtt_group}-{settings.server_name}-{socket.gethostname()}"[:64],
            shared=settings.mqtt_shared,
            protocol=settings.mqtt_protocol,
            tls=tls_context(settings),
        )
    services.ingest.on_accepted = services.coverage_due
    services.ingest.on_segments = _count_segments(metrics)
    return services


def _count_segments(metrics: Metrics) -> Callable[[str, int, int], None]:
    def count(device: str, verified: int, rejected: int) -> None:
        if verified:
            metrics.segment_verified(device, verified)
        if rejected:
            metrics.segment_rejected(device, rejected)

    return count
