"""``unbroken demo``: the server on embedded defaults, an embedded broker, and a simulated
fleet playing the scenarios from the rules, all in one process.

Everything runs on one scaled timeline (``--speed`` simulated seconds per real second), the
server included, so that device clocks and server receipts agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from amqtt.broker import Broker

from protocol.api import API_PREFIX
from server.run import get_admin_token, serve
from server.settings import Settings
from simulator.clock import Timeline, run
from simulator.fleet import settle
from simulator.operator import Operator
from simulator.play import play, record_kinds
from simulator.runner import DeviceSpec, SimulatedDevice
from simulator.scenario import builtin

log = logging.getLogger("unbroken.demo")
ORDER = [
    "inspection",
    "obstruction",
    "storage_full",
    "clock_drift",
    "network_outage",
    "battery_shift",
    "lost_device",
]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_healthy(url: str) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not come up")


def _verified(metrics: str, device: str) -> int:
    pattern = rf'^unbroken_segments_verified_total{{device="{re.escape(device)}"}} (\S+)$'
    match = re.search(pattern, metrics, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


async def _demo(
    devices: int, duration: float | None, port: int, data: Path, summary: Path | None, speed: float
) -> dict[str, Any]:
    timeline = Timeline(start_wall=time.time_ns() // 1000)
    broker_port = free_port()
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{broker_port}"}}})
    await broker.start()
    mqtt = f"mqtt://127.0.0.1:{broker_port}"
    settings = Settings(
        data=data / "server",
        mqtt_url=mqtt,
        mqtt_group="demo",
        mqtt_shared=False,
        mqtt_protocol="3.1.1",  # amqtt speaks MQTT 3.1.1 only: no version probe
        checkpoint_interval=30.0,
    )
    admin_token = get_admin_token(settings)
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scenarios = builtin()
    result: dict[str, Any] = {}
    async with asyncio.TaskGroup() as group:
        group.create_task(
            serve(settings, "127.0.0.1", port, log_level="warning", stop=stop, clock=timeline.wall),
            name="server",
        )
        await _wait_healthy(url)
        typer.echo(f"console: {url}/console")
        typer.echo(f"login:   admin token {admin_token}")
        typer.echo(f"broker:  {mqtt} (embedded amqtt); data in {data}")
        names, plays = [], []
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers={"authorization": f"Bearer {admin_token}"}
        ) as admin:
            specs = []
            for i in range(devices):  # all tokens first, then the devices start
                scenario = scenarios[ORDER[i % len(ORDER)]]
                name = f"demo-{i + 1:02d}-{scenario.name.replace('_', '-')}"
                answer = await admin.post(
                    f"{API_PREFIX}/admin/enrolment-tokens", json={"device": name}
                )
                answer.raise_for_status()
                specs.append(
                    (
                        scenario,
                        DeviceSpec(
                            name,
                            data / "devices" / name,
                            seed=i,
                            officer=f"officer-{i + 1}",
                            server_url=url,
                            mqtt_url=mqtt,
                            mqtt_protocol="3.1.1",
                            enrolment_token=answer.json()["token"],
                            telemetry_seconds=10.0,
                            sync_seconds=3.0,
                            # One clip encoded once and replayed per device (ARCHITECTURE
                            # §6): five live encoders would starve the server on this loop.
                            board={"camera_mode": "replay"},
                        ),
                    )
                )
                names.append(name)
            fleet = [SimulatedDevice(spec, timeline) for _, spec in specs]
            # The scenarios' server steps (revoke a lost device...) go through the admin API;
            # as at a shift's start, each device is enrolled and checked out to its officer.
            operator = Operator(url, admin_token, actor="unbroken demo")
            await asyncio.gather(*(device.enrol() for device in fleet))
            await asyncio.gather(*(operator.custody(device, "check_out") for device in fleet))
            for (scenario, spec), device in zip(specs, fleet, strict=True):
                plays.append(
                    group.create_task(
                        play(scenario, spec.store, device=device, server=operator),
                        name=f"play:{spec.device_id}",
                    )
                )
            typer.echo(f"fleet:   {devices} simulated devices at {speed:g}x: " + ", ".join(names))
            ended = asyncio.ensure_future(stop.wait())
            waits: set[asyncio.Future[Any]] = {ended, asyncio.ensure_future(asyncio.wait(plays))}
            if duration is not None:
                waits.add(asyncio.ensure_future(timeline.sleep(duration * speed)))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in plays:
                task.cancel()
            finished = await asyncio.gather(*plays, return_exceptions=True)
            typer.echo("stopping: devices closed their sessions; uploading what is left")
            await asyncio.gather(*(settle(d) for d in fleet))
            result = await _summary(admin, names, finished, data)
        stop.set()
    await broker.shutdown()
    return result


async def _summary(
    admin: httpx.AsyncClient, names: list[str], finished: list[Any], data: Path
) -> dict[str, Any]:
    metrics = (await admin.get("/metrics")).text
    rows = []
    for name, played in zip(names, finished, strict=True):
        coverage = await admin.get(f"{API_PREFIX}/coverage/devices/{name}")
        gaps = coverage.json().get("gaps", []) if coverage.status_code == 200 else []
        scenario = None
        if played is not None and not isinstance(played, BaseException):
            scenario = {
                "name": played.scenario,
                "passed": played.passed,
                "problems": played.problems,
            }
        fleet = await admin.get(f"{API_PREFIX}/fleet")
        state = {d["device"]: d for d in fleet.json()["devices"]}.get(name, {})
        store = data / "devices" / name
        # Segment records in the device's journals (its media folder also holds photos).
        journal = store / "journal"
        recorded = record_kinds(store).get("segment", 0) if journal.exists() else 0
        rows.append(
            {
                "id": name,
                "segments_recorded": max(recorded, _verified(metrics, name)),
                "segments_verified": _verified(metrics, name),
                "battery_pct": state.get("battery_percent"),
                "storage_free_bytes": state.get("storage_free"),
                "clock_offset_ms": (
                    None
                    if state.get("clock_offset_seconds") is None
                    else round(state["clock_offset_seconds"] * 1000, 3)
                ),
                "gaps": gaps,
                "scenario": scenario,
            }
        )
    return {"devices": rows}


def demo(
    devices: Annotated[int, typer.Option("--devices", min=1, max=50)] = 5,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=1, help="Stop cleanly after this many real seconds."),
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    data: Annotated[Path, typer.Option("--data", help="Demo data folder.")] = Path("unbroken-demo"),
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Write a JSON summary here.")
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", min=1, max=200, help="Simulated seconds per real second.")
    ] = 10.0,
) -> None:
    """Server, embedded broker and a simulated fleet playing the scenarios; console URL printed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            typer.echo(f"unbroken demo: port {port} is in use ({exc.strerror})", err=True)
            raise typer.Exit(2) from None
    data.mkdir(parents=True, exist_ok=True)
    result = run(_demo(devices, duration, port, data, summary, speed), speed=speed)
    if summary is not None:
        summary.write_text(json.dumps(result, indent=2))
    for row in result.get("devices", []):
        typer.echo(
            f"{row['id']}: {row['segments_verified']}/{row['segments_recorded']} segments "
            f"verified, battery {row['battery_pct']}, gaps {len(row['gaps'])}"
        )
