"""``unbroken verify PATH [--trust FINGERPRINT] [--json]``.

Exit status 0 authentic, 1 not authentic, 2 unreadable input (with a message, never a
traceback).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from protocol.errors import DecodeError
from protocol.hashing import parse_fingerprint
from protocol.verify import Report, Severity, UnreadableInputError, verify_path
from protocol.verify.report import iso

EXIT_AUTHENTIC = 0
EXIT_NOT_AUTHENTIC = 1
EXIT_UNREADABLE = 2


def verify(
    path: Annotated[
        Path, typer.Argument(help="An export bundle (folder or .zip) or a device store folder.")
    ],
    trust: Annotated[
        str | None,
        typer.Option(
            "--trust", help="Pin the fleet root key: sha256:<64 hex>, obtained independently."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check an export bundle or a device store offline: authentic, or what is wrong."""
    err = Console(stderr=True)
    if trust is not None:
        try:
            parse_fingerprint(trust)
        except DecodeError as exc:
            err.print(f"unbroken verify: {exc}")
            raise typer.Exit(EXIT_UNREADABLE) from None
    try:
        report = _run(path, trust, err, show_progress=sys.stderr.isatty())
    except UnreadableInputError as exc:
        err.print(f"unbroken verify: cannot read input: {exc}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    except (OSError, MemoryError) as exc:
        err.print(f"unbroken verify: cannot read input: {exc}")
        raise typer.Exit(EXIT_UNREADABLE) from None
    code = EXIT_AUTHENTIC if report.authentic else EXIT_NOT_AUTHENTIC
    try:
        if as_json:
            sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
            sys.stdout.flush()
        else:
            render(report, _PipeConsole(highlight=False, soft_wrap=True))
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: the verdict still decides the exit status.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(code)


class _PipeConsole(Console):
    """Rich exits with status 1 on a broken pipe; we keep the verdict's status instead."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _run(path: Path, trust: str | None, err: Console, *, show_progress: bool) -> Report:
    if not show_progress:
        return verify_path(path, trust)
    columns = (
        TextColumn("[bold]verifying[/]"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[records]} records, {task.fields[mb]:.1f} MB"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("verify", total=None, records=0, mb=0.0)

        def tick(records: int, media_bytes: int) -> None:
            if records % 64 == 0:
                progress.update(task, records=records, mb=media_bytes / 1e6)

        return verify_path(path, trust, tick)


def render(report: Report, out: Console) -> None:
    """The human-readable report."""
    verdict = "[bold green]AUTHENTIC[/]" if report.authentic else "[bold red]NOT AUTHENTIC[/]"
    pin = "pinned" if report.pinned else "NOT pinned: pass --trust"
    out.print(
        f"{verdict}  {report.kind} {report.source}: {report.segments} segments, "
        f"{report.covered / 1e6:.1f} s covered; root {report.fingerprint} ({pin})"
    )
    if report.sessions:
        out.print(
            "\n[bold]Sessions[/]  (. ok  M missing  N bad signature  C corrupt  D media absent)"
        )
    for s in report.sessions:
        out.print(
            f"  {s.device}  session {s.session[:8]}  seq {s.seq_from}-{s.seq_to}  "
            f"{iso(s.start)} .. {iso(s.end)}  {s.segments} segments "
            f"{s.covered / 1e6:.1f} s  ended: {s.ended}"
        )
        out.print(f"    {s.marks.render()}", markup=False)
    out.print(
        f"\n[bold]Coverage[/]  {report.covered / 1e6:.1f} s in {report.segments_ok} of "
        f"{report.segments} segments verified; {report.records} records; "
        f"{report.media_bytes / 1e6:.1f} MB of media hashed"
    )
    if report.gaps:
        out.print("\n[bold]Gaps[/]")
        for g in report.gaps:
            out.print(
                f"  {g.device}  {iso(g.start)} .. {iso(g.end)}  {g.seconds:.1f} s  "
                f"{g.cause}  (between seq {g.seq_from} and {g.seq_to})"
            )
    if report.findings:
        out.print("\n[bold]Findings[/]")
        style = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "dim"}
        for f in report.findings:
            where = ""
            if f.seq_from is not None:
                where = f" seq {f.seq_from}" + (f"-{f.seq_to}" if f.seq_to != f.seq_from else "")
            device = f" {f.device}" if f.device else ""
            out.print(
                f"  [{style[f.severity]}]{f.severity.value.upper():7}[/] {f.code.value}"
                f"{device}{where}: {f.message}",
                markup=True,
            )
    if report.dropped_findings:
        out.print(f"  ... and {report.dropped_findings} more findings (see --json counts)")
