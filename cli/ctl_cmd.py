"""``unbroken ctl ...``: talk to a running agent through its local API.

Deletion is offered only to be refused: the request is recorded in the signed chain.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.localapi import call, socket_path

ctl = typer.Typer(
    help="Control a running agent (incidents, bookmarks, photos, status).", no_args_is_help=True
)
Store = Annotated[Path, typer.Option("--store", help="The agent's store folder.")]


def _send(store: Path, request: dict[str, Any]) -> dict[str, Any]:
    if not socket_path(store).exists():
        typer.echo(f"no agent is running on {store} ({socket_path(store)} is absent)", err=True)
        raise typer.Exit(2)
    try:
        answer = asyncio.run(call(store, request))
    except (OSError, TimeoutError, ValueError) as exc:
        typer.echo(f"the agent on {store} did not answer: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(answer, indent=2))
    if not answer.get("ok"):
        raise typer.Exit(1)
    return answer


@ctl.command()
def status(store: Store) -> None:
    """Duty, incident, next seq and health."""
    _send(store, {"command": "status"})


@ctl.command("incident-open")
def incident_open(
    store: Store, case: Annotated[str | None, typer.Option(help="Case number.")] = None
) -> None:
    """Open an incident (gives notice to the people present)."""
    _send(store, {"command": "incident_open", "case": case})


@ctl.command("incident-close")
def incident_close(store: Store) -> None:
    """Close the open incident."""
    _send(store, {"command": "incident_close"})


@ctl.command()
def bookmark(store: Store, label: Annotated[str, typer.Argument()] = "bookmark") -> None:
    """Add a bookmark (e.g. "door on arrival")."""
    _send(store, {"command": "bookmark", "label": label})


@ctl.command()
def photo(store: Store, label: Annotated[str, typer.Argument()] = "") -> None:
    """Take a still photo as a chained record."""
    _send(store, {"command": "photo", "label": label})


@ctl.command("self-check")
def self_check(store: Store) -> None:
    """Run the self-check now."""
    _send(store, {"command": "self_check"})


@ctl.command()
def delete(
    store: Store,
    target: Annotated[str, typer.Argument(help="What to delete.")],
    requester: Annotated[str, typer.Option(help="Who asks.")] = "",
) -> None:
    """Ask to delete evidence. Always refused (exit 1); the request is recorded in the chain."""
    _send(store, {"command": "delete", "target": target, "requester": requester, "via": "cli"})
