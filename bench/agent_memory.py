"""The agent's resident memory over a simulated hour, each variant in a child process of
its own (:mod:`bench.memory_child`), so that the figure is not the benchmark's.

The figure is the peak resident memory of the ``agent`` child: the real agent on the
simulator's parts, its camera replaying access units encoded here beforehand (on a Pi the
encoder is hardware and lives outside the agent's process). The baseline, measured in the
same child, is its resident memory once booted: ``ratio`` is the growth over the hour (1.0
is flat). The issue's limit is :data:`LIMIT_MB` on the figure.

Beside it, for scale: the ``device`` child (:class:`simulator.runner.SimulatedDevice`, the
agent with the simulated camera encoding in its process) and the ``hardware`` child (the
simulated board alone).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

import bench
from agent.capture.segmenter import RawSegment
from bench import BenchError
from bench.report import Measurement

LIMIT_MB = 100.0
MODES = ("agent", "device", "hardware")
#: The child imports bench the way this process did, installed or from a checkout.
ROOT = str(Path(bench.__file__).resolve().parent.parent)

#: Called with (mode, simulated seconds done) as a child reports.
Sampled = Callable[[str, float], None]


def write_packets(segments: list[RawSegment], path: Path) -> None:
    """Keep the packets of consecutive closed segments as one replay loop for the child."""
    base = segments[0].m0
    items = [
        [p.kind.value, p.data, p.keyframe, max(0, p.mono - base), p.duration]
        for segment in segments
        for p in segment.packets
    ]
    path.write_bytes(cbor2.dumps([segments[-1].m1 - base, items]))


async def _child(
    mode: str, seconds: float, every: float, work: Path, packets: Path, sampled: Sampled | None
) -> dict[str, Any]:
    folder = work / mode
    folder.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "bench.memory_child", mode, "--seconds", str(seconds)]
    args += ["--sample", str(every), "--work", str(folder / "store")]
    if mode == "agent":
        args += ["--packets", str(packets)]
    paths = [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    log = folder / "stderr.log"
    samples: list[dict[str, Any]] = []
    done: dict[str, Any] = {}
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
        assert proc.stdout is not None
        async for line in proc.stdout:
            message = json.loads(line)
            if message.get("done"):
                done = message
            else:
                samples.append(message)
                if sampled is not None:
                    sampled(mode, float(message["t"]))
        code = await proc.wait()
    if code != 0 or not done:
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"the {mode} child failed (exit {code}):\n{tail}")
    return {**done, "samples": samples}


async def _children(
    seconds: float, every: float, work: Path, packets: Path, sampled: Sampled | None
) -> dict[str, dict[str, Any]]:
    # Memory does not depend on CPU share: the three run side by side to save time.
    results = await asyncio.gather(
        *(_child(mode, seconds, every, work, packets, sampled) for mode in MODES)
    )
    return dict(zip(MODES, results, strict=True))


def _rss(samples: list[dict[str, Any]], phase: str) -> float:
    return next(float(s["rss_mb"]) for s in samples if s["phase"] == phase)


def measure_memory(
    work: Path,
    segments: list[RawSegment],
    *,
    seconds: float = 3600.0,
    every: float = 60.0,
    sampled: Sampled | None = None,
) -> Measurement:
    """Peak resident memory of the agent over ``seconds`` simulated seconds."""
    if not segments:
        raise BenchError("the replay loop needs at least one closed segment")
    work.mkdir(parents=True, exist_ok=True)
    packets = work / "packets.cbor"
    write_packets(segments, packets)
    out = asyncio.run(_children(seconds, every, work, packets, sampled))
    agent, device, hardware = out["agent"], out["device"], out["hardware"]
    running = [float(s["rss_mb"]) for s in agent["samples"] if s["phase"] == "running"]
    details: dict[str, Any] = {
        "simulated_seconds": seconds,
        "segments": agent["segments"],
        "imported_mb": _rss(agent["samples"], "imported"),
        "end_mb": running[-1] if running else None,
        "growth_after_first_sample_mb": round(running[-1] - running[0], 2) if running else None,
        "rss_mb_samples": running[max(1, len(running) // 12) - 1 :: max(1, len(running) // 12)],
        "device_peak_mb": device["peak_rss_mb"],
        "device_segments": device["segments"],
        "device_failures": device["failures"],
        "hardware_peak_mb": hardware["peak_rss_mb"],
    }
    return Measurement(
        "memory",
        "MB",
        float(agent["peak_rss_mb"]),
        _rss(agent["samples"], "booted"),
        limit=LIMIT_MB,
        details=details,
    )
