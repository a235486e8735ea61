"""``unbroken bench {agent,server,fleet,verify} [--json]``: measured figures, each against a
baseline measured in the same run (:mod:`bench`). ``--json`` prints one JSON object: the
figure, the baseline and their ``ratio`` at the top, every measurement in full below."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bench import BenchError
from bench.agent import TARGET_RATIO, run_agent_bench
from bench.agent_memory import LIMIT_MB, MODES
from bench.fleet import run_fleet_bench
from bench.report import progress
from bench.server import run_server_bench
from bench.verify import run_verify_bench
from protocol.record import Suite

bench = typer.Typer(
    help="Benchmarks: a figure and its baseline, measured in the same run.",
    no_args_is_help=True,
)

SUITES = {"chacha": Suite.CHACHA, "aesgcm": Suite.AESGCM}


@bench.command("agent")
def agent(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    segments: Annotated[
        int, typer.Option("--segments", min=1, help="Closed segments per round and side.")
    ] = 150,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timed rounds.")] = 7,
    seconds: Annotated[
        float, typer.Option("--seconds", min=1, help="Simulated seconds of the memory run.")
    ] = 3600.0,
    suite: Annotated[
        str,
        typer.Option("--suite", help="Media AEAD: chacha (the agent's) or aesgcm (CPUs with AES)."),
    ] = "chacha",
) -> None:
    """The agent: segments/s from closed segment to durable signed record against a
    straight-line baseline (target ratio >= 0.8), and memory over a simulated hour
    (limit 100 MB)."""
    if suite not in SUITES:
        raise typer.BadParameter(f"--suite must be one of {', '.join(SUITES)}")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="unbroken-bench-") as tmp, progress(err) as bar:
        speed = bar.add_task("throughput rounds", total=rounds)
        memory = {m: bar.add_task(f"memory: {m}", total=seconds, start=False) for m in MODES}

        def progressed(done: int, total: int) -> None:
            bar.update(speed, completed=done, total=total)

        def sampled(mode: str, t: float) -> None:
            bar.start_task(memory[mode])
            bar.update(memory[mode], completed=t)

        try:
            result = run_agent_bench(
                Path(tmp),
                segments=segments,
                rounds=rounds,
                suite=SUITES[suite],
                memory_seconds=seconds,
                progressed=progressed,
                sampled=sampled,
            )
        except BenchError as exc:
            err.print(f"unbroken bench agent: {exc}")
            raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _render(result)


def _render(result: dict[str, Any]) -> None:
    speed, memory = result["throughput"], result["memory"]
    mark = {True: "met", False: "NOT met", None: ""}
    typer.echo(
        f"throughput ({speed['suite']}, {speed['segments_per_round']} segments x "
        f"{speed['rounds']} rounds, {speed['segment_bytes']} bytes each)"
    )
    typer.echo(
        f"  agent pipeline {speed['figure']:.1f} segments/s, straight-line baseline "
        f"{speed['baseline']:.1f} segments/s: ratio {speed['ratio']:.3f} "
        f"(target >= {TARGET_RATIO}: {mark[speed['met']]})"
    )
    typer.echo(
        f"  per segment: {speed['pipeline_ms_per_segment']} ms vs "
        f"{speed['baseline_ms_per_segment']} ms, of which muxing {speed['mux_ms_per_segment']} "
        f"ms; ratio without muxing {speed['ratio_without_mux']}, on CPU time "
        f"{speed['cpu_ratio']}"
    )
    typer.echo(f"memory over {memory['simulated_seconds']:.0f} simulated seconds")
    typer.echo(
        f"  agent process peak {memory['figure']:.1f} MB (limit {LIMIT_MB:.0f} MB: "
        f"{mark[memory['met']]}), {memory['baseline']:.1f} MB once booted, "
        f"growth x{memory['ratio']:.3f}; {memory['segments']} segments"
    )
    typer.echo(
        f"  whole simulated device (camera encoding in process) {memory['device_peak_mb']:.1f}"
        f" MB; simulated hardware alone {memory['hardware_peak_mb']:.1f} MB"
    )
    typer.echo(
        f"agent suite {result['agent_suite']}; CPU AES instructions: {result['cpu_has_aes']}; "
        f"{result['seconds']:.0f} s"
    )


def _run_with_progress(name: str, call: Any) -> dict[str, Any]:
    """Run ``call(stepped)`` with a progress bar per phase on stderr; BenchError exits 1."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    err = Console(stderr=True)
    with progress(err) as bar:
        tasks: dict[str, Any] = {}

        def stepped(what: str, done: float, total: float) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        try:
            result: dict[str, Any] = call(stepped)
        except BenchError as exc:
            err.print(f"unbroken bench {name}: {exc}")
            raise typer.Exit(1) from None
    return result


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        for line in lines:
            typer.echo(line)


@bench.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    segments: Annotated[
        int, typer.Option("--segments", min=1, help="Segments of the timed bundle.")
    ] = 1000,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timed rounds.")] = 7,
    media_kb: Annotated[
        int, typer.Option("--media-kb", min=1, max=100_000, help="Media per segment (kB).")
    ] = 100,
    memory_segments: Annotated[
        int,
        typer.Option(
            "--memory-segments", min=1, help="Segments of the small memory bundle (large: 10x)."
        ),
    ] = 1000,
) -> None:
    """The offline verifier: segments/s (and MB/s) on a generated bundle against a
    straight-line baseline, and peak memory on a bundle and one ten times larger."""
    with tempfile.TemporaryDirectory(prefix="unbroken-bench-") as tmp:
        result = _run_with_progress(
            "verify",
            lambda stepped: run_verify_bench(
                Path(tmp),
                segments=segments,
                rounds=rounds,
                media_kb=media_kb,
                memory_segments=memory_segments,
                stepped=stepped,
            ),
        )
    speed, memory = result["throughput"], result["memory"]
    _emit(
        result,
        as_json,
        [
            f"verify a bundle of {speed['segments']} segments ({speed['bundle_mb']} MB), "
            f"{speed['rounds']} rounds",
            f"  verifier {speed['figure']:.0f} segments/s ({speed['verifier_mb_per_s']} MB/s), "
            f"straight-line baseline {speed['baseline']:.0f} segments/s "
            f"({speed['baseline_mb_per_s']} MB/s): ratio {speed['ratio']:.3f} "
            f"(on CPU time {speed['cpu_ratio']})",
            f"memory: peak {memory['baseline']:.1f} MB on {memory['small_segments']} segments, "
            f"{memory['figure']:.1f} MB on {memory['large_segments']} "
            f"({memory['large_bundle_mb']} MB): ratio {memory['ratio']:.3f} (1.0 is flat)",
            f"{result['seconds']:.0f} s",
        ],
    )


@bench.command("server")
def server(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[int, typer.Option("--devices", min=1, max=256)] = 4,
    segments: Annotated[
        int, typer.Option("--segments", min=1, help="Segments each device records.")
    ] = 600,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=256, help="Records per request.")
    ] = 64,
    media_kb: Annotated[
        int, typer.Option("--media-kb", min=1, max=100_000, help="Media per segment (kB).")
    ] = 100,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="postgres://... to run on PostgreSQL (a fresh database is made there and "
            "dropped after); default SQLite in a temporary folder.",
        ),
    ] = None,
) -> None:
    """The sync server in-process: records/s and media uploads/s through its ASGI app
    against a straight-line baseline of the same per-record work."""
    if database_url is not None and not database_url.startswith(("postgres://", "postgresql://")):
        raise typer.BadParameter("--database-url must be a postgres:// URL")
    with tempfile.TemporaryDirectory(prefix="unbroken-bench-") as tmp:
        try:
            result = _run_with_progress(
                "server",
                lambda stepped: run_server_bench(
                    Path(tmp),
                    devices=devices,
                    segments=segments,
                    batch=batch,
                    media_kb=media_kb,
                    database_url=database_url,
                    stepped=stepped,
                ),
            )
        except OSError as exc:  # the database is not there
            Console(stderr=True).print(f"unbroken bench server: {exc}")
            raise typer.Exit(1) from None
    rec, med = result["records"], result["media"]
    p = result["parameters"]
    _emit(
        result,
        as_json,
        [
            f"server on {p['database']}: {p['devices']} devices x {p['segments']} segments, "
            f"batches of {p['batch']}, media {p['media_kb']} kB",
            f"  records: server {rec['figure']:.0f}/s, baseline {rec['baseline']:.0f}/s: "
            f"ratio {rec['ratio']:.3f} (on CPU time {rec['cpu_ratio']})",
            f"  media uploads: server {med['figure']:.1f}/s, baseline {med['baseline']:.1f}/s: "
            f"ratio {med['ratio']:.3f} (on CPU time {med['cpu_ratio']})",
            f"{result['seconds']:.0f} s",
        ],
    )


@bench.command("fleet")
def fleet(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[int, typer.Option("--devices", min=1, max=500)] = 8,
    seconds: Annotated[
        float, typer.Option("--seconds", min=2, help="Simulated seconds each device records.")
    ] = 60.0,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds of each side.")] = 3,
    sync_seconds: Annotated[
        float, typer.Option("--sync-seconds", min=0.5, help="Agent sync interval.")
    ] = 3.0,
) -> None:
    """Simulated devices recording and syncing to an in-process server, against the same
    devices recording alone: simulated device-seconds per real second."""
    with tempfile.TemporaryDirectory(prefix="unbroken-bench-") as tmp:
        result = _run_with_progress(
            "fleet",
            lambda stepped: run_fleet_bench(
                Path(tmp),
                devices=devices,
                seconds=seconds,
                rounds=rounds,
                sync_seconds=sync_seconds,
                stepped=stepped,
            ),
        )
    f = result["fleet"]
    _emit(
        result,
        as_json,
        [
            f"fleet: {devices} devices x {seconds:.0f} simulated s, {rounds} round(s)",
            f"  with sync {f['figure']:.1f} device-seconds/s (until every record and media "
            f"is receipted), alone {f['baseline']:.1f}: ratio {f['ratio']:.3f}",
            f"  {f['segments_synced']} segments, {f['settled_devices']} of {devices} devices "
            f"settled; {result['seconds']:.0f} s",
        ],
    )
