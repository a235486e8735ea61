"""``unbroken sim record`` and ``unbroken sim fleet``: simulated devices, real everything else.

``sim record`` runs one simulated device faster than real time against an in-process
server on embedded defaults (SQLite, a local blob folder) and exports a bundle of the whole
recording through the server's own export code. ``sim fleet`` runs N devices against a
running server over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hardware.base import CameraConfig
from protocol.api import API_PREFIX
from protocol.verify import verify_path
from server.run import embedded
from server.schemas import ExportRequest
from server.settings import Settings
from simulator.clock import Timeline, run
from simulator.fleet import DeviceOutcome, settle
from simulator.operator import Operator, OperatorError
from simulator.runner import DeviceSpec, SimulatedDevice

sim = typer.Typer(
    help="Simulated devices: record a bundle, or run a fleet against a server.",
    no_args_is_help=True,
)
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(bar_width=None),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s simulated"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


async def _record(
    out: Path, seconds: float, segment: float, cuts: list[float], seed: int, work: Path
) -> tuple[str, DeviceOutcome]:
    timeline = Timeline(start_wall=time.time_ns() // 1000)
    settings = Settings(data=work / "server", checkpoint_interval=5.0)
    device_id = "sim-record-001"
    async with embedded(settings, clock=timeline.wall) as server:
        spec = DeviceSpec(
            device_id,
            work / "device",
            seed=seed,
            server_url=server.base_url,
            enrolment_token=await server.enrolment_token(device_id),
            segment_seconds=segment,
            sync_seconds=2.0,
        )
        device = SimulatedDevice(
            spec, timeline, transport=lambda: httpx.ASGITransport(app=server.app)
        )
        start = timeline.now()
        with _progress() as progress:
            task = progress.add_task("recording", total=seconds)
            await device.boot()
            for at in [*sorted(cuts), None]:
                until = seconds if at is None else at
                while (left := start + until - timeline.now()) > 0:
                    await timeline.sleep(min(left, 1.0))
                    progress.update(task, completed=timeline.now() - start)
                if at is not None:
                    await device.power_cut()
                    await timeline.sleep(2.0)  # the device is dark for two seconds
                    await device.boot()
            await device.stop()
        done = await settle(device)
        await server.export(ExportRequest(device=device_id, openings=True), out)
        return server.fingerprint, done


@sim.command("record")
def record(
    out: Annotated[Path, typer.Argument(help="Folder for the export bundle (new or empty).")],
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="Simulated seconds.")],
    segment_seconds: Annotated[float, typer.Option("--segment-seconds", min=0.5, max=10)] = 1.0,
    power_cut_at: Annotated[
        list[float] | None,
        typer.Option("--power-cut-at", help="Cut the power this many seconds in (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated faults.")] = 0,
    speed: Annotated[
        float, typer.Option("--speed", min=0.5, max=50, help="Simulated seconds per real second.")
    ] = 8.0,
) -> None:
    """Record a simulated device and export a verifiable bundle; last line: the trust pin."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cuts = power_cut_at or []
    bad = [t for t in cuts if not 0 < t < seconds]
    if bad:
        raise typer.BadParameter(f"power cuts must fall inside the recording: {bad}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        err.print(f"unbroken sim record: {out} exists and is not an empty folder")
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="unbroken-sim-") as tmp:
        # Scaled time, not as-fast-as-possible: the embedded database works in a thread.
        fingerprint, done = run(
            _record(out, seconds, segment_seconds, cuts, seed, Path(tmp)), speed=speed
        )
    report = verify_path(out, fingerprint)
    typer.echo(f"bundle: {out}")
    typer.echo(
        f"device: {done.device}, {report.segments} segments in {done.boots} boot(s), "
        f"{done.records} records; server receipts missing: "
        f"{done.unreceipted_records} records, {done.unreceipted_media} media"
    )
    typer.echo(
        f"verify: {report.verdict}, {report.covered / 1e6:.1f} s covered, gaps: "
        + (", ".join(f"{g.seconds:.1f} s {g.cause}" for g in report.gaps) or "none")
    )
    typer.echo(f"trust: {fingerprint}")


async def _fleet(
    server_url: str,
    mqtt: str | None,
    devices: int,
    seconds: float,
    admin_token: str,
    work: Path,
    prefix: str,
) -> list[DeviceOutcome]:
    timeline = Timeline(start_wall=time.time_ns() // 1000)
    fleet: list[SimulatedDevice] = []
    async with httpx.AsyncClient(
        base_url=server_url, timeout=30, headers={"authorization": f"Bearer {admin_token}"}
    ) as admin:
        for i in range(devices):
            name = f"{prefix}-{i:04d}"
            answer = await admin.post(f"{API_PREFIX}/admin/enrolment-tokens", json={"device": name})
            if answer.status_code != 200:
                raise typer.BadParameter(
                    f"the server refused an enrolment token: "
                    f"HTTP {answer.status_code} {answer.text[:200]}"
                )
            spec = DeviceSpec(
                name,
                work / name,
                seed=i,
                server_url=server_url,
                mqtt_url=mqtt,
                enrolment_token=answer.json()["token"],
                officer=f"officer-{i}",
                telemetry_seconds=10.0,
                sync_seconds=3.0,
                board={
                    "camera_mode": "replay",
                    "camera": CameraConfig(
                        width=320, height=180, fps=15, bitrate=300_000, keyframe_interval=15
                    ),
                },
            )
            fleet.append(SimulatedDevice(spec, timeline))
        # As at the start of a shift: enrolled, checked out to an officer (R-DEV-2), on duty.
        await asyncio.gather(*(device.enrol() for device in fleet))
        operator = Operator(server_url, admin_token, actor="unbroken sim fleet")
        await asyncio.gather(*(operator.custody(d, "check_out") for d in fleet))
        with _progress() as progress:
            task = progress.add_task(f"{devices} devices", total=seconds)
            await asyncio.gather(*(device.boot() for device in fleet))
            start = timeline.now()
            said = start
            while (left := start + seconds - timeline.now()) > 0:
                await timeline.sleep(min(left, 1.0))
                progress.update(task, completed=timeline.now() - start)
                if not err.is_terminal and timeline.now() - said >= 10:
                    said = timeline.now()
                    err.print(_fleet_line(fleet, said - start, seconds))
            await asyncio.gather(*(d.stop() for d in fleet))
        if not err.is_terminal:
            err.print(_fleet_line(fleet, seconds, seconds) + "; settling")
        outcomes = list(await asyncio.gather(*(settle(d) for d in fleet)))
        await asyncio.gather(*(operator.custody(d, "check_in") for d in fleet))
    return outcomes


def _fleet_line(fleet: list[SimulatedDevice], done: float, seconds: float) -> str:
    """A progress line for logs (a terminal gets the progress bar instead)."""
    agents = [d.agent for d in fleet if d.agent is not None]
    segments = sum(a.recorder.segments_written for a in agents)
    backlog = sum(a.syncer.state.backlog_media for a in agents if a.syncer is not None)
    return (
        f"{done:.0f}/{seconds:.0f} s simulated: {len(agents)} devices, "
        f"{segments} segments recorded, {backlog} awaiting upload"
    )


@sim.command("fleet")
def fleet(
    server: Annotated[str, typer.Option("--server", help="The server's URL.")],
    devices: Annotated[int, typer.Option("--devices", min=1, max=1000)],
    seconds: Annotated[float, typer.Option("--seconds", min=1)],
    mqtt: Annotated[
        str | None, typer.Option("--mqtt", help="Broker URL for announcements.")
    ] = None,
    speed: Annotated[float, typer.Option("--speed", min=0.1, max=100)] = 1.0,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="UNBROKEN_ADMIN_TOKEN",
            help="The server's admin token (default: read from --data).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The server's data folder, to read its admin token."),
    ] = None,
    work: Annotated[Path | None, typer.Option("--work", help="Keep device stores here.")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Device id prefix.")] = "sim",
) -> None:
    """Run N simulated devices against a server; exit 0 once every segment has a receipt."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if admin_token is None:
        # Read, never made: a token made here would not be the server's.
        token_file = (data or Path("unbroken-data")) / "keys" / "admin.token"
        try:
            admin_token = token_file.read_text().strip()
        except OSError:
            err.print(
                f"unbroken sim fleet: no admin token at {token_file}; "
                "pass --admin-token or the server's --data"
            )
            raise typer.Exit(2) from None
    with tempfile.TemporaryDirectory(prefix="unbroken-fleet-") as tmp:
        try:
            outcomes = run(
                _fleet(
                    server.rstrip("/"),
                    mqtt,
                    devices,
                    seconds,
                    admin_token,
                    work or Path(tmp),
                    prefix,
                ),
                speed=speed,
            )
        except (OperatorError, httpx.HTTPError) as exc:
            err.print(f"unbroken sim fleet: {exc}")
            raise typer.Exit(1) from exc
    settled = sum(o.settled for o in outcomes)
    for o in outcomes:
        typer.echo(json.dumps(o.__dict__ if hasattr(o, "__dict__") else _row(o)))
    typer.echo(
        f"{devices} devices, {sum(o.segments for o in outcomes)} segments, "
        f"{settled} of {devices} fully receipted"
    )
    raise typer.Exit(0 if settled == devices else 1)


def _row(o: DeviceOutcome) -> dict[str, object]:
    return {name: getattr(o, name) for name in o.__slots__}
