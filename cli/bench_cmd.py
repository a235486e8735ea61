"""``unbroken bench agent [--json]``: measured figures, each against a baseline measured in
the same run (:mod:`bench`). ``--json`` prints one JSON object: the figure, the baseline and
their ``ratio`` at the top, every measurement in full below."""

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
from bench.report import progress
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
