"""One simulated hour in a process of its own, for ``unbroken bench agent``'s memory figure.

    python -m bench.memory_child MODE --seconds S --work DIR [--packets FILE]

``MODE`` is what runs, in virtual time (as fast as the CPU allows):

* ``agent``: the real agent (:class:`agent.runtime.Agent`) on the simulator's buttons,
  LEDs, battery, clock, medium and network, with a camera that replays access units encoded
  beforehand by the parent (``--packets``), as a Pi's hardware encoder hands them over: the
  process holds the agent and no video encoder;
* ``device``: :class:`simulator.runner.SimulatedDevice`, the agent on the whole simulated
  board, whose camera renders and encodes its clip in this process (libx264, numpy);
* ``hardware``: the same simulated board with nothing consuming the camera: what the
  simulator costs without an agent.

No server or broker: the store grows on disk, records and media stay unsynced (the agent
keeps no per-segment state in memory for them). Output is JSON lines on stdout: a sample
``{"t", "rss_mb", "phase"}`` after imports, after boot and every ``--sample`` simulated
seconds, then ``{"done": true, "peak_rss_mb", ...}``. Only the standard library and the
packages under test are imported, so that the figure is theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
from pathlib import Path
from typing import Any

import cbor2

from hardware.base import Board, Camera, CameraConfig, MediaPacket, PacketKind, PacketSink
from simulator.clock import US, SimClock, Timeline, run

DEVICE = "bench-memory-001"
#: The lightest JPEG a decoder accepts is more than the agent needs to seal a photo.
STILL = b"\xff\xd8\xff\xd9"


def rss_mb() -> float:
    """Resident memory now (Linux /proc), or the peak where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process: VmHWM from /proc (Linux), else ``ru_maxrss``.

    ``ru_maxrss`` survives exec on Linux: a child started by a big parent would report the
    parent's size. VmHWM belongs to the program now running.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except (OSError, IndexError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def emit(message: dict[str, Any]) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def sample(t: float, phase: str) -> None:
    """Tell the parent the resident memory at simulated second ``t``."""
    emit({"t": round(t, 1), "rss_mb": round(rss_mb(), 2), "phase": phase})


Frame = tuple[int, list[tuple[PacketKind, bytes, bool, int, int]]]
"""A video access unit's offset (µs) in the loop, and its packets with the audio after it:
(kind, data, keyframe, offset µs, duration µs)."""


def load_packets(path: Path) -> tuple[int, list[Frame]]:
    """The loop written by :func:`bench.agent_memory.write_packets`: its length and frames."""
    loop_us, items = cbor2.loads(path.read_bytes())
    frames: list[Frame] = []
    for kind, data, keyframe, offset, duration in items:
        packet = (PacketKind(kind), data, keyframe, offset, duration)
        if packet[0] is PacketKind.VIDEO or not frames:
            frames.append((offset, [packet]))
        else:
            frames[-1][1].append(packet)
    return loop_us, frames


class PacketCamera(Camera):
    """Replays encoded packets in a loop on the device's clock, re-timed, one video frame
    (with the audio captured alongside it) at a time."""

    def __init__(self, clock: SimClock, config: CameraConfig, loop_us: int, frames: list[Frame]):
        self.config = config
        self.clock = clock
        self.loop_us = loop_us
        self.frames = frames
        self._task: asyncio.Task[None] | None = None

    async def start(self, sink: PacketSink) -> None:
        """Start the replay."""
        self._task = asyncio.get_running_loop().create_task(
            self._replay(sink), name="packet-camera"
        )

    async def stop(self) -> None:
        """Stop the replay."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def still(self) -> bytes:
        """A placeholder photo."""
        return STILL

    async def _replay(self, sink: PacketSink) -> None:
        start = self.clock.mono()
        lap = 0
        while True:
            for offset, packets in self.frames:
                due = start + lap * self.loop_us + offset
                now = self.clock.mono()
                if due > now:
                    await self.clock.sleep((due - now) / US)
                wall = self.clock.wall() - (self.clock.mono() - due)
                for kind, data, keyframe, at, duration in packets:
                    mono = due + at - offset
                    sink(MediaPacket(kind, data, mono, wall + at - offset, keyframe, duration))
            lap += 1


async def _hour(seconds: float, every: float) -> None:
    timeline_now = asyncio.get_running_loop().time
    start = timeline_now()
    while (left := start + seconds - timeline_now()) > 1e-6:
        await asyncio.sleep(min(every, left))
        sample(timeline_now() - start, "running")


async def _agent(seconds: float, every: float, work: Path, packets: Path) -> dict[str, Any]:
    from agent.capture.store import EvidenceStore  # noqa: PLC0415 (after the import sample)
    from agent.config import AgentConfig  # noqa: PLC0415
    from agent.enrolment import load_identity, provision_test_enrolment  # noqa: PLC0415
    from agent.runtime import Agent  # noqa: PLC0415
    from simulator.controls import SimControls  # noqa: PLC0415
    from simulator.history import History  # noqa: PLC0415
    from simulator.network import Link, SimNetwork  # noqa: PLC0415
    from simulator.power import SimBattery  # noqa: PLC0415
    from simulator.storage import SimulatedMedium  # noqa: PLC0415

    sample(0, "imported")
    timeline = Timeline()
    clock = SimClock(timeline)
    loop_us, frames = load_packets(packets)
    controls = SimControls(asyncio.get_running_loop(), clock)
    medium = SimulatedMedium(work, History(timeline.now))
    board = Board(
        name="bench",
        camera=PacketCamera(clock, CameraConfig(), loop_us, frames),
        buttons=controls.buttons,
        indicator=controls.indicator,
        speaker=controls.speaker,
        battery=SimBattery(clock),
        clock=clock,
        storage=medium,
        network=SimNetwork(Link(History(timeline.now))),
    )
    store = EvidenceStore(medium)
    provision_test_enrolment(store, work, DEVICE, clock.wall())
    config = AgentConfig(
        device_id=DEVICE, store=work, preroll_seconds=0, notice_seconds=0, duty_at_boot=True
    )
    agent = Agent(config, board, store, load_identity(store, work, DEVICE))
    agent.local_api = None  # driven in-process, as the simulator's devices are
    task = asyncio.get_running_loop().create_task(agent.run(), name="agent")
    await agent.wait_ready()
    sample(0, "booted")
    try:
        await _hour(seconds, every)
    finally:
        agent.stop()
        await task
        controls.close()
    return {"segments": agent.recorder.segments_written}


async def _device(seconds: float, every: float, work: Path) -> dict[str, Any]:
    from simulator.runner import DeviceSpec, SimulatedDevice  # noqa: PLC0415

    sample(0, "imported")
    device = SimulatedDevice(DeviceSpec(DEVICE, work, board={"camera_mode": "replay"}), Timeline())
    await device.boot()
    sample(0, "booted")
    try:
        await _hour(seconds, every)
    finally:
        await device.stop()
    agent = device.agent
    return {
        "segments": agent.recorder.segments_written if agent else 0,
        "failures": [repr(f) for f in device.failures],
    }


async def _hardware(seconds: float, every: float, work: Path) -> dict[str, Any]:
    from simulator.board import simulated_board  # noqa: PLC0415

    sample(0, "imported")
    board = simulated_board(DEVICE, work, SimClock(Timeline()), camera_mode="replay")
    packets = 0

    def discard(packet: MediaPacket) -> None:
        nonlocal packets
        packets += 1

    await board.camera.start(discard)
    await asyncio.sleep(0)
    sample(0, "booted")
    try:
        await _hour(seconds, every)
    finally:
        await board.camera.stop()
        board.close()
    return {"packets": packets}


def main(argv: list[str] | None = None) -> None:
    """Run one mode for ``--seconds`` simulated seconds and report its memory."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_child")
    parser.add_argument("mode", choices=["agent", "device", "hardware"])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sample", type=float, default=60.0)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--packets", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.mode == "agent":
        if args.packets is None:
            parser.error("agent needs --packets")
        outcome = run(_agent(args.seconds, args.sample, args.work, args.packets))
    elif args.mode == "device":
        outcome = run(_device(args.seconds, args.sample, args.work))
    else:
        outcome = run(_hardware(args.seconds, args.sample, args.work))
    emit({"done": True, "peak_rss_mb": round(peak_rss_mb(), 2), **outcome})


if __name__ == "__main__":
    main()
