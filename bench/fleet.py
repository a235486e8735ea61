"""``unbroken bench fleet``: simulated devices recording and syncing to an in-process server,
against the same devices recording alone, in the same run.

Each side runs ``devices`` :class:`simulator.runner.SimulatedDevice` (the real agent on the
simulated board, the camera replaying a clip encoded once per process, as ``unbroken sim
fleet`` does) for ``seconds`` simulated seconds on one virtual timeline, as fast as the
CPU goes (:func:`simulator.clock.run` without a speed):

* *with sync* (the figure): the devices enrol with an embedded server
  (:func:`server.run.embedded`: SQLite and a blob folder in a temporary directory, reached
  through its ASGI transport), sync every ``sync_seconds`` while they record, and after
  the stop are settled (:func:`simulator.fleet.settle`) until the server holds a receipt
  for every record and every media file; the real time counted runs from the boots to the
  last receipt;
* *alone* (the baseline): the same devices, same seeds and camera, with a test enrolment
  and no server: recording, sealing, signing and storing only.

Figure and baseline are simulated device-seconds per real second; the ratio (with sync
over alone) is the share of the fleet's recording speed left once the server, the uploads
and the receipts are paid for on the same two cores. The sides alternate over ``rounds``
rounds (who goes first alternates); each figure is the median over its rounds.

The embedded database works in a thread, which virtual time cannot see. While the devices
record, both sides run with the same ``io_grace`` (default 0: the loop never waits for a
thread and jumps to the next timer, so the devices go as fast as the CPU lets them and the
server, in virtual time, simply looks slower; what it has not taken by the stop is
uploaded while settling). Enrolment and settling run with :data:`SETTLE_GRACE`, so that a
device's clock does not race (and its battery drain) while it waits for the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import BenchError
from bench.report import Measurement, median
from hardware.base import CameraConfig
from server.run import embedded
from server.settings import Settings
from simulator.clock import Timeline, VirtualLoop, run
from simulator.fleet import DeviceOutcome, settle
from simulator.runner import DeviceSpec, SimulatedDevice

log = logging.getLogger(__name__)

#: The camera of ``unbroken sim fleet``.
CAMERA = CameraConfig(width=320, height=180, fps=15, bitrate=300_000, keyframe_interval=15)

#: Real seconds the loop waits for the server's database thread before jumping ahead, while
#: devices enrol and while they are settled (no recording then: nothing to race).
SETTLE_GRACE = 0.02

#: Called with (what, simulated seconds done, simulated seconds in all).
Stepped = Callable[[str, float, float], None]


def _spec(name: str, store: Path, seed: int, sync_seconds: float, **kw: Any) -> DeviceSpec:
    return DeviceSpec(
        name,
        store,
        seed=seed,
        officer=f"officer-{seed}",
        telemetry_seconds=10.0,
        sync_seconds=sync_seconds,
        board={"camera_mode": "replay", "camera": CAMERA},
        **kw,
    )


async def _drive(
    fleet: list[SimulatedDevice],
    timeline: Timeline,
    seconds: float,
    what: str,
    stepped: Stepped | None,
) -> None:
    await asyncio.gather(*(d.boot() for d in fleet))
    start = timeline.now()
    while (left := start + seconds - timeline.now()) > 0:
        await timeline.sleep(min(left, 1.0))
        if stepped is not None:
            stepped(what, timeline.now() - start, seconds)
    await asyncio.gather(*(d.stop() for d in fleet))


def _check(fleet: list[SimulatedDevice], outcomes: list[DeviceOutcome], synced: bool) -> None:
    failures = [f"{d.spec.device_id}: {f!r}" for d in fleet for f in d.failures]
    if failures:
        raise BenchError("simulated devices failed: " + "; ".join(failures[:5]))
    if synced:
        unsettled = [o.device for o in outcomes if not o.settled]
        if unsettled:
            raise BenchError(f"devices left with records or media unreceipted: {unsettled}")


async def _alone(
    work: Path, devices: int, seconds: float, sync: float, stepped: Stepped | None
) -> tuple[float, list[DeviceOutcome]]:
    timeline = Timeline(start_wall=time.time_ns() // 1000)
    fleet = [
        SimulatedDevice(_spec(f"bench-fleet-{i:03d}", work / f"d{i}", i, sync), timeline)
        for i in range(devices)
    ]
    began = time.perf_counter()
    await _drive(fleet, timeline, seconds, "alone", stepped)
    took = time.perf_counter() - began
    outcomes = [await settle(d) for d in fleet]
    _check(fleet, outcomes, synced=False)
    return took, outcomes


async def _synced(
    work: Path, devices: int, seconds: float, sync: float, stepped: Stepped | None
) -> tuple[float, list[DeviceOutcome]]:
    timeline = Timeline(start_wall=time.time_ns() // 1000)
    settings = Settings(data=work / "server", checkpoint_interval=5.0)
    async with embedded(settings, clock=timeline.wall) as srv:
        fleet = []
        for i in range(devices):
            name = f"bench-fleet-{i:03d}"
            spec = _spec(
                name,
                work / f"d{i}",
                i,
                sync,
                server_url=srv.base_url,
                enrolment_token=await srv.enrolment_token(name),
            )
            transport: Callable[[], httpx.AsyncBaseTransport] = lambda: httpx.ASGITransport(  # noqa: E731
                app=srv.app
            )
            fleet.append(SimulatedDevice(spec, timeline, transport=transport))
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        recording, loop.io_grace = loop.io_grace, SETTLE_GRACE
        await asyncio.gather(*(d.enrol() for d in fleet))
        began = time.perf_counter()
        loop.io_grace = recording
        await _drive(fleet, timeline, seconds, "with sync", stepped)
        loop.io_grace = SETTLE_GRACE
        outcomes = list(await asyncio.gather(*(settle(d) for d in fleet)))
        took = time.perf_counter() - began
    _check(fleet, outcomes, synced=True)
    return took, outcomes


def run_fleet_bench(
    work: Path,
    *,
    devices: int = 8,
    seconds: float = 60.0,
    rounds: int = 3,
    sync_seconds: float = 3.0,
    io_grace: float = 0.0,
    stepped: Stepped | None = None,
) -> dict[str, Any]:
    """Device-seconds per real second with sync against the same devices alone."""
    began = time.perf_counter()
    synced: list[tuple[float, list[DeviceOutcome]]] = []
    alone: list[tuple[float, list[DeviceOutcome]]] = []
    for r in range(rounds):
        for side in ("synced", "alone") if r % 2 == 0 else ("alone", "synced"):
            folder = work / f"round-{r}-{side}"
            folder.mkdir(parents=True)
            if side == "synced":
                synced.append(
                    run(
                        _synced(folder, devices, seconds, sync_seconds, stepped),
                        io_grace=io_grace,
                    )
                )
            else:
                alone.append(
                    run(_alone(folder, devices, seconds, sync_seconds, stepped), io_grace=io_grace)
                )
            shutil.rmtree(folder, ignore_errors=True)
    device_seconds = devices * seconds
    figure = median([device_seconds / t for t, _ in synced])
    base = median([device_seconds / t for t, _ in alone])
    last = synced[-1][1]
    measurement = Measurement(
        "fleet",
        "device-seconds/s",
        figure,
        base,
        details={
            "synced_rounds_s": [round(t, 2) for t, _ in synced],
            "alone_rounds_s": [round(t, 2) for t, _ in alone],
            "segments_synced": sum(o.segments for o in last),
            "segments_alone": sum(o.segments for o in alone[-1][1]),
            "records_synced": sum(o.records for o in last),
            "settled_devices": sum(o.settled for o in last),
        },
    )
    return {
        "bench": "fleet",
        "unit": measurement.unit,
        "figure": round(measurement.figure, 3),
        "baseline": round(measurement.baseline, 3),
        "ratio": round(measurement.ratio, 4),
        "parameters": {
            "devices": devices,
            "seconds": seconds,
            "rounds": rounds,
            "sync_seconds": sync_seconds,
            "io_grace_s": io_grace,
            "camera": f"{CAMERA.width}x{CAMERA.height} {CAMERA.fps} fps replay",
            "database": "sqlite",
        },
        "fleet": measurement.to_json(),
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
    }
