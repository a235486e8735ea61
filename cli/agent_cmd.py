"""``unbroken agent``: run the device program, on a Pi or on the simulator's hardware."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError

from agent.capture.store import EvidenceStore
from agent.config import AgentConfig
from agent.enrolment import enrol_with_server, load_identity, provision_test_enrolment
from agent.errors import AgentError
from agent.runtime import Agent
from hardware.base import Board

log = logging.getLogger("unbroken.agent")


def build_config(config: Path | None, **flags: Any) -> AgentConfig:
    """Settings from an optional TOML file, overridden by the flags that were given."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            values.update(tomllib.loads(config.read_text()).get("agent", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise typer.BadParameter(f"{config}: {exc}") from exc
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return AgentConfig(**values)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc


async def prepare(cfg: AgentConfig, board: Board, *, simulate: bool) -> Agent:
    """Open the store, enrol if needed, and build the agent."""
    store = EvidenceStore(board.storage)
    key_dir = cfg.store
    if not store.enrolled():
        if cfg.server_url and cfg.enrolment_token:
            async with httpx.AsyncClient(base_url=cfg.server_url, timeout=30) as client:
                await enrol_with_server(client, store, key_dir, cfg.device_id, cfg.enrolment_token)
        elif simulate and not cfg.server_url:
            provision_test_enrolment(store, key_dir, cfg.device_id, board.clock.wall())
        else:
            raise AgentError(
                f"{cfg.device_id} is not enrolled: pass --server and --token "
                "(a one-time enrolment token from the fleet manager)"
            )
    identity = load_identity(store, key_dir, cfg.device_id)
    return Agent(cfg, board, store, identity)


async def run_agent(cfg: AgentConfig, *, simulate: bool, seed: int) -> None:
    """Build the board, run until SIGINT or SIGTERM, close cleanly."""
    loop = asyncio.get_running_loop()
    if simulate:
        from simulator.board import simulated_board
        from simulator.clock import SimClock, Timeline

        clock = SimClock(Timeline(start_wall=time.time_ns() // 1000))
        board: Board = simulated_board(cfg.device_id, cfg.store, clock, seed)
    else:
        from hardware.backends import load_board

        board = load_board("pi", store=cfg.store, loop=loop)
    agent = await prepare(cfg, board, simulate=simulate)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    log.info("%s recording to %s (Ctrl-C to stop and close the session)", cfg.device_id, cfg.store)
    await agent.run()
    log.info("%s stopped cleanly at seq %d", cfg.device_id, agent.writer.next_seq - 1)


def agent(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with an [agent] table.")
    ] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Use the simulator's hardware.")
    ] = False,
    store: Annotated[Path | None, typer.Option("--store", help="Evidence store folder.")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Sync server URL.")] = None,
    mqtt: Annotated[
        str | None, typer.Option("--mqtt", help="Broker URL, mqtt://host:port.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="Device id.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="One-time enrolment token.")] = None,
    officer: Annotated[str | None, typer.Option("--officer", help="Officer wearing it.")] = None,
    speed: Annotated[float, typer.Option("--speed", help="Simulated time per real second.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated faults.")] = 0,
) -> None:
    """Record continuously, sign and chain every segment, announce and sync."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if device is None and simulate and config is None:
        device = "sim-001"
    cfg = build_config(
        config,
        device_id=device,
        store=store,
        server_url=server,
        mqtt_url=mqtt,
        enrolment_token=token,
        officer=officer,
    )
    cfg.store.mkdir(parents=True, exist_ok=True)
    try:
        if simulate:
            from simulator.clock import run

            run(run_agent(cfg, simulate=True, seed=seed), speed=speed)
        else:
            asyncio.run(run_agent(cfg, simulate=False, seed=seed))
    except AgentError as exc:
        typer.echo(f"unbroken agent: {exc}", err=True)
        raise typer.Exit(2) from None
