"""Fleet state, health alerts, metrics and the MQTT consumer, on SQLite and PostgreSQL.

Announcements are real: signed by a device key with the protocol's own code. The consumer
test runs against the Mosquitto on 127.0.0.1:1883 (skipped when none answers), with a
shared-subscription group and device ids of its own; the MQTT version is negotiated there
(MQTT 5), with amqtt (MQTT 3.1.1 only) and with a stand-in broker that shows each CONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mqttlink import SESSION_EXPIRY_S, MqttProtocol
from protocol import topics
from protocol.certs import Certificate, KeyKind
from protocol.events import Event, EventKind
from protocol.keys import SoftwareSigner
from server import models
from server.db import Database
from server.errors import ConfigError
from server.fleet import FleetMonitor
from server.metrics import Metrics
from server.mqtt import EventConsumer, Outcome
from server.settings import Settings, load_settings
from tests.agent.test_announce import Connect, ConnectProbe
from tests.broker import Broker, embedded_broker

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/test"
BOOT = bytes(range(16))
NOW = 1_790_000_000_000_000


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session, dropped at the end."""
    if not _answers("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    name = f"unbroken_fleet_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/fleet.db"
    return str(request.getfixturevalue("pg_database"))


TABLES = ("alert", "event", "fleet_state", "device", "custody")


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.open()
    try:
        with database.active():
            conn = database.connection()
            for table in TABLES:  # the PostgreSQL database is shared by the session
                await conn.execute_script(f'DELETE FROM "{table}"')
            yield database
    finally:
        await database.close()


class Clock:
    """Server time under the test's control (µs)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


SILENT_US = 300_000_000


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def fleet(tmp_path: Path, metrics: Metrics, clock: Clock) -> FleetMonitor:
    settings = Settings(
        data=tmp_path / "data",
        battery_low_percent=20,
        storage_low_bytes=1 << 30,
        clock_offset_max_seconds=2,
        silent_after_seconds=SILENT_US / 1e6,
        upload_deadline_hours=24,
        timezone="UTC",
    )
    return FleetMonitor(settings, metrics, clock)


@pytest.fixture
def consumer(fleet: FleetMonitor, metrics: Metrics, clock: Clock) -> EventConsumer:
    return EventConsumer("mqtt://127.0.0.1:1", "g", fleet, metrics, clock)


async def enrol(device: str, clock: Clock) -> SoftwareSigner:
    """A device row as enrolment leaves it (the key certified by a throwaway root)."""
    signer = SoftwareSigner.generate()
    root = SoftwareSigner.generate()
    cert = Certificate.issue(root, KeyKind.DEVICE, device, signer.public_key, clock.now)
    await models.Device.create(
        id=device,
        public_key=signer.public_key,
        cert=cert,
        enrolled=clock.now,
        token_hash=uuid.uuid4().hex,
    )
    return signer


def telemetry(device: str, n: int, **body: int | bool) -> Event:
    return Event(device, BOOT, n, EventKind.TELEMETRY, NOW, body)


def topic_of(event: Event) -> str:
    channel = {
        EventKind.TELEMETRY: topics.Channel.TELEMETRY,
        EventKind.STATUS: topics.Channel.STATUS,
    }.get(event.kind, topics.Channel.EVENTS)
    return topics.topic(event.device, channel)


async def open_alerts(device: str) -> set[str]:
    rows = await models.Alert.filter(device=device, cleared__isnull=True)
    return {str(r.kind) for r in rows}


async def test_telemetry_sets_state_raises_and_clears_alerts(
    db: Database, consumer: EventConsumer, fleet: FleetMonitor, clock: Clock
) -> None:
    signer = await enrol("cam-1", clock)
    low = telemetry(
        "cam-1",
        0,
        battery_permille=120,
        charging=False,
        storage_free=10_000_000,
        storage_total=32_000_000_000,
        clock_offset_us=3_500_000,
        backlog_records=4,
        backlog_bytes=2,
        recording=True,
    )
    assert await consumer.handle(topic_of(low), low.sign(signer)) is Outcome.ACCEPTED
    state = await models.FleetState.get(device="cam-1")
    assert (state.battery_permille, state.storage_free, state.clock_offset_us) == (
        120,
        10_000_000,
        3_500_000,
    )
    assert state.online
    assert await open_alerts("cam-1") == {"low_battery", "low_storage", "clock_offset"}

    good = telemetry(
        "cam-1", 1, battery_permille=900, storage_free=20_000_000_000, clock_offset_us=1000
    )
    assert await consumer.handle(topic_of(good), good.sign(signer)) is Outcome.ACCEPTED
    assert await open_alerts("cam-1") == set()
    health = await fleet.device_health("cam-1")
    assert health is not None
    assert health == (await fleet.health()).devices[0]
    assert health.battery_percent == 90.0
    assert health.clock_offset_seconds == pytest.approx(0.001)


async def test_duplicates_forgeries_and_wrong_topics_are_dropped(
    db: Database, consumer: EventConsumer, clock: Clock
) -> None:
    signer = await enrol("cam-2", clock)
    other = await enrol("cam-3", clock)
    event = telemetry("cam-2", 7, battery_permille=500)
    payload = event.sign(signer)
    assert await consumer.handle(topic_of(event), payload) is Outcome.ACCEPTED
    # The same message again (QoS 1 redelivery, or a replay): dropped by (device, boot, n).
    assert await consumer.handle(topic_of(event), payload) is Outcome.DUPLICATE
    # Signed by another device's key: refused, and an alert says so.
    forged = telemetry("cam-2", 8, battery_permille=100).sign(other)
    assert await consumer.handle(topic_of(event), forged) is Outcome.BAD_SIGNATURE
    assert "event_rejected" in await open_alerts("cam-2")
    # cam-3 publishing its own message on cam-2's topic.
    mine = telemetry("cam-3", 1, battery_permille=100)
    assert await consumer.handle(topic_of(event), mine.sign(other)) is Outcome.WRONG_DEVICE
    # Unknown devices, garbage, and telemetry posing as an event.
    stranger = telemetry("cam-9", 1, battery_permille=1)
    assert (
        await consumer.handle(topic_of(stranger), stranger.sign(signer)) is Outcome.UNKNOWN_DEVICE
    )
    assert await consumer.handle(topic_of(event), b"\xa0") is Outcome.MALFORMED
    assert await consumer.handle("unbroken/v1/other", payload) is Outcome.MALFORMED
    misplaced = topics.topic("cam-2", topics.Channel.EVENTS)
    assert await consumer.handle(misplaced, payload) is Outcome.MALFORMED
    state = await models.FleetState.get(device="cam-2")
    assert state.battery_permille == 500
    assert await models.Event.filter(device="cam-2").count() == 1
    assert consumer.counts[Outcome.DUPLICATE] == 1


async def test_revoked_device_announcements_are_dropped_and_flagged(
    db: Database, consumer: EventConsumer, clock: Clock
) -> None:
    signer = await enrol("cam-4", clock)
    await models.Device.filter(id="cam-4").update(revoked=clock.now, revoked_reason="lost")
    event = telemetry("cam-4", 0, battery_permille=800)
    assert await consumer.handle(topic_of(event), event.sign(signer)) is Outcome.REVOKED
    assert "revoked_upload" in await open_alerts("cam-4")
    assert not await models.FleetState.filter(device="cam-4").exists()


async def test_events_raise_alerts(db: Database, consumer: EventConsumer, clock: Clock) -> None:
    signer = await enrol("cam-5", clock)
    events = [
        Event(
            "cam-5", BOOT, 1, EventKind.DELETION_REFUSED, NOW, {"interface": "api", "target": "x"}
        ),
        Event("cam-5", BOOT, 2, EventKind.MEDIA_FAILING, NOW, {}),
        Event("cam-5", BOOT, 3, EventKind.RECORDING_STARTED, NOW, {"officer": "o-1"}),
    ]
    for event in events:
        assert await consumer.handle(topic_of(event), event.sign(signer)) is Outcome.ACCEPTED
    assert {"deletion_refused", "media_failing"} <= await open_alerts("cam-5")
    state = await models.FleetState.get(device="cam-5")
    assert state.recording is True


async def test_silent_device(
    db: Database, consumer: EventConsumer, fleet: FleetMonitor, clock: Clock
) -> None:
    signer = await enrol("cam-6", clock)
    event = telemetry("cam-6", 0, battery_permille=800)
    await consumer.handle(topic_of(event), event.sign(signer))
    await fleet.check()
    assert "silent" not in await open_alerts("cam-6")
    clock.now += SILENT_US + 1
    await fleet.check()
    assert "silent" in await open_alerts("cam-6")
    later = telemetry("cam-6", 1, battery_permille=790)
    await consumer.handle(topic_of(later), later.sign(signer))
    assert "silent" not in await open_alerts("cam-6")


async def test_backlog_after_the_upload_deadline(
    db: Database, consumer: EventConsumer, fleet: FleetMonitor, clock: Clock
) -> None:
    signer = await enrol("cam-7", clock)
    clock.now = fleet.upload_deadline(clock.now) + 60_000_000  # a minute past today's deadline
    event = telemetry("cam-7", 0, backlog_records=3, backlog_bytes=1, battery_permille=800)
    await consumer.handle(topic_of(event), event.sign(signer))
    await fleet.check()
    assert await open_alerts("cam-7") == {"missing_upload"}
    alerts = await fleet.alerts("cam-7")
    assert "R-REC-5" in alerts.alerts[0].message


async def test_metrics_per_device_gauges_and_counters(
    db: Database, consumer: EventConsumer, fleet: FleetMonitor, metrics: Metrics, clock: Clock
) -> None:
    signers = {d: await enrol(d, clock) for d in ("cam-a", "cam-b")}
    for n, (device, signer) in enumerate(signers.items()):
        event = telemetry(
            device,
            n,
            battery_permille=550 + n,
            storage_free=5_000_000_000,
            clock_offset_us=-250_000,
            backlog_records=n,
        )
        await consumer.handle(topic_of(event), event.sign(signer))
    metrics.segment_verified("cam-a", 3)
    metrics.segment_rejected("cam-b")
    await fleet.refresh_metrics()
    text = metrics.render().decode()
    assert 'unbroken_device_battery_percent{device="cam-a"} 55.0' in text
    assert 'unbroken_device_storage_free_bytes{device="cam-b"} 5e+09' in text
    assert 'unbroken_device_clock_offset_seconds{device="cam-b"} -0.25' in text
    assert 'unbroken_device_backlog_records{device="cam-b"} 1.0' in text
    assert 'unbroken_device_last_seen_timestamp_seconds{device="cam-a"} 1.79e+09' in text
    assert 'unbroken_segments_verified_total{device="cam-a"} 3.0' in text
    assert 'unbroken_segments_rejected_total{device="cam-b"} 1.0' in text
    assert 'unbroken_events_received_total{device="cam-a"} 1.0' in text
    # A device gone from the fleet disappears from the gauges.
    metrics.set_devices([])
    assert 'unbroken_device_battery_percent{device="cam-a"}' not in metrics.render().decode()


@pytest.mark.network
@pytest.mark.parametrize(("protocol", "version"), [("auto", "5"), ("3.1.1", "3.1.1")])
async def test_consumer_receives_signed_announcements_through_the_broker(
    db: Database,
    fleet: FleetMonitor,
    metrics: Metrics,
    clock: Clock,
    protocol: MqttProtocol,
    version: str,
) -> None:
    """Through the Mosquitto on 127.0.0.1:1883, which speaks MQTT 5: "auto" uses it."""
    if not _answers("127.0.0.1", 1883):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    import aiomqtt

    device = f"cam-{uuid.uuid4().hex[:10]}"
    signer = await enrol(device, clock)
    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(
        "mqtt://127.0.0.1:1883", group, fleet, metrics, clock, client_id=group, protocol=protocol
    )
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(consumer.run(), name="mqtt-consumer")
        async with asyncio.timeout(10):
            await consumer.connected.wait()
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"{group}-pub") as publisher:
            for n in range(5):
                event = telemetry(device, n, battery_permille=100 * (n + 1))
                await publisher.publish(topic_of(event), event.sign(signer), qos=1)
            # A duplicate and a forgery on the same topic.
            await publisher.publish(topic_of(event), event.sign(signer), qos=1)
            forged = telemetry(device, 99, battery_permille=1).sign(SoftwareSigner.generate())
            await publisher.publish(topic_of(event), forged, qos=1)
        async with asyncio.timeout(10):
            while (
                consumer.counts[Outcome.BAD_SIGNATURE] < 1
                or consumer.counts[Outcome.ACCEPTED] + consumer.counts[Outcome.DUPLICATE] < 6
            ):
                await asyncio.sleep(0.05)
        runner.cancel()
    assert consumer.counts[Outcome.ACCEPTED] == 5
    assert consumer.counts[Outcome.DUPLICATE] == 1
    assert consumer.negotiated == version
    state = await models.FleetState.get(device=device)
    assert state.battery_permille == 500
    # End the persistent session this test left on the shared broker.
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=group, clean_session=True):
        pass


@pytest.fixture
async def amqtt_port() -> AsyncIterator[int]:
    """The embedded broker of ``unbroken demo`` (amqtt, MQTT 3.1.1 only)."""
    async with embedded_broker() as port:
        yield port


async def test_consumer_falls_back_to_311_on_amqtt_and_receives(
    db: Database, fleet: FleetMonitor, metrics: Metrics, clock: Clock, amqtt_port: int
) -> None:
    """amqtt refuses MQTT 5: "auto" falls back to 3.1.1 and announcements still arrive."""
    import aiomqtt

    signer = await enrol("cam-amqtt", clock)
    consumer = EventConsumer(
        f"mqtt://127.0.0.1:{amqtt_port}", "demo", fleet, metrics, clock, shared=False
    )
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(consumer.run(), name="mqtt-consumer")
        async with asyncio.timeout(10):
            await consumer.connected.wait()
        async with aiomqtt.Client("127.0.0.1", amqtt_port, identifier="cam-amqtt") as publisher:
            for n in range(3):
                event = telemetry("cam-amqtt", n, battery_permille=100 * (n + 1))
                await publisher.publish(topic_of(event), event.sign(signer), qos=1)
        async with asyncio.timeout(10):
            while consumer.counts[Outcome.ACCEPTED] < 3:
                await asyncio.sleep(0.05)
        runner.cancel()
    assert consumer.negotiated == "3.1.1"
    state = await models.FleetState.get(device="cam-amqtt")
    assert state.battery_permille == 300


@pytest.mark.parametrize(
    ("protocol", "refuse_v5", "expected"),
    [
        ("auto", False, [Connect(5, True, None), Connect(5, False, SESSION_EXPIRY_S)]),
        # refused once, then 3.1.1 for good: the reconnect does not ask again
        ("auto", True, [Connect(5, True, None), Connect(4, False, None), Connect(4, False, None)]),
        ("3.1.1", False, [Connect(4, False, None)]),
        ("5", False, [Connect(5, False, SESSION_EXPIRY_S)]),
    ],
)
async def test_consumer_connect_negotiates_the_version(
    consumer: EventConsumer, protocol: MqttProtocol, refuse_v5: bool, expected: list[Connect]
) -> None:
    """What goes on the wire: a bare MQTT 5 probe first in "auto", then the persistent
    session in the chosen version (clean start off and a session expiry in MQTT 5)."""
    async with ConnectProbe(refuse_v5=refuse_v5) as probe:
        negotiating = EventConsumer(
            probe.url,
            "g",
            consumer.sink,
            consumer.metrics,
            consumer.clock,
            client_id="replica-1",
            protocol=protocol,
        )
        runner = asyncio.create_task(negotiating.run(), name="mqtt-consumer")
        try:
            assert await probe.wait(len(expected)) == expected
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    assert negotiating.version_known


def test_mqtt_protocol_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().mqtt_protocol == "auto"
    assert load_settings(mqtt_protocol="3.1.1").mqtt_protocol == "3.1.1"
    monkeypatch.setenv("UNBROKEN_MQTT_PROTOCOL", "5")
    assert load_settings().mqtt_protocol == "5"
    with pytest.raises(ConfigError):
        load_settings(mqtt_protocol="3.1")


async def test_http_contact_counts_as_seen_at_most_once_a_second(
    db: Database, fleet: FleetMonitor, clock: Clock
) -> None:
    await enrol("cam-8", clock)
    clock.now += SILENT_US + 1
    await fleet.check()
    assert "silent" in await open_alerts("cam-8")
    await fleet.seen("cam-8", upload=True)
    state = await models.FleetState.get(device="cam-8")
    assert (state.last_seen, state.last_upload) == (clock.now, clock.now)
    assert "silent" not in await open_alerts("cam-8")
    first = clock.now
    clock.now += 500_000
    await fleet.seen("cam-8", upload=True)  # within the resolution: no write
    assert (await models.FleetState.get(device="cam-8")).last_seen == first
    clock.now += 600_000
    await fleet.seen("cam-8")
    state = await models.FleetState.get(device="cam-8")
    assert (state.last_seen, state.last_upload) == (clock.now, first)


@pytest.fixture
def restartable_broker() -> Iterator[Broker]:
    """A private Mosquitto whose persistence works when the tests run as root.

    Mosquitto started as root drops to its own user, which must reach and write the folder
    of its persistence file; pytest's tmp_path sits under a 0700 folder, so use /tmp.
    """
    if not Broker.available():
        pytest.skip("mosquitto not installed")
    work = Path(tempfile.mkdtemp(prefix="unbroken-broker-"))
    work.chmod(0o777)
    broker = Broker(work)
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(
            True,
            marks=pytest.mark.xfail(
                strict=True,
                reason="Mosquitto 2.0.11 does not restore shared subscriptions after a restart",
            ),
        ),
        False,
    ],
    ids=["shared", "plain"],
)
async def test_consumer_gets_what_was_sent_while_it_or_the_broker_was_down(
    db: Database,
    fleet: FleetMonitor,
    metrics: Metrics,
    clock: Clock,
    restartable_broker: Broker,
    shared: bool,
) -> None:
    """FAULTS 11, server side: a persistent session keeps what the consumer missed."""
    import aiomqtt

    broker = restartable_broker
    broker.start()
    device = "cam-restarts"
    signer = await enrol(device, clock)
    group = f"restart-{uuid.uuid4().hex[:8]}"

    def consumer() -> EventConsumer:
        return EventConsumer(
            broker.url, group, fleet, metrics, clock, client_id=group, shared=shared
        )

    async def publish(first: int, count: int) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{group}-pub") as pub:
            for n in range(first, first + count):
                event = telemetry(device, n, battery_permille=n)
                await pub.publish(topic_of(event), event.sign(signer), qos=1)

    async def accepted() -> int:
        return await models.Event.filter(device=device).count()

    async def wait_for(count: int, seconds: float = 10) -> None:
        async with asyncio.timeout(seconds):
            while await accepted() < count:
                await asyncio.sleep(0.05)

    try:
        async with asyncio.TaskGroup() as tasks:
            first = consumer()
            runner = tasks.create_task(first.run(), name="mqtt-consumer-1")
            async with asyncio.timeout(10):
                await first.connected.wait()
            await publish(0, 3)
            await wait_for(3)
            runner.cancel()  # the server goes away...
        await publish(3, 2)  # ...while the device keeps announcing
        await asyncio.to_thread(broker.stop)  # and the broker restarts meanwhile
        await asyncio.to_thread(broker.start)
        await publish(5, 2)  # published before the server is back
        async with asyncio.TaskGroup() as tasks:
            second = consumer()
            runner = tasks.create_task(second.run(), name="mqtt-consumer-2")
            async with asyncio.timeout(10):
                await second.connected.wait()
            await publish(0, 2)  # old messages again: duplicates, dropped
            try:
                try:
                    await wait_for(7)
                except TimeoutError:
                    got = await models.Event.filter(device=device).values_list("n", flat=True)
                    raise AssertionError(f"got {sorted(got)} counts {second.counts}") from None
                async with asyncio.timeout(10):
                    while second.counts[Outcome.DUPLICATE] < 2:
                        await asyncio.sleep(0.05)
            finally:
                runner.cancel()
    finally:
        broker.stop()
    assert await accepted() == 7
