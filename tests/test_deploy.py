"""The deployment files in deploy/ are the ones that work: the settings load into the real
settings classes, and the Mosquitto configuration (TLS client certificates, per-device
ACLs) refuses anonymous clients and keeps each device to its own topics (FAULTS 12)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.config import AgentConfig
from protocol import topics
from server.settings import load_settings
from tests.broker import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_server_settings_load() -> None:
    settings = load_settings(DEPLOY / "server.toml")
    assert settings.blob_backend == "s3"
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgres://")
    assert settings.mqtt_shared


def test_agent_settings_load() -> None:
    values = tomllib.loads((DEPLOY / "agent.toml").read_text())["agent"]
    config = AgentConfig(**values)
    assert config.device_id == "cam-0001"
    assert not config.duty_at_boot


@pytest.fixture
def tls_broker() -> Iterator[tuple[int, Path]]:
    trustme = pytest.importorskip("trustme")
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto not installed")
    import subprocess
    import time

    # Mosquitto drops to its own user: the folder must be readable by it.
    work = Path(tempfile.mkdtemp(prefix="unbroken-mq-"))
    os.chmod(work, 0o755)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    broker = ca.issue_cert("127.0.0.1", "localhost", common_name="broker")
    broker.cert_chain_pems[0].write_to_path(str(work / "broker.pem"))
    broker.private_key_pem.write_to_path(str(work / "broker.key"))
    for name in ("cam-0001", "cam-0002", "unbroken-server-1"):
        cert = ca.issue_cert(name, common_name=name)
        cert.cert_chain_pems[0].write_to_path(str(work / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(work / f"{name}.key"))
    shutil.copy(DEPLOY / "mosquitto.acl", work / "unbroken.acl")
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/etc/mosquitto/ca/fleet-ca.pem", str(work / "ca.pem"))
        .replace("/etc/mosquitto/certs/broker.pem", str(work / "broker.pem"))
        .replace("/etc/mosquitto/certs/broker.key", str(work / "broker.key"))
        .replace("/etc/mosquitto/unbroken.acl", str(work / "unbroken.acl"))
        .replace("/var/lib/mosquitto/", f"{work}/")
        .replace("listener 8883", f"listener {port} 127.0.0.1")
    )
    (work / "mosquitto.conf").write_text(conf)
    for path in work.iterdir():
        os.chmod(path, 0o644)
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(work / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield port, work
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _tls(work: Path, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(work / "ca.pem"))
    if name is not None:
        context.load_cert_chain(str(work / f"{name}.pem"), str(work / f"{name}.key"))
    return context


def _client(port: int, work: Path, name: str | None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier=name or "anonymous", tls_context=_tls(work, name), timeout=5
    )


@pytest.mark.network
async def test_broker_refuses_clients_without_a_certificate(
    tls_broker: tuple[int, Path],
) -> None:
    port, work = tls_broker
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
        async with _client(port, work, None):
            pass


@pytest.mark.network
async def test_devices_are_kept_to_their_own_topics(tls_broker: tuple[int, Path]) -> None:
    port, work = tls_broker
    got: list[str] = []
    async with (
        _client(port, work, "unbroken-server-1") as server,
        _client(port, work, "cam-0001") as cam,
    ):
        await server.subscribe(topics.subscription(topics.Channel.EVENTS), qos=1)
        await cam.subscribe(topics.topic("cam-0002", topics.Channel.COMMANDS), qos=1)
        await cam.subscribe(topics.topic("cam-0001", topics.Channel.COMMANDS), qos=1)
        await cam.publish(topics.topic("cam-0002", topics.Channel.EVENTS), b"forged", qos=1)
        await cam.publish(topics.topic("cam-0001", topics.Channel.EVENTS), b"own", qos=1)
        await server.publish(topics.topic("cam-0002", topics.Channel.COMMANDS), b"x", qos=1)
        await server.publish(topics.topic("cam-0001", topics.Channel.COMMANDS), b"mine", qos=1)

        async def drain(client: aiomqtt.Client, who: str) -> None:
            async for message in client.messages:
                got.append(f"{who}:{message.topic}:{message.payload!r}")

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2), asyncio.TaskGroup() as group:
                group.create_task(drain(server, "server"))
                group.create_task(drain(cam, "cam"))
    assert "server:unbroken/v1/devices/cam-0001/events:b'own'" in got
    assert "cam:unbroken/v1/devices/cam-0001/commands:b'mine'" in got
    assert not [g for g in got if "cam-0002" in g], got


@pytest.mark.network
async def test_agent_and_server_connect_with_their_certificates(
    tls_broker: tuple[int, Path], tmp_path: Path
) -> None:
    """The agent's announcer and the server's consumer, configured as deploy/ says, reach the
    TLS broker with their client certificates and the ACLs let the event through."""
    from agent.announce import Announcer
    from agent.announce import tls_context as agent_tls
    from hardware.disk import DirectoryStorage
    from protocol.events import Event, EventKind
    from protocol.keys import SoftwareSigner
    from server.metrics import Metrics
    from server.mqtt import EventConsumer
    from server.mqtt import tls_context as server_tls
    from tests.agent.test_announce import HostClock

    port, work = tls_broker
    url = f"mqtts://127.0.0.1:{port}"
    settings = load_settings(
        DEPLOY / "server.toml",
        mqtt_url=url,
        mqtt_ca_file=work / "ca.pem",
        mqtt_cert_file=work / "unbroken-server-1.pem",
        mqtt_key_file=work / "unbroken-server-1.key",
    )
    values = tomllib.loads((DEPLOY / "agent.toml").read_text())["agent"]
    config = AgentConfig(
        **{
            **values,
            "store": tmp_path / "store",
            "mqtt_url": url,
            "mqtt_ca_file": work / "ca.pem",
            "mqtt_cert_file": work / "cam-0001.pem",
            "mqtt_key_file": work / "cam-0001.key",
        }
    )
    consumer = EventConsumer(
        url,
        settings.mqtt_group,
        None,  # type: ignore[arg-type]  # handle() is replaced below: no database here
        Metrics(),
        lambda: 0,
        client_id="unbroken-server-1",
        shared=settings.mqtt_shared,
        protocol=settings.mqtt_protocol,
        tls=server_tls(settings),
    )
    got: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def handle(topic: str, payload: bytes) -> object:
        got.append((topic, payload))
        arrived.set()
        return None

    consumer.handle = handle  # type: ignore[assignment]
    announcer = Announcer(
        config.device_id,
        os.urandom(16),
        SoftwareSigner.generate(),
        DirectoryStorage(tmp_path / "store"),
        HostClock(),
        config.mqtt_url,
        protocol=config.mqtt_protocol,
        tls=agent_tls(config.mqtt_ca_file, config.mqtt_cert_file, config.mqtt_key_file),
    )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(consumer.run()), group.create_task(announcer.run())]
        async with asyncio.timeout(30):
            await consumer.connected.wait()
            announcer.announce(EventKind.DELETION_REFUSED, {"target": "seq:1"})
            while not any(t.endswith("/events") for t, _ in got):
                await arrived.wait()
                arrived.clear()
        for task in tasks:
            task.cancel()
    assert consumer.negotiated == "5"  # Mosquitto speaks MQTT 5, through TLS too
    assert announcer.pending() == 0
    topic, payload = next((t, p) for t, p in got if t.endswith("/events"))
    assert topic == topics.topic("cam-0001", topics.Channel.EVENTS)
    event, _ = Event.parse(payload)
    assert event.kind is EventKind.DELETION_REFUSED
